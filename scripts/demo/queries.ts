/** The two example queries the demo prints and runs: Elasticsearch on labels, DuckDB SQL over the S3 objects. */
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Client as ElasticsearchClient } from '@elastic/elasticsearch';
import { PARTITION_COLUMNS } from '../../aggregator/s3-layout.js';
import { Field, KubernetesField, type LogRecord } from '../../shared/record.js';
import type { S3Rows } from './landed.js';
import { out } from './output.js';
import type { RunNames } from './run-names.js';
import { QUERY_APP } from './workload.js';

export async function elasticsearchExample(es: ElasticsearchClient, names: RunNames, expected: number): Promise<void> {
  const labelField = `${Field.KUBERNETES}.${KubernetesField.LABELS}.app`;
  const request = {
    index: `${names.indexPrefix}-*`,
    query: { bool: { filter: [{ term: { [labelField]: QUERY_APP } }, { term: { [Field.STREAM]: 'stderr' } }] } },
    sort: [{ [Field.TIMESTAMP]: 'asc' as const }],
    size: 3,
    track_total_hits: true,
    _source: [Field.TIMESTAMP, `${Field.KUBERNETES}.${KubernetesField.POD}`, Field.MESSAGE],
  };
  out.line(`Elasticsearch: stderr lines of the pods labelled app=${QUERY_APP} (a term query on the flattened labels field)`);
  out.line(`  GET ${request.index}/_search`);
  const { index: _index, ...body } = request;
  out.line('  {');
  const entries = Object.entries(body);
  entries.forEach(([key, value], i) => out.line(`    ${JSON.stringify(key)}: ${JSON.stringify(value)}${i < entries.length - 1 ? ',' : ''}`));
  out.line('  }');
  const response = await es.search<LogRecord>(request);
  const total = typeof response.hits.total === 'number' ? response.hits.total : (response.hits.total?.value ?? 0);
  out.line(`  → ${total} hits (${expected} stderr lines were written for app=${QUERY_APP}); the first ${response.hits.hits.length}:`);
  for (const hit of response.hits.hits) {
    const doc = hit._source;
    if (doc === undefined) continue;
    out.line(`    ${doc[Field.TIMESTAMP]}  ${doc[Field.KUBERNETES][KubernetesField.POD]}  ${doc[Field.MESSAGE]}`);
  }
  out.line();
}

function cellText(value: unknown): string {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' ? String(value) : JSON.stringify(value);
}

export async function sqlExample(s3Rows: S3Rows, names: RunNames, bucket: string): Promise<number> {
  const dir = join(names.dir, 's3');
  await s3Rows.download(dir);
  const [, namespace, dt, hour] = PARTITION_COLUMNS;
  const glob = join(dir, names.s3Prefix, `${PARTITION_COLUMNS.map((c) => `${c}=*`).join('/')}/*.ndjson.gz`);
  const sql = [
    `SELECT ${namespace}, ${dt}, ${hour}, count(*)::INTEGER AS lines, count(*) FILTER (${Field.STREAM} = 'stderr')::INTEGER AS stderr`,
    `FROM read_json('${glob.replace(/'/g, "''")}',`,
    `               format = 'newline_delimited', compression = 'gzip', hive_partitioning = true, hive_types_autocast = false)`,
    'GROUP BY ALL ORDER BY ALL',
  ];
  out.line(`SQL (DuckDB) over the S3 objects (s3://${bucket}/${names.s3Prefix}/…) downloaded to ${dir} with their Hive layout:`);
  for (const line of sql) out.line(`  ${line}`);
  // DuckDB's JSON reader is built into the package; nothing is fetched.
  const instance = await DuckDBInstance.create(':memory:', { autoinstall_known_extensions: 'false', autoload_known_extensions: 'true' });
  const db = await instance.connect();
  try {
    const rows = (await db.runAndReadAll(sql.join('\n'))).getRowObjectsJS();
    const header = [namespace, dt, hour, 'lines', 'stderr'];
    const table = [header, ...rows.map((r) => header.map((h) => cellText(r[h])))];
    const widths = header.map((_h, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
    out.line(`  → ${rows.length} rows:`);
    for (const row of table) out.line(`    ${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ')}`);
    out.line();
    return rows.reduce((n, r) => n + Number(r.lines), 0);
  } finally {
    db.closeSync();
    instance.closeSync();
  }
}

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { athenaTableDdl, hiveType, RECORD_COLUMNS } from '../../../aggregator/athena.js';
import { locationTemplate, PARTITION_COLUMNS } from '../../../aggregator/s3-layout.js';
import { REPO_ROOT } from '../../../scripts/stack/context.js';

/** The table docs/athena.md shows; the doc must hold exactly this function's output. */
const DOC_TABLE = { database: 'logship', table: 'logs', bucket: 'logship', prefix: 'logs' } as const;

const tableProperty = (ddl: string, key: string): string | undefined => new RegExp(`'${key.replace(/\./g, '\\.')}' = '([^']*)'`).exec(ddl)?.[1];

describe('athenaTableDdl', () => {
  const ddl = athenaTableDdl(DOC_TABLE);

  it('declares the record columns, with kubernetes and log as structs', () => {
    assert.match(ddl, /^CREATE EXTERNAL TABLE IF NOT EXISTS `logship`\.`logs` \(/);
    for (const line of [
      '  `timestamp` string,',
      '  `message` string,',
      '  `stream` string,',
      '  `event_id` string,',
      '  `kubernetes` struct<cluster:string,node:string,namespace:string,pod:string,pod_uid:string,container:string,container_id:string,image:string,labels:map<string,string>,annotations:map<string,string>,namespace_labels:map<string,string>>,',
      '  `log` struct<file:string,offset:bigint,flags:array<string>>',
    ]) {
      assert.ok(ddl.includes(`${line}\n`), `missing column line: ${line}`);
    }
  });

  it('partitions by cluster, namespace, dt, hour in the layout order', () => {
    assert.ok(ddl.includes('PARTITIONED BY (\n  `cluster` string,\n  `namespace` string,\n  `dt` string,\n  `hour` string\n)'));
    assert.deepEqual([...PARTITION_COLUMNS], ['cluster', 'namespace', 'dt', 'hour']);
  });

  it('reads with the OpenX SerDe, mapping @timestamp to the timestamp column and keeping key case', () => {
    assert.ok(ddl.includes("ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'"));
    assert.equal(tableProperty(ddl, 'mapping.timestamp'), '@timestamp');
    assert.equal(tableProperty(ddl, 'case.insensitive'), 'false');
    assert.ok(ddl.includes("LOCATION 's3://logship/logs/'"));
  });

  it('projects partitions: injected cluster and namespace, daily dt, two-digit hours', () => {
    const expected: Record<string, string> = {
      'projection.enabled': 'true',
      'projection.cluster.type': 'injected',
      'projection.namespace.type': 'injected',
      'projection.dt.type': 'date',
      'projection.dt.format': 'yyyy-MM-dd',
      'projection.dt.range': 'NOW-1YEARS,NOW',
      'projection.dt.interval': '1',
      'projection.dt.interval.unit': 'DAYS',
      'projection.hour.type': 'integer',
      'projection.hour.range': '0,23',
      'projection.hour.digits': '2',
    };
    for (const [key, value] of Object.entries(expected)) assert.equal(tableProperty(ddl, key), value, key);
    assert.match(ddl, /\);$/);
  });

  it('uses the location template of the sink layout itself', () => {
    assert.equal(tableProperty(ddl, 'storage.location.template'), locationTemplate('logship', 'logs'));
    for (const column of PARTITION_COLUMNS) assert.ok(ddl.includes(`${column}=\${${column}}`), column);
  });

  it('takes a start date and an empty prefix, and refuses names that would break the statement', () => {
    const other = athenaTableDdl({ table: 't', bucket: 'my-bucket', prefix: '', projectionStartDate: '2026-01-01' });
    assert.match(other, /^CREATE EXTERNAL TABLE IF NOT EXISTS `t` \(/);
    assert.equal(tableProperty(other, 'projection.dt.range'), '2026-01-01,NOW');
    assert.equal(tableProperty(other, 'storage.location.template'), 's3://my-bucket/cluster=${cluster}/namespace=${namespace}/dt=${dt}/hour=${hour}');
    assert.throws(() => athenaTableDdl({ table: "x'; DROP", bucket: 'b-b-b', prefix: 'logs' }), /table name/);
    assert.throws(() => athenaTableDdl({ table: 't', bucket: 'b-b-b', prefix: "lo'gs" }), /prefix/);
    assert.throws(() => athenaTableDdl({ table: 't', bucket: 'b-b-b', prefix: '/logs/' }), /prefix/);
    assert.throws(() => athenaTableDdl({ table: 't', bucket: 'B', prefix: 'logs' }), /bucket/);
    assert.throws(() => athenaTableDdl({ table: 't', bucket: 'b-b-b', prefix: 'logs', projectionStartDate: 'yesterday' }), /start date/);
  });

  it('renders nested types in Hive syntax', () => {
    assert.equal(hiveType({ struct: [{ name: 'a', type: { map: { array: 'bigint' } } }] }), 'struct<a:map<string,array<bigint>>>');
    assert.equal(RECORD_COLUMNS.filter((c) => c.jsonKey !== undefined).length, 1, 'only @timestamp needs a mapping');
  });
});

describe('docs/athena.md', () => {
  it('shows exactly the DDL the code generates', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs', 'athena.md'), 'utf8');
    const ddl = athenaTableDdl(DOC_TABLE);
    assert.ok(doc.includes(`\`\`\`sql\n${ddl}\n\`\`\``), 'docs/athena.md is out of date: regenerate it with `npx tsx aggregator/main.ts athena-ddl --bucket logship --prefix logs --table logs --database logship`');
  });
});

/**
 * The S3 layout proven with a real SQL engine: records go through the S3 sink into the real S3
 * server, the objects are downloaded keeping their keys, and DuckDB reads them as Athena would —
 * gzip NDJSON with Hive partitions from the path, and the Athena DDL's columns as the read schema.
 * (DuckDB cannot fetch extensions here; its JSON reader is built into the package.)
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import {
  DuckDBInstance,
  DuckDBListType,
  DuckDBMapType,
  DuckDBStructType,
  DuckDBTypeId,
  type DuckDBConnection,
  type DuckDBType,
} from '@duckdb/node-api';
import { RECORD_COLUMNS, type ColumnDef, type ColumnType } from '../../aggregator/athena.js';
import { PARTITION_COLUMNS } from '../../aggregator/s3-layout.js';
import { lineBytes, lineOf, sinkRecord, type Batch, type SinkRecord } from '../../aggregator/sink.js';
import { createS3NdjsonSink } from '../../aggregator/sinks/s3-ndjson.js';
import { s3SinkOptionsSchema } from '../../aggregator/sinks/s3-options.js';
import { Field, KubernetesField, LogField, RecordFlag, type LogRecord } from '../../shared/record.js';
import { createS3Client } from '../../shared/s3.js';
import { s3Config, testLogger, uniqueName } from '../helpers/stack.js';

const CLUSTER = 'sql-it';
const TOPIC = 'logs.sql-it';
const PARTITION = 0;
const NAMESPACES = ['alpha', 'beta', 'gamma'] as const;
/** Three hours across a UTC midnight, so `dt` changes too. */
const HOURS = [Date.parse('2026-11-22T22:00:00Z'), Date.parse('2026-11-22T23:00:00Z'), Date.parse('2026-11-23T00:00:00Z')] as const;
const NAME_LABEL = 'app.kubernetes.io/name';

const { bucket, ...connection } = s3Config();
const s3 = createS3Client(connection);

interface Written {
  namespace: string;
  timestamp: string;
  pod: string;
  stream: 'stdout' | 'stderr';
  flagged: boolean;
  record: SinkRecord;
}

/** Records of 3 namespaces x 3 hours, `4 + 3i + 2j` in cell (i, j), interleaved over offsets. */
function makeRecords(): Written[] {
  const cells: { namespace: string; hourMs: number; k: number }[] = [];
  NAMESPACES.forEach((namespace, i) => {
    HOURS.forEach((hourMs, j) => {
      for (let k = 0; k < 4 + 3 * i + 2 * j; k++) cells.push({ namespace, hourMs, k });
    });
  });
  // A fixed interleaving: namespaces and hours mixed within every batch.
  cells.sort((a, b) => a.k - b.k || a.hourMs - b.hourMs || a.namespace.localeCompare(b.namespace));
  return cells.map(({ namespace, hourMs, k }, offset) => {
    const timestamp = new Date(hourMs + k * 4 * 60_000 + 123).toISOString().replace('Z', '456789Z');
    const pod = `${namespace}-pod-${k % 2}`;
    const stream = k % 3 === 0 ? 'stderr' : 'stdout';
    const flagged = k % 4 === 1;
    const eventId = `${TOPIC}:${offset}`;
    const record: LogRecord = {
      [Field.TIMESTAMP]: timestamp,
      [Field.MESSAGE]: stream === 'stderr' ? `ERROR request ${offset} failed` : `GET /health 200 (${offset})`,
      [Field.STREAM]: stream,
      [Field.EVENT_ID]: eventId,
      [Field.KUBERNETES]: {
        [KubernetesField.CLUSTER]: CLUSTER,
        [KubernetesField.NODE]: 'node-1',
        [KubernetesField.NAMESPACE]: namespace,
        [KubernetesField.POD]: pod,
        [KubernetesField.POD_UID]: `uid-${pod}`,
        [KubernetesField.CONTAINER]: 'app',
        [KubernetesField.CONTAINER_ID]: `containerd://${pod}`,
        [KubernetesField.IMAGE]: `registry.example/${namespace}:1.0`,
        [KubernetesField.LABELS]: { app: namespace, [NAME_LABEL]: namespace },
        [KubernetesField.ANNOTATIONS]: {},
        [KubernetesField.NAMESPACE_LABELS]: { team: `team-${namespace}` },
      },
      [Field.LOG]: {
        [LogField.FILE]: `/var/log/pods/${namespace}_${pod}_uid/app/0.log`,
        [LogField.OFFSET]: offset * 100,
        ...(flagged ? { [LogField.FLAGS]: [RecordFlag.TRUNCATED] } : {}),
      },
    };
    const fields = { timeMs: Date.parse(timestamp), eventId, cluster: CLUSTER, namespace, pod, container: 'app' };
    return { namespace, timestamp, pod, stream, flagged, record: sinkRecord({ topic: TOPIC, partition: PARTITION, offset, index: 0 }, Buffer.from(JSON.stringify(record)), fields) };
  });
}

function batch(firstOffset: number, endOffset: number, written: readonly Written[]): Batch {
  const records = written.map((w) => w.record).filter((r) => r.offset >= firstOffset && r.offset < endOffset);
  return { topic: TOPIC, partition: PARTITION, firstOffset, endOffset, records, bytes: records.reduce((n, r) => n + lineBytes(r), 0) };
}

async function listKeys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return keys;
}

/** The Athena column type as DuckDB's read_json `columns` type. */
function duckType(type: ColumnType): string {
  if (type === 'string') return 'VARCHAR';
  if (type === 'bigint') return 'BIGINT';
  if ('array' in type) return `${duckType(type.array)}[]`;
  if ('map' in type) return `MAP(VARCHAR, ${duckType(type.map)})`;
  return `STRUCT(${type.struct.map((f) => `"${f.name}" ${duckType(f.type)}`).join(', ')})`;
}

const sqlString = (text: string): string => `'${text.replace(/'/g, "''")}'`;

/** Where an inferred DuckDB type disagrees with the DDL's type; empty when DuckDB reads the JSON as declared. */
function schemaProblems(declared: ColumnType, inferred: DuckDBType, path: string): string[] {
  if (declared === 'string') {
    // A JSON string; DuckDB may recognise RFC 3339 text as a TIMESTAMP, which still is text in the file.
    const ok = [DuckDBTypeId.VARCHAR, DuckDBTypeId.TIMESTAMP, DuckDBTypeId.TIMESTAMP_NS, DuckDBTypeId.TIMESTAMP_TZ].includes(inferred.typeId);
    return ok ? [] : [`${path}: declared string, inferred ${inferred.toString()}`];
  }
  if (declared === 'bigint') {
    const ok = [DuckDBTypeId.BIGINT, DuckDBTypeId.UBIGINT, DuckDBTypeId.INTEGER, DuckDBTypeId.UINTEGER].includes(inferred.typeId);
    return ok ? [] : [`${path}: declared bigint, inferred ${inferred.toString()}`];
  }
  if ('array' in declared) {
    return inferred instanceof DuckDBListType ? schemaProblems(declared.array, inferred.valueType, `${path}[]`) : [`${path}: declared array, inferred ${inferred.toString()}`];
  }
  if ('map' in declared) {
    // DuckDB infers a JSON object with a few keys as a STRUCT, an empty one as MAP(VARCHAR, JSON).
    if (inferred instanceof DuckDBMapType) return schemaProblems(declared.map, inferred.valueType, `${path}{}`);
    if (inferred instanceof DuckDBStructType) return inferred.entryTypes.flatMap((t, i) => schemaProblems(declared.map, t, `${path}.${inferred.entryNames[i] ?? '?'}`));
    return [`${path}: declared map, inferred ${inferred.toString()}`];
  }
  if (!(inferred instanceof DuckDBStructType)) return [`${path}: declared struct, inferred ${inferred.toString()}`];
  return structProblems(declared.struct, inferred.entryNames, inferred.entryTypes, path);
}

function structProblems(declared: readonly ColumnDef[], names: readonly string[], types: readonly DuckDBType[], path: string): string[] {
  const problems: string[] = [];
  const at = (name: string): string => (path === '' ? name : `${path}.${name}`);
  const inferred = new Map(names.map((name, i) => [name, types[i]]));
  for (const field of declared) {
    const key = field.jsonKey ?? field.name;
    const type = inferred.get(key);
    if (type === undefined) problems.push(`${at(key)}: declared, not in the data`);
    else problems.push(...schemaProblems(field.type, type, at(key)));
    inferred.delete(key);
  }
  for (const name of inferred.keys()) problems.push(`${at(name)}: in the data, not declared`);
  return problems;
}

describe('S3 layout queried with SQL (DuckDB over objects the sink wrote to MinIO)', () => {
  const prefix = uniqueName('it-s3sql');
  const written = makeRecords();
  let dir = '';
  let instance: DuckDBInstance | undefined;
  let db: DuckDBConnection;
  /** read_json over the downloaded tree, with Hive partitions kept as text (as the DDL declares them). */
  let source = '';
  /** The same files read with the Athena DDL's columns as the schema, `@timestamp` mapped to `timestamp`. */
  let table = '';

  const rows = async (sql: string): Promise<Record<string, unknown>[]> => (await db.runAndReadAll(sql)).getRowObjectsJS();

  before(async () => {
    const sink = createS3NdjsonSink('s3-sql', s3SinkOptionsSchema.parse({ bucket, prefix, connection }), { logger: testLogger() });
    await sink.start(AbortSignal.timeout(10_000));
    const total = written.length;
    // Three batches, then a replay of the middle (a restart from an older commit): counts must not change.
    for (const [from, to] of [[0, 40], [40, 90], [90, total], [25, total]] as const) {
      const result = await sink.send(batch(from, to, written), AbortSignal.timeout(30_000));
      assert.equal(result.status, 'delivered');
    }
    await sink.close();

    dir = await mkdtemp(join(tmpdir(), 'logship-s3sql-'));
    for (const key of await listKeys(prefix)) {
      const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const bytes = await object.Body?.transformToByteArray();
      assert.ok(bytes);
      const file = join(dir, key);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, bytes);
    }

    instance = await DuckDBInstance.create(':memory:', { autoinstall_known_extensions: 'false', autoload_known_extensions: 'true' });
    db = await instance.connect();
    const glob = sqlString(join(dir, prefix, `${PARTITION_COLUMNS.map((c) => `${c}=*`).join('/')}/*.ndjson.gz`));
    const common = "format = 'newline_delimited', compression = 'gzip', hive_partitioning = true";
    source = `read_json(${glob}, ${common}, hive_types_autocast = false)`;
    const columns = RECORD_COLUMNS.map((c) => `${sqlString(c.jsonKey ?? c.name)}: ${sqlString(duckType(c.type))}`).join(', ');
    const hiveTypes = PARTITION_COLUMNS.map((c) => `${sqlString(c)}: 'VARCHAR'`).join(', ');
    const selectList = [...RECORD_COLUMNS.map((c) => (c.jsonKey === undefined ? `"${c.name}"` : `"${c.jsonKey}" AS "${c.name}"`)), ...PARTITION_COLUMNS.map((c) => `"${c}"`)];
    table = `(SELECT ${selectList.join(', ')} FROM read_json(${glob}, ${common}, hive_types = {${hiveTypes}}, columns = {${columns}}))`;
  });

  after(async () => {
    db.closeSync();
    instance?.closeSync();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
    const keys = await listKeys(prefix);
    if (keys.length > 0) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
    s3.destroy();
  });

  it('counts records per namespace, day and hour exactly as written', async () => {
    const got = await rows(`SELECT cluster, namespace, dt, hour, count(*)::INTEGER AS records FROM ${source} GROUP BY ALL ORDER BY ALL`);
    const expected = NAMESPACES.flatMap((namespace, i) =>
      HOURS.map((hourMs, j) => {
        const iso = new Date(hourMs).toISOString();
        return { cluster: CLUSTER, namespace, dt: iso.slice(0, 10), hour: iso.slice(11, 13), records: 4 + 3 * i + 2 * j };
      }),
    );
    assert.deepEqual(got, expected);
    assert.equal(expected.reduce((n, e) => n + e.records, 0), written.length);
  });

  it('reads the objects with the Athena columns: @timestamp as timestamp, nested structs, label maps, flag arrays', async () => {
    const sample = written[17];
    assert.ok(sample);
    const [row] = await rows(
      `SELECT "timestamp", kubernetes.pod AS pod, kubernetes.labels[${sqlString(NAME_LABEL)}] AS name_label, kubernetes.namespace_labels['team'] AS team, log."offset" AS log_offset, namespace
       FROM ${table} WHERE event_id = ${sqlString(sample.record.fields.eventId)}`,
    );
    assert.deepEqual(row, { timestamp: sample.timestamp, pod: sample.pod, name_label: sample.namespace, team: `team-${sample.namespace}`, log_offset: BigInt(sample.record.offset * 100), namespace: sample.namespace });

    const [consistency] = await rows(
      `SELECT count(*)::INTEGER AS total,
              count(*) FILTER (kubernetes.cluster = cluster AND kubernetes.namespace = namespace AND kubernetes.labels['app'] = namespace)::INTEGER AS consistent,
              count(*) FILTER (list_contains(log.flags, ${sqlString(RecordFlag.TRUNCATED)}))::INTEGER AS truncated,
              count(DISTINCT event_id)::INTEGER AS distinct_ids
       FROM ${table}`,
    );
    assert.deepEqual(consistency, { total: written.length, consistent: written.length, truncated: written.filter((w) => w.flagged).length, distinct_ids: written.length });
  });

  it('answers the docs/athena.md question "errors of one pod in a time range"', async () => {
    const got = await rows(
      `SELECT "timestamp", message FROM ${table}
       WHERE cluster = ${sqlString(CLUSTER)} AND namespace = 'beta'
         AND dt = '2026-11-22' AND hour BETWEEN '22' AND '23'
         AND kubernetes.pod = 'beta-pod-0'
         AND "timestamp" >= '2026-11-22T22:10:00' AND "timestamp" < '2026-11-22T23:30:00'
         AND stream = 'stderr'
       ORDER BY "timestamp"`,
    );
    const from = Date.parse('2026-11-22T22:10:00Z');
    const to = Date.parse('2026-11-22T23:30:00Z');
    const expected = written
      .filter((w) => w.namespace === 'beta' && w.pod === 'beta-pod-0' && w.stream === 'stderr' && w.record.fields.timeMs >= from && w.record.fields.timeMs < to)
      .sort((a, b) => a.timestamp.localeCompare(b.timestamp))
      .map((w) => ({ timestamp: w.timestamp, message: (JSON.parse(lineOf(w.record).toString('utf8')) as LogRecord)[Field.MESSAGE] }));
    assert.ok(expected.length > 0);
    assert.deepEqual(got, expected);
  });

  it('infers from the data the same columns, struct fields and types the Athena DDL declares', async () => {
    const reader = await db.runAndReadAll(`SELECT * FROM ${source} LIMIT 0`);
    const names = reader.columnNames();
    const types = reader.columnTypes();
    const dataNames = names.filter((n) => !(PARTITION_COLUMNS as readonly string[]).includes(n));
    const dataTypes = types.filter((_t, i) => !(PARTITION_COLUMNS as readonly string[]).includes(names[i] ?? ''));
    assert.deepEqual(structProblems(RECORD_COLUMNS, dataNames, dataTypes, ''), []);
    assert.deepEqual(names.filter((n) => (PARTITION_COLUMNS as readonly string[]).includes(n)).sort(), [...PARTITION_COLUMNS].sort());
  });
});

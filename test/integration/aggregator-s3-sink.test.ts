import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { lineBytes, lineOf, sinkRecord as recordOf, type Batch, type SendResult, type SinkRecord } from '../../aggregator/sink.js';
import { decodeMessage } from '../../aggregator/record-decoder.js';
import { createS3NdjsonSink, type S3SinkDeps } from '../../aggregator/sinks/s3-ndjson.js';
import { s3SinkOptionsSchema } from '../../aggregator/sinks/s3-options.js';
import { ErrorCode, SinkError } from '../../shared/errors.js';
import { Field, KubernetesField, LogField, type LogRecord } from '../../shared/record.js';
import { createS3Client } from '../../shared/s3.js';
import { s3Config, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const HOUR_MS = 3_600_000;
const BASE_MS = Date.parse('2026-11-22T04:00:00Z');
const TOPIC = 'logs.it.payments';
const PARTITION = 3;

const { bucket, ...connection } = s3Config();
const s3 = createS3Client(connection);
const logger = testLogger();

interface RecordSpec {
  offset: number;
  index?: number;
  namespace?: string;
  timeMs?: number;
  message?: string;
}

/** A record as the agent writes it, keyed by shared/record.ts constants, and as the runner hands it to a sink. */
function sinkRecord(spec: RecordSpec): SinkRecord {
  const index = spec.index ?? 0;
  const namespace = spec.namespace ?? 'payments';
  const timeMs = spec.timeMs ?? BASE_MS;
  const timestamp = new Date(timeMs).toISOString();
  const eventId = `${TOPIC}:${PARTITION}:${spec.offset}:${index}`;
  const pod = `api-${namespace}`;
  const record: LogRecord = {
    [Field.TIMESTAMP]: timestamp,
    [Field.MESSAGE]: spec.message ?? `line ${spec.offset}.${index}`,
    [Field.STREAM]: 'stdout',
    [Field.EVENT_ID]: eventId,
    [Field.KUBERNETES]: {
      [KubernetesField.CLUSTER]: 'it',
      [KubernetesField.NODE]: 'node-1',
      [KubernetesField.NAMESPACE]: namespace,
      [KubernetesField.POD]: pod,
      [KubernetesField.POD_UID]: 'uid-1',
      [KubernetesField.CONTAINER]: 'api',
      [KubernetesField.LABELS]: { app: 'api' },
      [KubernetesField.ANNOTATIONS]: {},
      [KubernetesField.NAMESPACE_LABELS]: {},
    },
    [Field.LOG]: { [LogField.FILE]: `/var/log/pods/${namespace}_${pod}_uid-1/api/0.log`, [LogField.OFFSET]: spec.offset * 1000 + index },
  };
  return recordOf({ topic: TOPIC, partition: PARTITION, offset: spec.offset, index }, Buffer.from(JSON.stringify(record)), {
    timeMs,
    eventId,
    cluster: 'it',
    namespace,
    pod,
    container: 'api',
  });
}

function batch(firstOffset: number, endOffset: number, records: readonly SinkRecord[]): Batch {
  const inRange = records.filter((r) => r.offset >= firstOffset && r.offset < endOffset);
  return { topic: TOPIC, partition: PARTITION, firstOffset, endOffset, records: inRange, bytes: inRange.reduce((n, r) => n + lineBytes(r), 0) };
}

/** Offsets [from, to), one record each, alternating two namespaces, one hour per 40 offsets. */
function stream(from: number, to: number): SinkRecord[] {
  const records = [];
  for (let offset = from; offset < to; offset++) {
    records.push(sinkRecord({ offset, namespace: offset % 2 === 0 ? 'ns-a' : 'ns-b', timeMs: BASE_MS + Math.floor(offset / 40) * HOUR_MS + offset }));
  }
  return records;
}

function sinkFor(prefix: string, overrides: Record<string, unknown> = {}, deps: Partial<S3SinkDeps> = {}) {
  const options = s3SinkOptionsSchema.parse({ bucket, prefix, connection, ...overrides });
  return createS3NdjsonSink('s3-it', options, { logger, ...deps });
}

const REPLAY_LIMITS = { forgetAfterMs: 3_600_000, maxOriginsPerPartition: 64 };

/** Records as the agent writes them: event_id = 20 hex digits of file + 12 of byte offset; one per Kafka offset. */
function agentRecords(firstOffset: number, lines: { file: string; at: number }[]): SinkRecord[] {
  return lines.map((l, i) => {
    const line = JSON.stringify({
      [Field.TIMESTAMP]: new Date(BASE_MS + l.at).toISOString(),
      [Field.MESSAGE]: `${l.file} @${String(l.at)}`,
      [Field.STREAM]: 'stdout',
      [Field.EVENT_ID]: l.file.repeat(20).slice(0, 20) + l.at.toString(16).padStart(12, '0'),
      [Field.KUBERNETES]: { [KubernetesField.CLUSTER]: 'it', [KubernetesField.NAMESPACE]: 'payments' },
    });
    const decoded = decodeMessage(TOPIC, PARTITION, firstOffset + i, Buffer.from(line), { maxRecordBytes: 65_536 }).records;
    assert.equal(decoded.length, 1);
    return decoded[0] as SinkRecord;
  });
}

async function listKeys(client: S3Client, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return keys.sort();
}

async function getBytes(key: string): Promise<Buffer> {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = await object.Body?.transformToByteArray();
  assert.ok(bytes, `no body for ${key}`);
  return Buffer.from(bytes);
}

/** The NDJSON lines of every data object under the prefix, by key. */
async function readObjects(prefix: string): Promise<Map<string, string[]>> {
  const objects = new Map<string, string[]>();
  for (const key of await listKeys(s3, prefix)) {
    if (!key.endsWith('.ndjson.gz')) continue;
    const text = gunzipSync(await getBytes(key)).toString('utf8');
    assert.ok(text.endsWith('\n'), `${key} ends with a newline`);
    objects.set(key, text.slice(0, -1).split('\n'));
  }
  return objects;
}

function eventIds(objects: Map<string, string[]>): string[] {
  return [...objects.values()].flat().map((line) => (JSON.parse(line) as LogRecord)[Field.EVENT_ID]);
}

const stateKeyOf = (prefix: string): string => `${prefix}/_state/s3-it/${TOPIC}+${PARTITION}.json`;

/** The state object's version and marker. */
async function readMarker(prefix: string): Promise<unknown> {
  const { version, endOffset } = JSON.parse((await getBytes(stateKeyOf(prefix))).toString('utf8')) as { version: number; endOffset: number };
  return { version, endOffset };
}

async function markerExists(prefix: string): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: stateKeyOf(prefix) }));
    return true;
  } catch {
    return false;
  }
}

async function deletePrefix(prefix: string): Promise<void> {
  const keys = await listKeys(s3, prefix);
  for (let i = 0; i < keys.length; i += 1000) {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
  }
}

function assertDelivered(result: SendResult): void {
  assert.equal(result.status, 'delivered', result.status === 'delivered' ? '' : result.error.message);
}

describe('S3 NDJSON sink (real MinIO)', () => {
  const prefixes: string[] = [];
  const newPrefix = (): string => {
    const prefix = uniqueName('it-s3sink');
    prefixes.push(prefix);
    return prefix;
  };

  after(async () => {
    for (const prefix of prefixes) await deletePrefix(prefix);
    s3.destroy();
  });

  it('checks the bucket at start: a missing bucket or wrong credentials fail fast with a clear error', async () => {
    const prefix = newPrefix();
    const good = sinkFor(prefix);
    await good.start(AbortSignal.timeout(10_000));
    await good.healthcheck(AbortSignal.timeout(10_000));
    await good.close();

    const missing = sinkFor(prefix, { bucket: uniqueName('no-such-bucket') });
    await assert.rejects(missing.start(AbortSignal.timeout(10_000)), (error: unknown) => {
      assert.ok(error instanceof SinkError);
      assert.match(error.message, /does not exist/);
      assert.equal(error.retriable, false);
      return true;
    });
    await missing.close();

    const secret = 'wrong-secret-0123456789';
    const denied = sinkFor(prefix, { connection: { ...connection, secretAccessKey: { value: secret } } });
    await assert.rejects(denied.start(AbortSignal.timeout(10_000)), (error: unknown) => {
      assert.ok(error instanceof SinkError);
      assert.match(error.message, /denied/);
      assert.equal(error.retriable, false);
      assert.ok(!error.message.includes(secret), 'no credentials in the message');
      return true;
    });
    await denied.close();
  });

  it('writes one object per namespace and hour, keyed by the first offset of its records, each holding exactly its records in order', async () => {
    const prefix = newPrefix();
    const sink = sinkFor(prefix);
    // 80 offsets over two namespaces and two hours; offset 10 holds two records (one Kafka message, two lines).
    const records = stream(0, 80);
    records.splice(11, 0, sinkRecord({ offset: 10, index: 1, namespace: 'ns-a', timeMs: BASE_MS + 10 }));
    const sent = batch(0, 80, records);
    assertDelivered(await sink.send(sent, AbortSignal.timeout(30_000)));
    await sink.close();

    const objects = await readObjects(prefix);
    const where = (ns: string, hour: string, first: number): string =>
      `${prefix}/cluster=it/namespace=${ns}/dt=2026-11-22/hour=${hour}/${TOPIC}+${PARTITION}+${first}.ndjson.gz`;
    assert.deepEqual([...objects.keys()].sort(), [where('ns-a', '04', 0), where('ns-a', '05', 40), where('ns-b', '04', 1), where('ns-b', '05', 41)].sort());
    const expected = new Map<string, string[]>();
    for (const r of sent.records) {
      const key = where(r.fields.namespace, r.offset < 40 ? '04' : '05', (r.offset < 40 ? 0 : 40) + (r.fields.namespace === 'ns-a' ? 0 : 1));
      expected.set(key, [...(expected.get(key) ?? []), lineOf(r).toString('utf8')]);
    }
    for (const [key, lines] of objects) assert.deepEqual(lines, expected.get(key), key);
    assert.equal([...objects.values()].flat().length, 81, 'N records in, N lines out');
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 80 });
  });

  it('does not duplicate records when a partition is replayed from an earlier committed offset', async () => {
    const prefix = newPrefix();
    const all = stream(0, 150);

    const first = sinkFor(prefix);
    assertDelivered(await first.send(batch(0, 100, all), AbortSignal.timeout(30_000)));
    await first.close();

    // A restart: the commit was 50 (another sink was slower), so [50, 150) comes again.
    const second = sinkFor(prefix);
    assertDelivered(await second.send(batch(50, 150, all), AbortSignal.timeout(30_000)));

    const ids = eventIds(await readObjects(prefix));
    assert.equal(new Set(ids).size, ids.length, 'no record twice');
    assert.deepEqual(new Set(ids), new Set(all.map((r) => r.fields.eventId)), 'all 150 present');
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 150 });

    // Below the marker a replay writes nothing at all; a released partition re-reads the marker from S3.
    const before = await listKeys(s3, prefix);
    second.release(TOPIC, PARTITION);
    assertDelivered(await second.send(batch(0, 150, all), AbortSignal.timeout(30_000)));
    assert.deepEqual(await listKeys(s3, prefix), before);
    await second.close();
  });

  it('does not duplicate records after a crash between the objects and the marker, with other batch boundaries on replay', async () => {
    const prefix = newPrefix();
    const all = stream(0, 250);
    const sink = sinkFor(prefix);
    assertDelivered(await sink.send(batch(0, 150, all), AbortSignal.timeout(30_000)));
    assertDelivered(await sink.send(batch(150, 250, all), AbortSignal.timeout(30_000)));
    await sink.close();
    // The process died after the objects of [150, 250) but before their marker: the marker is what it
    // was before that batch. (Deleting it instead would be a lost marker, not a crash.)
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: stateKeyOf(prefix), Body: JSON.stringify({ version: 2, sink: 's3-it', topic: TOPIC, partition: PARTITION, endOffset: 150, origins: {} }) }));
    const stale = new Set(await listKeys(s3, prefix));

    // The restart replays from commit 120 in shorter batches than before.
    const restarted = sinkFor(prefix);
    for (const [from, to] of [[120, 170], [170, 210], [210, 250]] as const) {
      assertDelivered(await restarted.send(batch(from, to, all), AbortSignal.timeout(30_000)));
    }
    await restarted.close();

    const objects = await readObjects(prefix);
    const ids = eventIds(objects);
    assert.equal(new Set(ids).size, ids.length, `no record twice (${ids.length - new Set(ids).size} duplicates)`);
    assert.equal(ids.length, 250, 'all 250 present');
    // Each object the crashed run left was found (If-None-Match) and resumed after, not rewritten.
    assert.deepEqual([...objects.keys()].sort(), [...stale].filter((k) => k.endsWith('.ndjson.gz')).sort(), 'the objects the crash left, no new one');
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 250 });
  });

  it('fences a paused member\'s objects that land before the new owner writes: the owner resumes after them', async () => {
    const prefix = newPrefix();
    const all = stream(0, 300);
    const conflicts: string[] = [];
    const countObjectConflict = (_sink: string, resolution: string): void => void conflicts.push(resolution);
    const first = sinkFor(prefix);
    assertDelivered(await first.send(batch(0, 100, all), AbortSignal.timeout(30_000)));
    await first.close();
    // The zombie read the marker (100) and sent a long batch; its objects landed (late), but it lost
    // the partition before its state write: allowed 10 object writes (5 hours x 2 namespaces), no more.
    let writesAllowed = 10;
    const zombie = sinkFor(prefix, {}, { membershipConfirmed: () => writesAllowed-- > 0 });
    const late = await zombie.send(batch(100, 260, all), AbortSignal.timeout(30_000));
    assert.equal(late.status, 'retryable');
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 100 });
    const zombieKeys = (await listKeys(s3, prefix)).filter((k) => k.endsWith('.ndjson.gz'));
    // The new owner read the same marker and writes with other batch boundaries.
    const owner = sinkFor(prefix, {}, { countObjectConflict });
    for (const [from, to] of [[100, 170], [170, 230], [230, 300]] as const) {
      assertDelivered(await owner.send(batch(from, to, all), AbortSignal.timeout(30_000)));
    }
    await owner.close();
    await zombie.close();
    const objects = await readObjects(prefix);
    const ids = eventIds(objects);
    assert.equal(ids.length - new Set(ids).size, 0, 'no record twice');
    assert.equal(new Set(ids).size, 300, 'no record missing');
    for (const key of zombieKeys) assert.ok(objects.has(key), `the zombie's ${key} kept`);
    assert.ok(conflicts.length >= 10 && conflicts.every((c) => c === 'resumed'), `conflicts: ${conflicts.join(',')}`);
    // Its state names the groups written past its marker by the zombie's objects, then forgets them.
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 300 });
  });

  it('fences a paused member\'s objects that land after the new owner\'s: refused (412), they change nothing', async () => {
    const prefix = newPrefix();
    const all = stream(0, 300);
    const zombie = sinkFor(prefix);
    const owner = sinkFor(prefix);
    assertDelivered(await zombie.send(batch(0, 100, all), AbortSignal.timeout(30_000)));
    // The zombie paused; the owner took over from the marker (100) and wrote up to 230.
    assertDelivered(await owner.send(batch(100, 170, all), AbortSignal.timeout(30_000)));
    assertDelivered(await owner.send(batch(170, 230, all), AbortSignal.timeout(30_000)));
    const etags = async (): Promise<Map<string, string | undefined>> => {
      const tags = new Map<string, string | undefined>();
      for (const key of (await listKeys(s3, prefix)).filter((k) => k.endsWith('.ndjson.gz'))) {
        tags.set(key, (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).ETag);
      }
      return tags;
    };
    const ownerObjects = await etags();
    // The zombie's writes land now, cut at its own boundaries: every one finds the owner's object.
    const late = await zombie.send(batch(100, 260, all), AbortSignal.timeout(30_000));
    if (late.status !== 'retryable') assert.fail('the zombie\'s state write must fail');
    assert.match(late.error.message, /changed by another writer/);
    const after = await etags();
    for (const [key, etag] of ownerObjects) assert.equal(after.get(key), etag, `${key} unchanged`);
    assertDelivered(await owner.send(batch(230, 300, all), AbortSignal.timeout(30_000)));
    await zombie.close();
    await owner.close();
    const ids = eventIds(await readObjects(prefix));
    assert.equal(ids.length - new Set(ids).size, 0, 'no record twice');
    assert.equal(new Set(ids).size, 300, 'no record missing');
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 300 });
  });

  it('keeps an object of an earlier incarnation under the same key and writes beside it; replaces one without metadata', async () => {
    const prefix = newPrefix();
    const conflicts: string[] = [];
    const countObjectConflict = (_sink: string, resolution: string): void => void conflicts.push(resolution);
    const old = sinkFor(prefix, {}, { topicId: () => Promise.resolve('old-id') });
    assertDelivered(await old.send(batch(0, 80, stream(0, 80)), AbortSignal.timeout(30_000)));
    await old.close();
    const oldKeys = (await listKeys(s3, prefix)).filter((k) => k.endsWith('.ndjson.gz'));
    // Created again: offsets restart at 0, the same hours, so the same keys. Replayed twice (a crash
    // before its state): the second run finds its own objects under the alternate keys.
    const recreated = stream(0, 120).map((r) => sinkRecord({ offset: r.offset, namespace: r.fields.namespace, timeMs: r.fields.timeMs, message: `new incarnation ${String(r.offset)}` }));
    for (let run = 0; run < 2; run++) {
      const renewed = sinkFor(prefix, {}, { topicId: () => Promise.resolve('new-id'), countObjectConflict });
      if (run === 1) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: stateKeyOf(prefix) }] } }));
      assertDelivered(await renewed.send({ ...batch(0, 120, recreated), highWatermark: 120 }, AbortSignal.timeout(30_000)));
      await renewed.close();
    }
    const objects = await readObjects(prefix);
    for (const key of oldKeys) assert.ok(objects.has(key), `the old incarnation's ${key} kept`);
    const rows = [...objects.values()].flat();
    assert.equal(rows.length, 200, '80 old rows and 120 new ones');
    assert.equal(new Set(rows).size, 200, 'no row twice');
    assert.equal(rows.filter((row) => row.includes('new incarnation')).length, 120);
    assert.ok([...objects.keys()].some((k) => k.endsWith('+new-id.ndjson.gz')), 'alternate keys name the incarnation');
    assert.ok(conflicts.includes('earlier_incarnation') && conflicts.includes('resumed'), conflicts.join(','));

    // An object an older logship wrote (no metadata) under a key: replaced, as before the fence.
    const legacy = newPrefix();
    const records = stream(0, 10).filter((r) => r.fields.namespace === 'ns-a');
    const key = `${legacy}/cluster=it/namespace=ns-a/dt=2026-11-22/hour=04/${TOPIC}+${PARTITION}+0.ndjson.gz`;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: gzipSync(`${lineOf(records[0] as SinkRecord).toString('utf8')}\n`) }));
    const sink = sinkFor(legacy, {}, { countObjectConflict });
    assertDelivered(await sink.send(batch(0, 10, records), AbortSignal.timeout(30_000)));
    await sink.close();
    assert.equal(eventIds(await readObjects(legacy)).length, 5);
    assert.equal(conflicts.at(-1), 'unmarked');
  });

  it('writes an object above the multipart threshold with a multipart upload that reads back intact', async () => {
    const prefix = newPrefix();
    const MIB = 1024 * 1024;
    const sink = sinkFor(prefix, { multipartThresholdBytes: 5 * MIB, partSizeBytes: 5 * MIB });
    // Random base64 barely compresses: ~9 MB of lines make a ~7 MB gzip object, two parts.
    const records = Array.from({ length: 1500 }, (_, offset) => sinkRecord({ offset, message: randomBytes(4500).toString('base64') }));
    assertDelivered(await sink.send(batch(0, 1500, records), AbortSignal.timeout(120_000)));
    await sink.close();

    const keys = (await listKeys(s3, prefix)).filter((k) => k.endsWith('.ndjson.gz'));
    assert.equal(keys.length, 1);
    const key = keys[0] ?? '';
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    assert.ok((head.ContentLength ?? 0) > 5 * MIB, `object is ${String(head.ContentLength)} bytes`);
    assert.match(head.ETag ?? '', /-2"?$/, 'a multipart ETag names its part count');
    const lines = gunzipSync(await getBytes(key)).toString('utf8').split('\n');
    assert.equal(lines.pop(), '');
    assert.deepEqual(lines, records.map((r) => lineOf(r).toString('utf8')));
  });

  it('stops a send when its signal aborts: retryable, no marker, and a later send writes everything once', async () => {
    const prefix = newPrefix();
    const sink = sinkFor(prefix, { uploadConcurrency: 1 });
    // 300 hours: 300 objects written one at a time, so the abort lands mid-batch.
    const records = Array.from({ length: 300 }, (_, offset) => sinkRecord({ offset, timeMs: BASE_MS + offset * HOUR_MS }));

    const alreadyAborted = await sink.send(batch(0, 300, records), AbortSignal.abort());
    assert.equal(alreadyAborted.status, 'retryable');
    assert.deepEqual(await listKeys(s3, prefix), [], 'nothing written for an aborted signal');

    const controller = new AbortController();
    const sending = sink.send(batch(0, 300, records), controller.signal);
    await waitFor('the first object', async () => (await listKeys(s3, prefix)).length > 0, 30_000, 5);
    controller.abort();
    const result = await sending;
    assert.equal(result.status, 'retryable');
    assert.equal(result.error.code, ErrorCode.ABORTED);
    assert.equal(result.error.retriable, true);
    const written = await listKeys(s3, prefix);
    assert.ok(written.length < 300, `the abort stopped the batch (${written.length} of 300 objects)`);
    assert.equal(await markerExists(prefix), false, 'no marker after an aborted send');

    assertDelivered(await sink.send(batch(0, 300, records), AbortSignal.timeout(120_000)));
    await sink.close();
    const ids = eventIds(await readObjects(prefix));
    assert.equal(ids.length, 300);
    assert.equal(new Set(ids).size, 300);
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 300 });
  });

  it('aborts a multipart upload when the signal aborts, leaving no parts behind', async () => {
    const prefix = newPrefix();
    const MIB = 1024 * 1024;
    const sink = sinkFor(prefix, { multipartThresholdBytes: 5 * MIB, partSizeBytes: 5 * MIB, uploadConcurrency: 1 });
    const records = Array.from({ length: 3000 }, (_, offset) => sinkRecord({ offset, message: randomBytes(4500).toString('base64') }));
    // MinIO lists the uploads of one key only, so ask for the key the batch's single object gets.
    const key = `${prefix}/cluster=it/namespace=payments/dt=2026-11-22/hour=04/${TOPIC}+${PARTITION}+0.ndjson.gz`;
    const uploadsInFlight = async (): Promise<number> => ((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }))).Uploads ?? []).length;
    const controller = new AbortController();
    const sending = sink.send(batch(0, 3000, records), controller.signal);
    await waitFor('a multipart upload to begin', async () => (await uploadsInFlight()) > 0, 60_000, 5);
    controller.abort();
    const result = await sending;
    assert.equal(result.status, 'retryable');
    assert.equal(await markerExists(prefix), false);
    await waitFor('the multipart upload to be aborted', async () => (await uploadsInFlight()) === 0, 30_000);
    assert.deepEqual((await listKeys(s3, prefix)).filter((k) => k.endsWith('.ndjson.gz')), [], 'no object completed');
    await sink.close();
  });

  it('refuses records whose time names no day, and writes the rest', async () => {
    const prefix = newPrefix();
    const sink = sinkFor(prefix);
    const records = [sinkRecord({ offset: 0 }), sinkRecord({ offset: 1, timeMs: Date.UTC(12_000, 0, 1) }), sinkRecord({ offset: 2 })];
    const result = await sink.send(batch(0, 3, records), AbortSignal.timeout(30_000));
    await sink.close();
    assert.equal(result.status, 'delivered');
    assert.deepEqual(result.rejected?.map((r) => r.record.offset), [1]);
    assert.match(String(result.rejected.at(0)?.detail), /^timestamp "\+012000-01-01T00:00:00\.000Z" is outside/);
    const ids = eventIds(await readObjects(prefix));
    assert.deepEqual(ids.sort(), [records[0], records[2]].map((r) => r?.fields.eventId).sort());
  });

  it('refuses such a record again when its batch comes back below or across the marker (its dead letter may not have been written)', async () => {
    const prefix = newPrefix();
    const records = [sinkRecord({ offset: 0 }), sinkRecord({ offset: 1, timeMs: Date.UTC(12_000, 0, 1) }), sinkRecord({ offset: 2 }), sinkRecord({ offset: 3 })];
    const first = sinkFor(prefix);
    const written = await first.send(batch(0, 3, records.slice(0, 3)), AbortSignal.timeout(30_000));
    assert.equal(written.status, 'delivered');
    assert.deepEqual(written.rejected?.map((r) => r.record.offset), [1]);
    await first.close();
    // A member that took the partition over replays from the committed offset 0: wholly below the
    // marker (3), then across it.
    const second = sinkFor(prefix);
    const below = await second.send(batch(0, 3, records.slice(0, 3)), AbortSignal.timeout(30_000));
    assert.equal(below.status, 'delivered');
    assert.deepEqual(below.rejected?.map((r) => r.record.offset), [1]);
    const across = await second.send(batch(0, 4, records), AbortSignal.timeout(30_000));
    await second.close();
    assert.equal(across.status, 'delivered');
    assert.deepEqual(across.rejected?.map((r) => r.record.offset), [1]);
    const ids = eventIds(await readObjects(prefix));
    assert.deepEqual(ids.sort(), [records[0], records[2], records[3]].map((r) => r?.fields.eventId).sort(), 'written rows: none twice');
  });

  it('drops an agent\'s replayed lines (new Kafka offsets, same origin), and remembers them across a restart', async () => {
    const prefix = newPrefix();
    const first = sinkFor(prefix, {}, { replays: REPLAY_LIMITS });
    const original = agentRecords(0, [{ file: 'a', at: 0 }, { file: 'a', at: 100 }, { file: 'b', at: 0 }, { file: 'a', at: 200 }]);
    assertDelivered(await first.send(batch(0, 4, original), AbortSignal.timeout(30_000)));
    await first.close();
    // The agent restarted from its checkpoint at a@100: a@100 and a@200 come again, then new lines;
    // a restarted aggregator reads what was written from the state object.
    const second = sinkFor(prefix, {}, { replays: REPLAY_LIMITS });
    const replay = agentRecords(4, [{ file: 'a', at: 100 }, { file: 'a', at: 200 }, { file: 'a', at: 300 }, { file: 'b', at: 40 }]);
    const result = await second.send(batch(4, 8, replay), AbortSignal.timeout(30_000));
    assert.equal(result.status, 'delivered');
    assert.equal(result.replaysDropped, 2);
    await second.close();
    const ids = eventIds(await readObjects(prefix));
    assert.equal(ids.length, 6, 'each line once');
    assert.equal(new Set(ids).size, 6);
  });

  it('lets a member that lost the partition write no state over the new owner\'s (If-Match)', async () => {
    const prefix = newPrefix();
    const all = stream(0, 300);
    const zombie = sinkFor(prefix);
    const owner = sinkFor(prefix);
    assertDelivered(await zombie.send(batch(0, 100, all), AbortSignal.timeout(30_000)));
    // The zombie paused; the new owner took over from the commit at 100 and moved on.
    assertDelivered(await owner.send(batch(100, 200, all), AbortSignal.timeout(30_000)));
    assertDelivered(await owner.send(batch(200, 300, all), AbortSignal.timeout(30_000)));
    // The zombie wakes up with its next batch: refused before it writes an object.
    const late = await zombie.send(batch(100, 150, all), AbortSignal.timeout(30_000));
    if (late.status !== 'retryable') assert.fail('expected a retryable result');
    assert.match(late.error.message, /changed by another writer/);
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 300 }, 'the marker did not move back');
    // Read again, its batch lies below the marker: acknowledged without writing.
    assertDelivered(await zombie.send(batch(100, 150, all), AbortSignal.timeout(30_000)));
    await zombie.close();
    await owner.close();
    const ids = eventIds(await readObjects(prefix));
    assert.equal(new Set(ids).size, 300);
  });

  it('discards state of an earlier incarnation of the topic, or above the high watermark, with a warning', async () => {
    const prefix = newPrefix();
    const old = sinkFor(prefix, {}, { topicId: () => Promise.resolve('old-id') });
    assertDelivered(await old.send(batch(0, 200, stream(0, 200)), AbortSignal.timeout(30_000)));
    await old.close();
    // The topic was deleted and created again: its new records start at offset 0 and grow past 200.
    const recreated = stream(0, 250).map((r) => ({ ...r, fields: { ...r.fields, eventId: `new-${r.fields.eventId}` } }));
    const renewed = sinkFor(prefix, {}, { topicId: () => Promise.resolve('new-id') });
    assertDelivered(await renewed.send({ ...batch(0, 250, recreated), highWatermark: 250 }, AbortSignal.timeout(30_000)));
    await renewed.close();
    const written = await readObjects(prefix);
    // Rows of the new incarnation are all there (their keys may equal the old ones: same offsets, rewritten).
    const rows = [...written.values()].flat().map((line) => (JSON.parse(line) as LogRecord)[Field.MESSAGE]);
    assert.equal(rows.length >= 250, true);
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 250 });

    // A broker that cannot tell topic IDs: a marker above the high watermark is discarded.
    const unknown = sinkFor(prefix);
    const result = await unknown.send({ ...batch(0, 10, stream(0, 10)), highWatermark: 10 }, AbortSignal.timeout(30_000));
    assertDelivered(result);
    assert.deepEqual(await readMarker(prefix), { version: 2, endOffset: 10 });
    await unknown.close();
  });
});

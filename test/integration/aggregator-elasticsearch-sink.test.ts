import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, describe, it, type TestContext } from 'node:test';
import { lineBytes, lineOf, sinkRecord, type Batch, type SendResult, type Sink, type SinkRecord } from '../../aggregator/sink.js';
import { createElasticsearchSink } from '../../aggregator/sinks/elasticsearch.js';
import { elasticsearchSinkOptionsSchema } from '../../aggregator/sinks/elasticsearch-options.js';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { SinkError } from '../../shared/errors.js';
import { Field, KubernetesField, LogField } from '../../shared/record.js';
import { abortableSleep, backoffDelayMs } from '../../shared/retry.js';
import { elasticsearchConfig, testLogger, uniqueName } from '../helpers/stack.js';

const es = createElasticsearchClient(elasticsearchConfig());

interface RecordSpec {
  namespace: string;
  timestamp: string;
  app: string;
  /** Replaces `log.offset`, to make a document the mapping refuses. */
  offset?: unknown;
  extra?: Record<string, unknown>;
}

function record(prefix: string, i: number, spec: RecordSpec): SinkRecord {
  const eventId = `${prefix}-evt-${i}`;
  const cluster = 'it-cluster';
  const doc = {
    [Field.TIMESTAMP]: spec.timestamp,
    [Field.MESSAGE]: `GET /items/${i} 200`,
    [Field.STREAM]: i % 2 === 0 ? 'stdout' : 'stderr',
    [Field.EVENT_ID]: eventId,
    [Field.KUBERNETES]: {
      [KubernetesField.CLUSTER]: cluster,
      [KubernetesField.NODE]: 'node-1',
      [KubernetesField.NAMESPACE]: spec.namespace,
      [KubernetesField.POD]: `${spec.app}-7f9c-x2`,
      [KubernetesField.POD_UID]: '7f3c1e2a-9b4d-4c8e-a1f0-2d6e8b9c0a11',
      [KubernetesField.CONTAINER]: spec.app,
      [KubernetesField.LABELS]: { app: spec.app, 'app.kubernetes.io/part-of': 'shop' },
      [KubernetesField.ANNOTATIONS]: { 'kubectl.kubernetes.io/last-applied-configuration': 'x'.repeat(5000) },
      [KubernetesField.NAMESPACE_LABELS]: { team: 'core' },
    },
    [Field.LOG]: { [LogField.FILE]: '/var/log/pods/x/0.log', [LogField.OFFSET]: spec.offset ?? i * 120 },
    ...spec.extra,
  };
  const timeMs = Date.parse(spec.timestamp);
  return sinkRecord(
    { topic: `logs.${cluster}.${spec.namespace}`, partition: 0, offset: i, index: 0 },
    Buffer.from(JSON.stringify(doc)),
    { timeMs, eventId, cluster, namespace: spec.namespace, pod: `${spec.app}-7f9c-x2`, container: spec.app },
  );
}

function batchOf(records: readonly SinkRecord[], firstOffset = 0, endOffset = records.length): Batch {
  return { topic: 'logs.it', partition: 0, firstOffset, endOffset, records, bytes: records.reduce((n, r) => n + lineBytes(r), 0) };
}

/** A sink writing to `<prefix>-{namespace}-{yyyy.MM.dd}`, its template and indices removed after the test. */
async function startSink(t: TestContext, prefix: string, overrides: Record<string, unknown> = {}): Promise<Sink> {
  const options = elasticsearchSinkOptionsSchema.parse({
    connection: elasticsearchConfig(),
    index: `${prefix}-{namespace}-{yyyy.MM.dd}`,
    templateName: prefix,
    numberOfReplicas: 0,
    refreshIntervalMs: 1_000,
    ...overrides,
  });
  const sink = createElasticsearchSink('es-it', options, { logger: testLogger() });
  t.after(async () => {
    await sink.close();
    await es.indices.delete({ index: `${prefix}-*`, ignore_unavailable: true, allow_no_indices: true, expand_wildcards: 'all' });
    await es.indices.deleteIndexTemplate({ name: prefix }, { ignore: [404] });
  });
  await sink.start(AbortSignal.timeout(30_000));
  return sink;
}

async function count(index: string, query?: object): Promise<number> {
  await es.indices.refresh({ index, ignore_unavailable: true, allow_no_indices: true });
  return (await es.count({ index, ignore_unavailable: true, allow_no_indices: true, ...(query ? { query } : {}) })).count;
}

function assertStatus<S extends SendResult['status']>(result: SendResult, status: S): asserts result is Extract<SendResult, { status: S }> {
  assert.equal(result.status, status, `expected ${status}, got ${JSON.stringify({ ...result, error: 'error' in result ? result.error.message : undefined, pending: undefined })}`);
}

describe('Elasticsearch sink (real node)', () => {
  after(async () => {
    await es.close();
  });

  it('writes one document per record into the index of its namespace and date, _id = event_id; a replay overwrites', async (t) => {
    const prefix = uniqueName('it-es-sink');
    // Small requests and 3 in flight: the batch goes out as several bounded bulk requests.
    const sink = await startSink(t, prefix, { maxRequestBytes: 64 * 1024, concurrency: 3 });
    await sink.start(AbortSignal.timeout(30_000)); // installing the template again is harmless
    const days = ['2026-11-21T23:59:59.999999999Z', '2026-11-22T00:00:00.000000001Z'];
    const namespaces = ['payments', 'Web-Shop'];
    const n = 600;
    const records = Array.from({ length: n }, (_, i) =>
      record(prefix, i, { namespace: namespaces[i % 2] ?? '', timestamp: days[Math.floor(i / 2) % 2] ?? '', app: i % 3 === 0 ? 'checkout' : 'api' }),
    );
    assert.ok(records.reduce((sum, r) => sum + lineBytes(r), 0) > 4 * 64 * 1024, 'the batch needs several requests');

    // A send whose signal is already aborted (shutdown) writes nothing and keeps every record.
    const aborted = await sink.send(batchOf(records), AbortSignal.abort());
    assertStatus(aborted, 'retryable');
    assert.equal(aborted.pending?.length, n);
    assert.equal(await count(`${prefix}-*`), 0);

    const result = await sink.send(batchOf(records), AbortSignal.timeout(60_000));
    assertStatus(result, 'delivered');
    assert.equal(result.rejected, undefined);
    assert.equal(result.retried, n, 'the records the aborted send kept were retried');
    assert.equal(await count(`${prefix}-*`), n);
    const expected = new Map<string, number>();
    for (const [i] of records.entries()) {
      const index = `${prefix}-${i % 2 === 0 ? 'payments' : 'web-shop'}-${Math.floor(i / 2) % 2 === 0 ? '2026.11.21' : '2026.11.22'}`;
      expected.set(index, (expected.get(index) ?? 0) + 1);
    }
    for (const [index, docs] of expected) assert.equal(await count(index), docs, index);

    // _id is the event id, and the document is the record's line byte for byte.
    const sample = records[7];
    assert.ok(sample);
    const got = await es.get<Record<string, unknown>>({ index: `${prefix}-web-shop-2026.11.22`, id: sample.fields.eventId });
    assert.deepEqual(got._source, JSON.parse(lineOf(sample).toString('utf8')));

    // The template applied: labels are one flattened field, searchable by key.
    const mapping = await es.indices.getMapping({ index: `${prefix}-payments-2026.11.21` });
    const properties = Object.values(mapping)[0]?.mappings.properties ?? {};
    const kubernetes = properties[Field.KUBERNETES] as { properties: Record<string, { type?: string }> };
    assert.equal(kubernetes.properties[KubernetesField.LABELS]?.type, 'flattened');
    assert.equal((properties[Field.TIMESTAMP] as { type?: string }).type, 'date_nanos');
    const checkout = records.filter((r) => r.fields.container === 'checkout').length;
    assert.equal(await count(`${prefix}-*`, { term: { [`${Field.KUBERNETES}.${KubernetesField.LABELS}.app`]: 'checkout' } }), checkout);
    assert.equal(await count(`${prefix}-*`, { term: { [`${Field.KUBERNETES}.${KubernetesField.LABELS}`]: 'shop' } }), n);

    // The same batch again (a replay) overwrites: still exactly n documents.
    const replay = await sink.send(batchOf(records), AbortSignal.timeout(60_000));
    assertStatus(replay, 'delivered');
    assert.equal(await count(`${prefix}-*`), n);
  });

  it('dead-letters a document the mapping refuses with Elasticsearch\'s reason; the rest of the batch lands', async (t) => {
    const prefix = uniqueName('it-es-sink');
    const sink = await startSink(t, prefix);
    const timestamp = '2026-11-22T04:17:19.123456789Z';
    const records = Array.from({ length: 20 }, (_, i) => record(prefix, i, { namespace: 'payments', timestamp, app: 'api' }));
    const bad = record(prefix, 20, { namespace: 'payments', timestamp, app: 'api', offset: 'not-a-number' });
    // An unknown field does not make a document fail, nor grow the mapping.
    const extra = record(prefix, 21, { namespace: 'payments', timestamp, app: 'api', extra: { trace: { id: 'abc', spans: [1, 2] } } });
    const batch = batchOf([...records.slice(0, 10), bad, extra, ...records.slice(10)]);

    const result = await sink.send(batch, AbortSignal.timeout(30_000));
    assertStatus(result, 'delivered');
    assert.equal(result.rejected?.length, 1);
    const [rejected] = result.rejected ?? [];
    assert.ok(rejected);
    assert.equal(rejected.record, bad);
    assert.equal(rejected.reason, 'rejected');
    assert.match(rejected.detail, /^(document_parsing_exception|mapper_parsing_exception): .*log\.offset/);
    assert.equal(await count(`${prefix}-*`), 21);
    assert.equal(await count(`${prefix}-*`, { ids: { values: [bad.fields.eventId] } }), 0);
    const mapping = await es.indices.getMapping({ index: `${prefix}-payments-2026.11.22` });
    assert.deepEqual(Object.keys(Object.values(mapping)[0]?.mappings.properties ?? {}).sort(), [Field.TIMESTAMP, Field.EVENT_ID, Field.KUBERNETES, Field.LOG, Field.MESSAGE, Field.STREAM].sort());
  });

  it('returns items Elasticsearch throttles with 429 as pending; resending only those lands everything', async (t) => {
    const prefix = uniqueName('it-es-sink');
    const sink = await startSink(t, prefix);
    const timestamp = '2026-11-22T04:17:19.123456789Z';
    // The flood-stage disk block Elasticsearch puts on indices when a disk fills: every write to the
    // index is answered 429 (TOO_MANY_REQUESTS/12) until the block is lifted. A dynamic setting, so
    // the test gets real 429 items without restarting the shared node.
    const blockedIndex = `${prefix}-throttled-2026.11.22`;
    await es.indices.create({ index: blockedIndex });
    const setBlock = (on: boolean) => es.indices.putSettings({ index: blockedIndex, settings: { 'index.blocks.read_only_allow_delete': on ? true : null } }, { ignore: [404] });
    await setBlock(true);
    t.after(() => setBlock(false));

    const records = Array.from({ length: 100 }, (_, i) => record(prefix, i, { namespace: i % 2 === 0 ? 'throttled' : 'open', timestamp, app: 'api' }));
    const throttledIds = records.filter((r) => r.fields.namespace === 'throttled').map((r) => r.fields.eventId);

    const first = await sink.send(batchOf(records), AbortSignal.timeout(30_000));
    assertStatus(first, 'retryable');
    assert.deepEqual(first.pending?.map((r) => r.fields.eventId), throttledIds, 'exactly the throttled items are pending');
    assert.equal(first.rejected, undefined, 'a 429 is never a rejection');
    assert.ok(first.error instanceof SinkError && first.error.retriable);
    assert.match(first.error.message, /status 429/);
    assert.equal(await count(`${prefix}-open-*`), 50, 'the other items of the batch were written');

    // Standing in for the runner: resend only what is pending, with backoff, bounded in attempts and
    // time. The disk "frees up" after two throttled resends.
    let pending = first.pending ?? [];
    let retriedExpected = pending.length;
    let delivered: SendResult | undefined;
    const deadline = Date.now() + 60_000;
    for (let attempt = 1; attempt <= 20 && Date.now() < deadline && delivered === undefined; attempt++) {
      if (attempt === 3) await setBlock(false);
      await abortableSleep(backoffDelayMs(attempt, { initialDelayMs: 50, maxDelayMs: 500 }));
      const result = await sink.send(batchOf(pending, 0, records.length), AbortSignal.timeout(30_000));
      if (result.status === 'delivered') delivered = result;
      else {
        assertStatus(result, 'retryable');
        assert.ok(attempt < 3, `still pending after the block was lifted: ${result.error.message}`);
        assert.equal(result.pending?.length, throttledIds.length);
        pending = result.pending ?? [];
        retriedExpected += pending.length;
      }
    }
    assert.ok(delivered, 'every pending record was written within the attempts');
    assertStatus(delivered, 'delivered');
    assert.equal(delivered.retried, retriedExpected, 'the delivered result counts every record resent');
    assert.equal(await count(`${prefix}-*`), records.length);
    assert.equal(await count(blockedIndex, { ids: { values: throttledIds } }), throttledIds.length);
  });

  it('is retryable, never rejected, when Elasticsearch is unreachable; start and healthcheck fail clearly', async () => {
    const port = await closedPort();
    const options = elasticsearchSinkOptionsSchema.parse({ connection: { nodes: [`http://127.0.0.1:${port}`], requestTimeoutMs: 2_000 }, index: 'it-unreachable-{namespace}' });
    const sink = createElasticsearchSink('es-down', options, { logger: testLogger() });
    try {
      await assert.rejects(sink.start(AbortSignal.timeout(10_000)), (error: unknown) => {
        assert.ok(error instanceof SinkError);
        assert.equal(error.retriable, true);
        assert.match(error.message, /could not install index template "logship": ConnectionError/);
        return true;
      });
      await assert.rejects(sink.healthcheck(AbortSignal.timeout(10_000)), /health check failed: ConnectionError/);
      const records = Array.from({ length: 5 }, (_, i) => record('down', i, { namespace: 'payments', timestamp: '2026-11-22T04:17:19Z', app: 'api' }));
      const result = await sink.send(batchOf(records), AbortSignal.timeout(10_000));
      assertStatus(result, 'retryable');
      assert.equal(result.pending?.length, records.length);
      assert.equal(result.rejected, undefined);
      assert.equal(result.error.retriable, true);
      assert.match(result.error.message, /5 of 5 records not written: no response ×5 \(ConnectionError/);
    } finally {
      await sink.close();
    }
  });
});

/** A loopback port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address !== null && typeof address === 'object');
  return address.port;
}

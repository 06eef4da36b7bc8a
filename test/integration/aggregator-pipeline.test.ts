/**
 * The aggregator binary against the real Kafka, S3 server and Elasticsearch: records in, exactly the
 * same records out in S3 (right partitions) and Elasticsearch (right indices); routing; poison and a
 * mapping conflict in the dead letter without stalling their partition; a topic created later picked
 * up without a restart; offsets committed to the end.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import type { LogRecord } from '../../shared/record.js';
import {
  aggregatorConfigFile,
  committedOffsets,
  countDocuments,
  deleteIndices,
  deleteS3Prefix,
  logRecord,
  readS3Objects,
  readTopic,
  RecordProducer,
  startAggregatorProcess,
  testS3Client,
  topicEndOffsets,
} from '../helpers/aggregator.js';
import { metricValue } from '../helpers/agent.js';
import type { LogshipProcess } from '../helpers/process.js';
import { elasticsearchConfig, uniqueName, waitFor } from '../helpers/stack.js';

const HOUR = 3_600_000;
/** 23:30 on 21 November: records one hour later fall on the next date. */
const BASE = Date.UTC(2026, 10, 21, 23, 30);

describe('aggregator pipeline', () => {
  const name = uniqueName('agg');
  const topicA = `${name}.ns-a`;
  const topicB = `${name}.ns-b`;
  const topicC = `${name}.ns-c`;
  const topicLate = `${name}.ns-late`;
  const dlq = `${name}-deadletter`;
  const groupId = `${name}-group`;
  const producer = new RecordProducer();
  let s3: S3Client;
  let es: Client;
  let aggregator: LogshipProcess | undefined;

  before(async () => {
    s3 = testS3Client();
    es = createElasticsearchClient(elasticsearchConfig());
    await producer.connect();
    await producer.createTopics([
      { topic: topicA, partitions: 2 },
      { topic: topicB, partitions: 3 },
      { topic: topicC, partitions: 1 },
    ]);
  });

  after(async () => {
    await aggregator?.stop();
    await producer.deleteTopics([topicA, topicB, topicC, topicLate, dlq]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    await deleteIndices(es, name);
    s3.destroy();
    await es.close();
  });

  it('delivers every record exactly once, routes, dead-letters poison, picks up new topics, commits to the end', async () => {
    // Records over two hours across midnight (two dates), in namespaces a and b, plus c (S3 only).
    const records: LogRecord[] = [];
    let n = 0;
    for (const namespace of ['ns-a', 'ns-b', 'ns-c']) {
      for (let i = 0; i < 1_000; i++) records.push(logRecord(n++, namespace, BASE + (i % 2) * HOUR + i * 1_000));
    }
    const byNs = (ns: string): LogRecord[] => records.filter((r) => r.kubernetes.namespace === ns);
    await producer.send(topicA, byNs('ns-a'));
    await producer.send(topicB, byNs('ns-b'));
    await producer.send(topicC, byNs('ns-c'));
    // Poison in the middle of topic A: a value that is not JSON, a record above maxRecordBytes, and
    // a record Elasticsearch refuses (log.offset is mapped as a number).
    const conflict = { ...logRecord(n++, 'ns-a', BASE), log: { file: '/x', offset: 'not-a-number' } } as unknown as LogRecord;
    const huge = logRecord(n++, 'ns-a', BASE);
    huge.message = 'x'.repeat(700 * 1024); // above the test's maxRecordBytes, below the broker's message limit
    await producer.sendRaw(topicA, ['this is not json\n', `${JSON.stringify(huge)}\n`]);
    await producer.send(topicA, [conflict]);
    const tail = Array.from({ length: 50 }, () => logRecord(n++, 'ns-a', BASE + 10_000));
    await producer.send(topicA, tail);

    aggregator = startAggregatorProcess(
      aggregatorConfigFile({
        groupId,
        topicPattern: `^${name.replaceAll('-', '\\-')}\\.`,
        s3Prefix: name,
        esIndexPrefix: name,
        deadLetterTopic: dlq,
        esSink: { routing: { namespaces: { exclude: ['ns-c'] } } },
        extra: { records: { maxRecordBytes: 256 * 1024 } },
      }),
    );
    const ops = await aggregator.opsUrl;
    await waitFor('/readyz: consumer running, both sinks healthy', async () => (await fetch(`${ops}/readyz`)).status === 200, 30_000, 200);

    // A topic created while the aggregator runs is picked up without a restart.
    await producer.createTopics([{ topic: topicLate, partitions: 2 }]);
    const late = Array.from({ length: 200 }, () => logRecord(n++, 'ns-late', BASE + 20_000));
    await producer.send(topicLate, late);

    const expectedS3 = records.length + 1 + tail.length + late.length; // + the conflict record
    const expectedEs = records.length - 1_000 + tail.length + late.length; // no ns-c, no conflict
    await waitFor(
      `${String(expectedS3)} rows in S3`,
      async () => (await readS3Objects(s3, name)).reduce((sum, o) => sum + o.lines.length, 0) >= expectedS3,
      120_000,
      500,
    );
    await waitFor(`${String(expectedEs)} documents in Elasticsearch`, async () => (await countDocuments(es, `${name}-*`)) >= expectedEs, 120_000, 500);

    // S3: exactly the input, once each, each row in the partition of its own time.
    const objects = await readS3Objects(s3, name);
    const ids = new Map<string, number>();
    for (const object of objects) {
      for (const line of object.lines) {
        const record = JSON.parse(line) as LogRecord;
        ids.set(record.event_id, (ids.get(record.event_id) ?? 0) + 1);
        const t = new Date(Date.parse(record['@timestamp']));
        const partition = `cluster=it/namespace=${record.kubernetes.namespace}/dt=${t.toISOString().slice(0, 10)}/hour=${String(t.getUTCHours()).padStart(2, '0')}/`;
        assert.ok(object.key.startsWith(`${name}/${partition}`), `${object.key} holds a record of ${partition}`);
      }
    }
    assert.equal([...ids.values()].filter((c) => c > 1).length, 0, 'no duplicate rows');
    assert.equal(ids.size, expectedS3);
    for (const r of [...records, conflict, ...tail, ...late]) assert.ok(ids.has(r.event_id), `${r.event_id} in S3`);
    assert.ok(objects.every((o) => /\/[^/]+\+\d+\+\d+\.ndjson\.gz$/.test(o.key)), 'keys are <topic>+<partition>+<firstOffset>');

    // Elasticsearch: exactly the routed records, in the index of their namespace and date.
    assert.equal(await countDocuments(es, `${name}-*`), expectedEs);
    assert.equal(await countDocuments(es, `${name}-ns-c-*`), 0, 'ns-c is routed to S3 only');
    assert.equal(await countDocuments(es, `${name}-ns-a-2026.11.21`), 500 + tail.length, 'ns-a records of 21 November');
    assert.equal(await countDocuments(es, `${name}-ns-a-2026.11.22`), 500, 'ns-a records of 22 November');
    const doc = await es.get<LogRecord>({ index: `${name}-ns-b-2026.11.21`, id: byNs('ns-b')[0]?.event_id ?? '' });
    assert.equal(doc._source?.message, byNs('ns-b')[0]?.message);

    // Dead letters: the two poison values and the mapping conflict, each with its reason. They are
    // written at least once (a rebalance re-reads uncommitted poison), so repeats are told apart by
    // their source.
    // Waiting for a count of letters would stop at a repeat that came before the last distinct one.
    const distinctReasons = (letters: readonly Record<string, unknown>[]): string[] => {
      const distinct = new Map(letters.map((l) => [JSON.stringify([l.source, l.sink, l.reason]), l]));
      return [...distinct.values()].map((l) => `${String(l.reason)}:${typeof l.sink === 'string' ? l.sink : ''}`).sort();
    };
    const letters = await readTopic(dlq, 'three distinct dead letters', (values) => distinctReasons(values).length >= 3);
    assert.deepEqual(distinctReasons(letters), ['invalid_json:', 'rejected:search', 'too_large:']);
    const rejected = letters.find((l) => l.reason === 'rejected');
    assert.match(String(rejected?.detail), /exception/);
    assert.equal((JSON.parse(String(rejected?.record)) as LogRecord).event_id, conflict.event_id);
    assert.ok((await metricValue(ops, 'logship_aggregator_dead_letters_total')) >= 3);

    // Offsets: committed to the end of every partition (poison did not stall its partition).
    const topics = [topicA, topicB, topicC, topicLate];
    const ends = await topicEndOffsets(topics);
    await waitFor(
      'offsets committed to the end of every partition',
      async () => {
        const committed = await committedOffsets(groupId, topics);
        // An empty partition has nothing to commit (-1).
        return [...ends].every(([key, end]) => committed.get(key) === (end === 0 ? -1 : end));
      },
      60_000,
      500,
    );
    const lag = await metricValue(ops, 'logship_aggregator_consumer_lag');
    assert.equal(lag, 0, 'no lag once everything is committed');

    assert.equal(await aggregator.stop(), 0, 'SIGTERM: flush, commit, leave the group, exit 0');
    aggregator = undefined;
    const final = await committedOffsets(groupId, [topicA]);
    assert.ok([...final.values()].every((o) => o >= 0), 'topic A committed on every partition');
  });

  it('waits for a listed topic that does not exist yet, then consumes it', async () => {
    const missing = `${name}.ns-missing`;
    const member = startAggregatorProcess(
      aggregatorConfigFile({ groupId: `${groupId}-missing`, topics: [missing], s3Prefix: `${name}/missing`, deadLetterTopic: dlq }),
    );
    try {
      await member.opsUrl;
      await producer.createTopics([{ topic: missing, partitions: 1 }]);
      await producer.send(missing, Array.from({ length: 20 }, (_, i) => logRecord(900_000 + i, 'ns-missing', BASE)));
      await waitFor('the 20 records of the late topic in S3', async () => (await readS3Objects(s3, `${name}/missing`)).reduce((n, o) => n + o.lines.length, 0) === 20, 60_000, 500);
      assert.equal(member.child.exitCode, null, 'still running');
    } finally {
      assert.equal(await member.stop(), 0);
      await producer.deleteTopics([missing]);
    }
  });
});

/**
 * Dead letters never stall a partition, against the real Kafka, S3 server and Elasticsearch: letters
 * that together exceed the dead-letter topic's `max.message.bytes` all arrive (requests stay under
 * the limit), and letters Kafka refuses for good go to the S3 fallback prefix, counted; in both cases
 * the partition keeps committing to its end.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';
import type { Kafka } from 'kafkajs';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { createKafka } from '../../shared/kafka.js';
import type { LogRecord } from '../../shared/record.js';
import {
  aggregatorConfigFile,
  committedOffsets,
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
import { elasticsearchConfig, kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const BASE = Date.UTC(2026, 10, 21, 8, 0);

/** A record Elasticsearch refuses (log.offset is mapped as a number), with a message of `bytes` bytes. */
function refused(n: number, bytes: number): LogRecord {
  const record = logRecord(n, 'ns-d', BASE + n);
  record.message = `${String(n)} ${'y'.repeat(bytes)}`;
  return { ...record, log: { file: '/x', offset: 'not-a-number' } } as unknown as LogRecord;
}

async function createTopic(kafka: Kafka, topic: string, configEntries: { name: string; value: string }[] = []): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, configEntries }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

describe('aggregator dead letters', () => {
  const name = uniqueName('dl');
  const producer = new RecordProducer();
  const kafka = createKafka(kafkaConfig({ clientId: 'logship-it-admin' }), testLogger());
  const topics: string[] = [];
  let s3: S3Client;
  let es: Client;
  let aggregator: LogshipProcess | undefined;

  before(async () => {
    s3 = testS3Client();
    es = createElasticsearchClient(elasticsearchConfig());
    await producer.connect();
  });

  after(async () => {
    await aggregator?.stop();
    await producer.deleteTopics(topics);
    await producer.close();
    await deleteS3Prefix(s3, name);
    await deleteIndices(es, name);
    s3.destroy();
    await es.close();
  });

  async function run(suffix: string, dlqMessageMaxBytes: number, letters: LogRecord[]): Promise<{ ops: string; topic: string; dlq: string; prefix: string }> {
    const topic = `${name}.${suffix}`;
    const dlq = `${name}-${suffix}-deadletter`;
    const prefix = `${name}/${suffix}`;
    topics.push(topic, dlq);
    await createTopic(kafka, topic);
    await createTopic(kafka, dlq, [{ name: 'max.message.bytes', value: String(dlqMessageMaxBytes) }]);
    const good = Array.from({ length: 50 }, (_, i) => logRecord(10_000 + i, 'ns-d', BASE + i));
    await producer.send(topic, letters, 1);
    await producer.send(topic, good);
    aggregator = startAggregatorProcess(aggregatorConfigFile({ groupId: `${name}-${suffix}`, topics: [topic], s3Prefix: prefix, esIndexPrefix: `${name}-${suffix}`, deadLetterTopic: dlq }));
    const ops = await aggregator.opsUrl;
    const ends = await topicEndOffsets([topic]);
    await waitFor(
      'offsets committed to the end of the partition',
      async () => {
        const committed = await committedOffsets(`${name}-${suffix}`, [topic]);
        return [...ends].every(([key, end]) => committed.get(key) === end);
      },
      120_000,
      500,
    );
    const rows = (await readS3Objects(s3, prefix)).filter((o) => !o.key.includes('/_deadletter/')).reduce((n, o) => n + o.lines.length, 0);
    assert.equal(rows, letters.length + good.length, 'S3 has every record, the refused ones too');
    return { ops, topic, dlq, prefix };
  }

  it('writes letters exceeding the topic\'s max.message.bytes together in requests under it, and keeps committing', async () => {
    // 40 letters of ~20 KB: 800 KB in one request before; the topic takes 64 KiB per request.
    const letters = Array.from({ length: 40 }, (_, i) => refused(i, 20_000));
    const { dlq } = await run('big', 65_536, letters);
    const sources = (values: readonly Record<string, unknown>[]): Set<string> => new Set(values.filter((v) => v.reason === 'rejected').map((v) => JSON.stringify(v.source)));
    const received = await readTopic(dlq, '40 distinct rejected letters', (values) => sources(values).size >= letters.length);
    assert.equal(sources(received).size, letters.length);
    assert.equal(await aggregator?.stop(), 0);
    aggregator = undefined;
  });

  it('sends letters Kafka refuses for good to the S3 fallback prefix, counted, and keeps committing', async () => {
    // A topic whose message limit no letter fits: Kafka refuses them as too large.
    const letters = Array.from({ length: 5 }, (_, i) => refused(100 + i, 2_000));
    const { ops, prefix } = await run('tiny', 1_024, letters);
    const fallbackLines = (await readS3Objects(s3, `${prefix}/_deadletter`)).flatMap((o) => o.lines.map((l) => JSON.parse(l) as Record<string, unknown>));
    assert.equal(new Set(fallbackLines.map((l) => JSON.stringify(l.source))).size, letters.length, 'each refused letter in the fallback');
    assert.ok(fallbackLines.every((l) => l.reason === 'rejected' && l.sink === 'search'));
    assert.ok((await metricValue(ops, 'logship_aggregator_dead_letter_fallbacks_total')) >= letters.length);
    assert.equal(await aggregator?.stop(), 0);
    aggregator = undefined;
  });
});

/** Pre-loading Kafka with the backlog the aggregator drains, and reading its offsets. */
import { CompressionTypes, type Admin } from 'kafkajs';
import { createKafka, setGzipLevel } from '../shared/kafka.js';
import { kafkaConfig, testLogger } from '../test/helpers/stack.js';
import { messageCount, messagePlacement, messageRecords, messageValue, namespaceOf, partitionMessages } from './aggregator-records.js';
import { PARTITIONS, PRODUCE_REQUEST_BYTES, PRODUCE_TIMEOUT_MS, REUSE_TOPICS, TOPICS } from './aggregator-settings.js';
import { log } from './aggregator-util.js';

// ---- pre-loading Kafka ----------------------------------------------------------------------------

export async function createTopics(admin: Admin, topics: readonly string[]): Promise<void> {
  await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: PARTITIONS })), waitForLeaders: true });
}

/** Produces every message in order, one request at a time (so offsets follow message numbers). Returns the record bytes. */
export async function produceBacklog(topicNames: readonly string[], total: number): Promise<number> {
  setGzipLevel(1);
  const kafka = createKafka(kafkaConfig({ clientId: 'logship-bench-producer' }), testLogger());
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const deadline = Date.now() + PRODUCE_TIMEOUT_MS;
  let recordBytes = 0;
  try {
    const messages = messageCount(total);
    for (let m = 0; m < messages; ) {
      if (Date.now() > deadline) throw new Error(`pre-loading Kafka took longer than ${PRODUCE_TIMEOUT_MS} ms`);
      const byTopic = new Map<string, { key: string; value: Buffer; partition: number }[]>();
      let requestBytes = 0;
      for (; m < messages && requestBytes < PRODUCE_REQUEST_BYTES; m++) {
        const value = messageValue(m, total);
        const { topic, partition } = messagePlacement(m);
        const name = topicNames[topic] ?? '';
        let list = byTopic.get(name);
        if (list === undefined) byTopic.set(name, (list = []));
        list.push({ key: `uid-pod-${m % 12}`, value, partition });
        requestBytes += value.length;
      }
      // Each message's record bytes without the newlines, as the sinks count them.
      recordBytes += requestBytes;
      await producer.sendBatch({ topicMessages: [...byTopic].map(([topic, list]) => ({ topic, messages: list })), acks: -1, compression: CompressionTypes.GZIP });
    }
  } finally {
    await producer.disconnect();
  }
  return recordBytes - total;
}

export async function endOffsets(admin: Admin, topics: readonly string[]): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const topic of topics) for (const p of await admin.fetchTopicOffsets(topic)) result.set(`${topic}/${p.partition}`, Number(p.high));
  return result;
}

export async function committed(admin: Admin, groupId: string, topics: readonly string[]): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const t of await admin.fetchOffsets({ groupId, topics: [...topics] })) {
    for (const p of t.partitions) result.set(`${t.topic}/${p.partition}`, Number(p.offset));
  }
  return result;
}

// ---- one aggregator run ---------------------------------------------------------------------------

/** Pre-loaded topics: `total` records in messages of up to 256, 5 topics × 3 partitions. */
export interface Backlog {
  readonly total: number;
  readonly topics: readonly string[];
  readonly recordBytes: number;
  /** Records in the messages before each offset, per `topic/partition` (index = offset; the last entry is the partition's total). */
  readonly recordsBefore: ReadonlyMap<string, readonly number[]>;
}

/** Creates (noting them in `created`) and fills the topics `<prefix>.<namespace>`, or checks the ones a previous run kept (BENCH_REUSE_TOPICS). */
export async function backlog(admin: Admin, prefix: string, total: number, created: string[]): Promise<Backlog> {
  const topics = Array.from({ length: TOPICS }, (_, t) => `${prefix}.${namespaceOf(t)}`);
  const t0 = performance.now();
  const existing = new Set(await admin.listTopics());
  const reuse = REUSE_TOPICS !== undefined && topics.every((t) => existing.has(t));
  let recordBytes = 0;
  if (reuse) {
    for (let m = 0; m < messageCount(total); m++) recordBytes += messageValue(m, total).length - messageRecords(m, total);
  } else {
    await createTopics(admin, topics);
    created.push(...topics);
    recordBytes = await produceBacklog(topics, total);
  }
  const end = await endOffsets(admin, topics);
  const recordsBefore = new Map<string, number[]>();
  for (const [key, list] of partitionMessages(topics, total)) {
    if (end.get(key) !== list.length) throw new Error(`${key}: ${String(end.get(key))} messages in Kafka, ${list.length} expected (not a fresh topic?)`);
    const before = [0];
    for (const m of list) before.push((before[before.length - 1] ?? 0) + messageRecords(m, total));
    recordsBefore.set(key, before);
  }
  log(
    `${reuse ? 'reusing' : 'pre-loaded'} ${total} records (${(recordBytes / 2 ** 20).toFixed(0)} MiB, ${Math.round(recordBytes / total)} bytes each) in ${messageCount(total)} messages into ${prefix}.* (${TOPICS}×${PARTITIONS} partitions) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return { total, topics, recordBytes, recordsBefore };
}

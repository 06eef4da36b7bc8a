import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Admin } from 'kafkajs';
import { createKafka } from '../../shared/kafka.js';
import { kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

describe('Kafka (real broker) through shared/kafka', () => {
  const kafka = createKafka(kafkaConfig(), testLogger());
  const topic = uniqueName('it-kafka');
  let admin: Admin;

  before(async () => {
    admin = kafka.admin();
    await admin.connect();
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }), true);
  });

  after(async () => {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
  });

  it('produces with acks=all and consumes every message back, per-key order kept', async () => {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const count = 300;
    const sent = Array.from({ length: count }, (_, i) => ({ key: `pod-${i % 7}`, value: JSON.stringify({ n: i, message: `line ${i}` }) }));
    const acks = await producer.send({ topic, acks: -1, messages: sent });
    await producer.disconnect();
    assert.equal(acks.reduce((partitions, a) => partitions.add(a.partition), new Set<number>()).size > 1, true, 'keys spread over partitions');

    const offsets = await admin.fetchTopicOffsets(topic);
    assert.equal(offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0), count);

    const consumer = kafka.consumer({ groupId: uniqueName('it-group') });
    const received: { key: string; n: number; partition: number }[] = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message, partition }) => {
          const body = JSON.parse(message.value?.toString() ?? 'null') as { n: number };
          received.push({ key: message.key?.toString() ?? '', n: body.n, partition });
        },
      });
      await waitFor('all messages consumed', () => received.length >= count, 60_000);
    } finally {
      await consumer.disconnect();
    }
    assert.equal(received.length, count);
    assert.deepEqual(received.map((r) => r.n).sort((a, b) => a - b), sent.map((_, i) => i));
    const perKey = new Map<string, number[]>();
    for (const r of received) perKey.set(r.key, [...(perKey.get(r.key) ?? []), r.n]);
    for (const [key, ns] of perKey) assert.deepEqual(ns, [...ns].sort((a, b) => a - b), `order of ${key}`);
    // One key always lands on one partition.
    for (const key of perKey.keys()) assert.equal(new Set(received.filter((r) => r.key === key).map((r) => r.partition)).size, 1);
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Admin } from 'kafkajs';
import { AgentProducer, laneIndex, type OutgoingMessage } from '../../agent/kafka-producer.js';
import { createKafka } from '../../shared/kafka.js';
import { kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const LANES = 3;

/** What the consumer saw of one message; `producerId` is the id of the idempotent producer that wrote its batch. */
interface Received {
  key: string;
  n: number;
  partition: number;
  producerId: string;
}

describe('agent producer lanes (real Kafka)', () => {
  const kafka = createKafka(kafkaConfig(), testLogger());
  const topics = [uniqueName('it-lanes-a'), uniqueName('it-lanes-b')];
  let admin: Admin;

  before(async () => {
    admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true });
  });

  after(async () => {
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
  });

  it('sends through every lane, one lane per key: all messages once, per-key order, bounded buffer', async () => {
    // 13 pods: a count prime to the lanes, so that messages dealt out in turn would not happen to keep one lane per pod.
    const keys = Array.from({ length: 13 }, (_, i) => `0000000${i.toString(16)}-aaaa-4aaa-8aaa-aaaaaaaaaaaa`);
    assert.equal(new Set(keys.map((key) => laneIndex(key, LANES))).size, LANES, 'the keys cover every lane');
    const maxBufferedBytes = MIB;
    const producer = new AgentProducer(
      kafka,
      { maxBatchBytes: 64 * KIB, lingerMs: 5, maxBufferedBytes, compression: 'gzip', retryInitialDelayMs: 100, retryMaxDelayMs: 1_000, producers: LANES },
      testLogger(),
    );
    await producer.connect();
    const count = 3_000;
    const padding = 'p'.repeat(2 * KIB);
    const acked = new Array<number>(count).fill(0);
    let peakBuffered = 0;
    let messageBytes = 0;
    try {
      for (let n = 0; n < count; n++) {
        await producer.waitForCapacity();
        const key = keys[n % keys.length] as string;
        const value = JSON.stringify({ key, n, padding });
        messageBytes = Math.max(messageBytes, value.length);
        const message: OutgoingMessage = { topic: topics[n % 2] as string, key, value, size: value.length, onAck: () => (acked[n] = (acked[n] ?? 0) + 1) };
        producer.enqueue(message);
        peakBuffered = Math.max(peakBuffered, producer.bufferedBytes);
      }
      await producer.flush();
      assert.deepEqual(new Set(acked), new Set([1]), 'every message acknowledged exactly once');
      assert.equal(producer.stats.messagesAcked, count);
      assert.equal(producer.bufferedBytes, 0);
      assert.ok(peakBuffered <= maxBufferedBytes + messageBytes, `buffered at most the bound plus one message (${peakBuffered})`);
    } finally {
      await producer.close();
    }

    const received: Received[] = [];
    const consumer = kafka.consumer({ groupId: uniqueName('it-lanes-group') });
    await consumer.connect();
    try {
      await consumer.subscribe({ topics, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message, partition }) => {
          const body = JSON.parse(message.value?.toString() ?? 'null') as { key: string; n: number };
          // kafkajs decodes each record with its batch's header, producer id included (not in its types).
          const { batchContext } = message as unknown as { batchContext: { producerId: string } };
          received.push({ key: body.key, n: body.n, partition, producerId: batchContext.producerId });
        },
      });
      await waitFor('every message consumed', () => received.length >= count, 60_000);
    } finally {
      await consumer.disconnect();
    }

    assert.equal(received.length, count, 'nothing duplicated');
    assert.deepEqual(received.map((r) => r.n).sort((a, b) => a - b), acked.map((_, n) => n));
    assert.equal(new Set(received.map((r) => r.producerId)).size, LANES, 'one idempotent producer per lane wrote');
    for (const key of keys) {
      const ofKey = received.filter((r) => r.key === key);
      assert.equal(new Set(ofKey.map((r) => r.producerId)).size, 1, `${key} went through one lane`);
      for (const topic of [0, 1]) {
        const inTopic = ofKey.filter((r) => r.n % 2 === topic).map((r) => r.n);
        assert.deepEqual(inTopic, [...inTopic].sort((a, b) => a - b), `order of ${key} in topic ${topic}`);
      }
    }
  });
});

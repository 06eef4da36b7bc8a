/**
 * The producer's handling of one topic that refuses messages, against a scripted stand-in for
 * kafkajs (pure logic: which messages are acknowledged, held, split or cut, in which order). The real
 * broker's behaviour is covered by test/integration/agent-topic-stall.test.ts.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import kafkajs, { type Kafka, type ProducerBatch } from 'kafkajs';
import { AgentProducer, classifySendError, cutRecord, splitMessage, type OutgoingMessage, type ProducerOptions } from '../../../agent/kafka-producer.js';
import { createLogger } from '../../../shared/logger.js';
import { waitFor } from '../../helpers/stack.js';

const { KafkaJSProtocolError, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSConnectionError } = kafkajs;
const silent = createLogger({ name: 'test', level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function protocolError(type: string, retriable: boolean): Error {
  return new KafkaJSProtocolError({ message: type.toLowerCase(), type, code: 0, retriable } as unknown as Error);
}

/** What kafkajs throws once its own retries are spent (retriable errors) or at once (non-retriable ones). */
function asKafkajsThrows(error: Error & { retriable?: boolean }): Error {
  return error.retriable ? new KafkaJSNumberOfRetriesExceeded(error, { retryCount: 2, retryTime: 100 }) : new (KafkaJSNonRetriableError as unknown as new (e: Error, options: { cause: Error }) => Error)(error, { cause: error });
}

/** A broker as the producer sees it: topics that exist, a size limit per topic, and what it stored. */
class FakeBroker {
  readonly topics = new Map<string, { maxMessageBytes: number }>();
  readonly stored = new Map<string, string[]>();
  readonly requests: string[][] = [];
  down = false;
  clients = 0;

  kafka(): Kafka {
    return {
      producer: () => {
        this.clients++;
        return {
          events: { CONNECT: 'connect', DISCONNECT: 'disconnect' },
          on: () => undefined,
          connect: () => Promise.resolve(),
          disconnect: () => Promise.resolve(),
          sendBatch: (batch: ProducerBatch) => this.send(batch),
        };
      },
    } as unknown as Kafka;
  }

  private async send(batch: ProducerBatch): Promise<void> {
    await Promise.resolve();
    const topicMessages = batch.topicMessages ?? [];
    this.requests.push(topicMessages.map((t) => t.topic));
    if (this.down) throw asKafkajsThrows(new KafkaJSConnectionError('Connection error: ECONNREFUSED'));
    for (const { topic, messages } of topicMessages) {
      const config = this.topics.get(topic);
      if (!config) throw asKafkajsThrows(protocolError('UNKNOWN_TOPIC_OR_PARTITION', true));
      if (messages.some((m) => String(m.value).length > config.maxMessageBytes)) throw asKafkajsThrows(protocolError('MESSAGE_TOO_LARGE', false));
    }
    for (const { topic, messages } of topicMessages) {
      const stored = this.stored.get(topic) ?? [];
      for (const m of messages) stored.push(String(m.value));
      this.stored.set(topic, stored);
    }
  }

  /** The records (NDJSON lines) stored in a topic, in order. */
  records(topic: string): string[] {
    return (this.stored.get(topic) ?? []).flatMap((value) => value.split('\n').filter((line) => line !== ''));
  }
}

const OPTIONS: ProducerOptions = { maxBatchBytes: 64 * 1024, lingerMs: 1, maxBufferedBytes: 1024 * 1024, compression: 'none', retryInitialDelayMs: 5, retryMaxDelayMs: 20, producers: 1 };

function message(topic: string, key: string, value: string, acks: Map<string, number>): OutgoingMessage {
  return { topic, key, value, size: value.length, onAck: () => acks.set(value, (acks.get(value) ?? 0) + 1) };
}

describe('classifySendError', () => {
  it('finds the kafkajs error type under the wrappers kafkajs adds, and tells topic errors from the rest', () => {
    assert.deepEqual(classifySendError(asKafkajsThrows(protocolError('UNKNOWN_TOPIC_OR_PARTITION', true))), { reason: 'unknown_topic', topicScoped: true, renewClient: true, type: 'UNKNOWN_TOPIC_OR_PARTITION' });
    assert.equal(classifySendError(asKafkajsThrows(protocolError('TOPIC_AUTHORIZATION_FAILED', false))).reason, 'not_authorized');
    const tooLarge = classifySendError(asKafkajsThrows(protocolError('RECORD_LIST_TOO_LARGE', false)));
    assert.deepEqual([tooLarge.reason, tooLarge.topicScoped, tooLarge.renewClient], ['message_too_large', true, false], 'same client: the healthy messages resent are duplicates the broker recognises');
    assert.equal(classifySendError(protocolError('LEADER_NOT_AVAILABLE', true)).reason, 'unknown_topic');
    const connection = classifySendError(asKafkajsThrows(new KafkaJSConnectionError('Connection error')));
    assert.deepEqual([connection.reason, connection.topicScoped, connection.renewClient], ['other', false, false]);
    assert.equal(classifySendError(protocolError('OUT_OF_ORDER_SEQUENCE_NUMBER', false)).renewClient, true);
    assert.equal(classifySendError(new Error('plain')).reason, 'other');
  });
});

describe('splitMessage and cutRecord', () => {
  it('splits at the record boundary nearest the middle; the halves share one acknowledgement and the size', () => {
    let acked = 0;
    const value = Buffer.from('{"a":1}\n{"b":22}\n{"c":333}\n');
    const halves = splitMessage({ topic: 't', key: 'k', value, size: value.length, onAck: () => acked++ });
    assert.ok(halves);
    assert.equal(Buffer.concat(halves.map((h) => h.value as Buffer)).toString(), value.toString());
    assert.ok(halves.every((h) => (h.value as Buffer).toString().endsWith('\n')));
    assert.equal(halves[0].size + halves[1].size, value.length);
    halves[0].onAck();
    assert.equal(acked, 0);
    halves[1].onAck();
    assert.equal(acked, 1);
    assert.equal(splitMessage({ topic: 't', key: 'k', value: '{"a":1}\n', size: 8, onAck: () => undefined }), undefined, 'one record: nothing to split');
  });

  it('cuts a single record\'s message in half, flags it truncated once, keeps the other fields', () => {
    const record = { '@timestamp': 't', message: `${'é'.repeat(10)}😀${'x'.repeat(9)}`, stream: 'stdout', log: { file: '/f', offset: 7, flags: ['multiline'] } };
    const cut = cutRecord({ topic: 't', key: 'k', value: `${JSON.stringify(record)}\n`, size: 99, onAck: () => undefined });
    assert.ok(cut);
    const text = (cut.value as Buffer).toString();
    assert.ok(text.endsWith('\n'));
    const parsed = JSON.parse(text) as typeof record;
    assert.equal(parsed.message, 'é'.repeat(10), 'cut before the surrogate pair, never inside it');
    assert.deepEqual(parsed.log, { file: '/f', offset: 7, flags: ['multiline', 'truncated'] });
    assert.equal(cut.size, 99, 'accounts for what the original held');
    const again = cutRecord(cut);
    assert.deepEqual((JSON.parse((again?.value as Buffer).toString()) as typeof record).log.flags, ['multiline', 'truncated']);
    assert.equal(cutRecord({ topic: 't', key: 'k', value: '{"message":""}\n', size: 1, onAck: () => undefined }), undefined);
  });
});

describe('AgentProducer with a topic that refuses messages', () => {
  it('acknowledges the healthy topic of a mixed batch, holds the unknown one aside (outside the buffer bound), and ships it in order once it exists', async () => {
    const broker = new FakeBroker();
    broker.topics.set('good', { maxMessageBytes: 1e6 });
    const producer = new AgentProducer(broker.kafka(), OPTIONS, silent);
    await producer.connect();
    const acks = new Map<string, number>();
    const bad = Array.from({ length: 20 }, (_, i) => message('missing', `pod-${i % 3}`, `{"n":${i},"t":"missing"}\n`, acks));
    const good = Array.from({ length: 20 }, (_, i) => message('good', `pod-g${i % 3}`, `{"n":${i},"t":"good"}\n`, acks));
    for (let i = 0; i < 20; i++) {
      producer.enqueue(bad[i] as OutgoingMessage);
      producer.enqueue(good[i] as OutgoingMessage);
    }
    await producer.flush();
    assert.deepEqual(broker.records('good'), good.map((m) => String(m.value).trim()), 'every healthy message, in order');
    assert.ok(good.every((m) => acks.get(String(m.value)) === 1));
    assert.ok(bad.every((m) => !acks.has(String(m.value))), 'nothing of the missing topic acknowledged');
    assert.ok(producer.isStalled('missing'));
    assert.ok(!producer.isStalled('good'));
    assert.equal(producer.bufferedBytes, 0, 'held bytes leave the shared bound');
    assert.equal(producer.stalledBytes, bad.reduce((sum, m) => sum + m.size, 0));
    assert.deepEqual(producer.stalledTopics().map((s) => [s.topic, s.reason, s.messages]), [['missing', 'unknown_topic', 20]]);
    assert.ok(producer.stats.sendErrors.unknown_topic >= 2, 'counted by reason');

    // More of both while stalled: the healthy one flows; the stalled one queues behind what it holds.
    const later = Array.from({ length: 5 }, (_, i) => message('missing', `pod-${i % 3}`, `{"n":${20 + i},"t":"missing"}\n`, acks));
    const laterGood = message('good', 'pod-g0', '{"n":20,"t":"good"}\n', acks);
    for (const m of later) producer.enqueue(m);
    producer.enqueue(laterGood);
    await producer.flush();
    assert.equal(acks.get(String(laterGood.value)), 1);
    assert.equal(producer.stalledTopics()[0]?.messages, 25);

    broker.topics.set('missing', { maxMessageBytes: 1e6 });
    await waitFor('the held messages shipped', () => !producer.isStalled('missing'), 5_000, 5);
    assert.deepEqual(broker.records('missing'), [...bad, ...later].map((m) => String(m.value).trim()), 'all of them, in order, once');
    assert.ok([...bad, ...later].every((m) => acks.get(String(m.value)) === 1));
    assert.equal(producer.stalledBytes, 0);
    await producer.close();
  });

  it('with several lanes and messages arriving throughout, keeps every pod\'s order and acknowledges each message once across a stall', async () => {
    const broker = new FakeBroker();
    broker.topics.set('steady', { maxMessageBytes: 1e6 });
    const producer = new AgentProducer(broker.kafka(), { ...OPTIONS, producers: 3, maxBatchBytes: 2_000, maxBufferedBytes: 8_000 }, silent);
    const acks = new Map<string, number>();
    const keys = Array.from({ length: 11 }, (_, i) => `pod-${i}`);
    const sent: OutgoingMessage[] = [];
    for (let n = 0; n < 3_000; n++) {
      if (n === 1_500) broker.topics.set('late', { maxMessageBytes: 1e6 });
      await producer.waitForCapacity();
      const key = keys[n % keys.length] as string;
      const topic = n % 2 === 0 ? 'steady' : 'late';
      const m = message(topic, key, `{"key":"${key}","n":${n}}\n`, acks);
      sent.push(m);
      producer.enqueue(m);
      if (n % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await producer.flush();
    await waitFor('nothing held', () => producer.stalledTopics().length === 0, 5_000, 5);
    assert.ok(sent.every((m) => acks.get(String(m.value)) === 1), 'each message acknowledged once');
    for (const topic of ['steady', 'late']) {
      const records = broker.records(topic).map((line) => JSON.parse(line) as { key: string; n: number });
      assert.equal(records.length, 1_500, `${topic}: every message stored once`);
      for (const key of keys) {
        const ns = records.filter((r) => r.key === key).map((r) => r.n);
        assert.deepEqual(ns, [...ns].sort((x, y) => x - y), `${topic} ${key}: in order`);
      }
    }
    assert.ok(producer.stats.sendErrors.unknown_topic > 0, 'the late topic did stall');
    assert.equal(producer.bufferedBytes, 0);
    await producer.close();
  });

  it('a connection failure stalls no topic: the batch waits and is sent again as it was', async () => {
    const broker = new FakeBroker();
    broker.topics.set('a', { maxMessageBytes: 1e6 });
    broker.topics.set('b', { maxMessageBytes: 1e6 });
    broker.down = true;
    const producer = new AgentProducer(broker.kafka(), OPTIONS, silent);
    const acks = new Map<string, number>();
    producer.enqueue(message('a', 'k1', '{"a":1}\n', acks));
    producer.enqueue(message('b', 'k2', '{"b":1}\n', acks));
    const flushed = producer.flush();
    await waitFor('a few failed attempts', () => broker.requests.length >= 3, 5_000, 5);
    assert.equal(producer.stalledTopics().length, 0);
    assert.ok(producer.bufferedBytes > 0, 'still counted in the buffer bound: the readers wait');
    broker.down = false;
    await flushed;
    assert.deepEqual([acks.get('{"a":1}\n'), acks.get('{"b":1}\n')], [1, 1]);
    assert.ok(broker.requests.every((topics) => topics.join() === 'a,b'), 'each attempt the same batch');
    assert.equal(producer.stats.sendErrors.other, broker.requests.length - 1);
    await producer.close();
  });

  it('splits messages the broker finds too large at record boundaries, cuts a single record, and never retries them as they were', async () => {
    const broker = new FakeBroker();
    broker.topics.set('small', { maxMessageBytes: 200 });
    const producer = new AgentProducer(broker.kafka(), OPTIONS, silent);
    const acks = new Map<string, number>();
    const record = (n: number, body: string): string => JSON.stringify({ message: body, log: { offset: n } });
    // Two messages of 5 records (~70 bytes each, 350 a message): each split until its parts fit.
    const grouped = [0, 1].map((m) => Array.from({ length: 5 }, (_, i) => `${record(m * 5 + i, `line ${m * 5 + i} ${'z'.repeat(30)}`)}\n`).join(''));
    // One record of 700 bytes: cut until it fits, and flagged.
    const huge = `${record(10, 'y'.repeat(700))}\n`;
    for (const value of [...grouped, huge]) producer.enqueue(message('small', 'pod', value, acks));
    await producer.flush();
    const stored = broker.records('small').map((line) => JSON.parse(line) as { message: string; log: { offset: number; flags?: string[] } });
    assert.deepEqual(stored.map((r) => r.log.offset), Array.from({ length: 11 }, (_, i) => i), 'every record once, in order');
    assert.ok(stored.slice(0, 10).every((r, i) => r.message === `line ${i} ${'z'.repeat(30)}` && r.log.flags === undefined));
    const cut = stored[10];
    assert.ok(cut && cut.message.length > 0 && cut.message.length < 200 && /^y+$/.test(cut.message));
    assert.deepEqual(cut.log.flags, ['truncated']);
    assert.ok([...grouped, huge].every((v) => acks.get(v) === 1), 'each original acknowledged once');
    assert.ok(producer.stats.messagesSplit >= 2);
    assert.equal(producer.stats.recordsTruncated, 3, '700 → 350 → 175 → 87 characters');
    assert.equal(producer.stalledTopics().length, 0, 'too large is handled in place, nothing stalls');
    assert.equal(broker.clients, 1, 'on the lane\'s own client');
    assert.ok(broker.requests.length < 30, `a bounded number of attempts (${broker.requests.length})`);
    await producer.close();
  });
});

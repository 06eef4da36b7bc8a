/**
 * One topic that cannot be produced to never stops the node (real Kafka, the real agent binary):
 * - a topic that does not exist while topic creation is off (`kafka.autoCreateTopics: false`: the
 *   broker answers UNKNOWN_TOPIC_OR_PARTITION, as a broker with `auto.create.topics.enable=false`
 *   does), with a backlog far larger than the producer's buffer;
 * - a topic whose `max.message.bytes` is smaller than the agent's messages and than some records;
 * next to two healthy topics.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Admin } from 'kafkajs';
import { deleteTopics } from '../../scripts/stack/topics.js';
import { createKafka } from '../../shared/kafka.js';
import { agentConfigFile, appendLines, cri, makeRoot, metricValue, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const PADDING = 'p'.repeat(200);
/** The small topic's limit on a (compressed) record batch. */
const SMALL_TOPIC_MAX_MESSAGE_BYTES = 4 * KIB;

describe('agent: one topic that cannot be produced to, next to healthy ones (real Kafka)', () => {
  const topicPrefix = uniqueName('it-agent-stall');
  const goodTopics = [`${topicPrefix}.ns-good-a`, `${topicPrefix}.ns-good-b`];
  const smallTopic = `${topicPrefix}.ns-small`;
  const missingTopic = `${topicPrefix}.ns-missing`;
  const healthy = new RecordCollector();
  const late = new RecordCollector();
  let admin: Admin | undefined;
  let agent: AgentProcess | undefined;

  before(async () => {
    admin = createKafka(kafkaConfig({ clientId: 'logship-it-stall' }), testLogger()).admin();
    await admin.connect();
    await admin.createTopics({
      topics: [{ topic: smallTopic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: String(SMALL_TOPIC_MAX_MESSAGE_BYTES) }] }],
      waitForLeaders: true,
    });
    await healthy.start([...goodTopics, smallTopic]);
  });
  after(async () => {
    await agent?.kill9();
    await healthy.stop([...goodTopics, smallTopic]);
    await late.stop([missingTopic]);
    if (admin) await deleteTopics(admin, { names: [missingTopic] }).catch(() => undefined);
    await admin?.disconnect();
  });

  it('keeps shipping the healthy topics, counts and shows the stalled one, ships it once it exists, and fits messages to a small topic', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const config = agentConfigFile({
      root,
      stateDir,
      topicPrefix,
      extra: {
        kafka: {
          brokers: kafkaConfig().brokers,
          topicTemplate: `${topicPrefix}.{namespace}`,
          autoCreateTopics: false,
          maxMessageBytes: 16 * KIB,
          maxBatchBytes: 256 * KIB,
          maxBufferedBytes: MIB,
          producers: 2,
          retryInitialDelayMs: 100,
          retryMaxDelayMs: 1_000,
        },
      },
    });
    const file = (namespace: string): string => join(podDir(root, namespace, `pod-${namespace}`, `${randomBytes(4).toString('hex')}-aaaa-4aaa-8aaa-aaaaaaaaaaaa`, 'app').dir, '0.log');
    const goodFiles = ['ns-good-a', 'ns-good-b'].map(file);
    const missingFile = file('ns-missing');
    const smallFile = file('ns-small');

    // The missing topic's backlog: ~30 MiB of records, 30 times the producer's buffer.
    const missingLines = 40_000;
    for (let start = 0; start < missingLines; start += 10_000) appendLines(missingFile, Array.from({ length: 10_000 }, (_, i) => cri(`missing-${start + i} ${PADDING}`)));
    let goodWritten = 0;
    const writeGood = (count: number): void => {
      for (const [f, path] of goodFiles.entries()) appendLines(path, Array.from({ length: count }, (_, i) => cri(`good-${f}-${goodWritten + i} ${PADDING}`)));
      goodWritten += count;
    };
    writeGood(2_000);
    // The small topic: short incompressible lines (grouped messages over its limit once compressed),
    // and a few single lines larger than its limit on their own.
    const shortLines = Array.from({ length: 400 }, (_, i) => `short-${i} ${randomBytes(60).toString('base64')}`);
    const longLines = Array.from({ length: 4 }, (_, i) => `long-${i} ${randomBytes(9 * KIB).toString('base64')}`);
    appendLines(smallFile, [...shortLines.slice(0, 200), ...longLines, ...shortLines.slice(200)].map((m) => cri(m)));

    agent = startAgentProcess(config);
    const opsUrl = await agent.opsUrl;
    const goodMessages = (): Set<string> => new Set(healthy.records.filter((r) => goodTopics.includes(r.topic)).map((r) => r.record.message));
    const diagnose = async (): Promise<void> => {
      t.diagnostic(`good ${goodMessages().size}/${goodWritten * 2}, stalled ${await metricValue(opsUrl, 'logship_agent_stalled_topics')}, buffered ${await metricValue(opsUrl, 'logship_agent_producer_buffered_bytes')}`);
      t.diagnostic(agent?.logs().split('\n').filter((l) => /"level":(40|50)|warn|error/i.test(l)).slice(-6).map((l) => l.slice(0, 400)).join('\n') ?? '');
    };

    await waitFor('the missing topic stalled', async () => (await metricValue(opsUrl, 'logship_agent_stalled_topics')) === 1, 60_000, 200).catch(async (e: unknown) => {
      await diagnose();
      throw e;
    });
    assert.equal(await metricValue(opsUrl, 'logship_agent_topic_stalled', { topic: missingTopic, reason: 'unknown_topic' }), 1);
    const ready = (await (await fetch(`${opsUrl}/readyz`)).json()) as { details?: { stalledTopics?: { topic: string; reason: string }[] } };
    assert.deepEqual(ready.details?.stalledTopics?.map((s) => [s.topic, s.reason]), [[missingTopic, 'unknown_topic']], '/readyz names the stalled topic');

    // The healthy pods' lines keep arriving, those written before and after the stall.
    await waitFor('the first healthy lines', () => goodMessages().size >= goodWritten * 2, 60_000, 200).catch(async (e: unknown) => {
      await diagnose();
      throw e;
    });
    for (let round = 0; round < 3; round++) {
      writeGood(1_000);
      await waitFor(`healthy lines of round ${round} while the topic is stalled`, () => goodMessages().size >= goodWritten * 2, 30_000, 100);
    }
    assert.equal(await metricValue(opsUrl, 'logship_agent_stalled_topics'), 1, 'still stalled: nothing created the topic');
    assert.ok((await metricValue(opsUrl, 'logship_agent_kafka_send_errors_total', { reason: 'unknown_topic' })) > 0, 'counted by reason');
    const stalledBytes = await metricValue(opsUrl, 'logship_agent_stalled_bytes');
    assert.ok(stalledBytes > 0 && stalledBytes <= 2 * MIB, `held bytes bounded by what the buffer held when it stalled (${stalledBytes})`);
    assert.ok((await metricValue(opsUrl, 'logship_agent_unshipped_bytes')) > 5 * MIB, 'the rest of the backlog waits on disk, unread');

    // An operator creates the topic: every line of it arrives.
    await admin?.createTopics({ topics: [{ topic: missingTopic, numPartitions: 3 }], waitForLeaders: true });
    await late.start([missingTopic]);
    await waitFor(`all ${missingLines} lines of the topic once created`, () => new Set(late.records.map((r) => r.record.message)).size >= missingLines, 120_000, 500).catch(async (e: unknown) => {
      t.diagnostic(`received ${new Set(late.records.map((r) => r.record.message)).size}`);
      await diagnose();
      throw e;
    });
    const missingReceived = new Set(late.records.map((r) => r.record.message));
    assert.equal(missingReceived.size, missingLines);
    for (let i = 0; i < missingLines; i += 997) assert.ok(missingReceived.has(`missing-${i} ${PADDING}`), `line ${i}`);
    await waitFor('no topic stalled any more', async () => (await metricValue(opsUrl, 'logship_agent_stalled_topics')) === 0, 10_000, 200);
    // One pod, one key, one partition: each line's first arrival is in file order.
    const seen = new Set<number>();
    let highest = -1;
    for (const r of late.records) {
      const n = Number(/missing-(\d+)/.exec(r.record.message)?.[1]);
      if (seen.has(n)) continue;
      assert.ok(n > highest, `line ${n} after line ${highest}`);
      seen.add(n);
      highest = n;
    }

    // The small topic: every line, the long ones cut and flagged; none retried forever.
    const smallRecords = (): typeof healthy.records => healthy.records.filter((r) => r.topic === smallTopic);
    await waitFor('every line of the small topic', () => new Set(smallRecords().map((r) => r.record.log.offset)).size >= shortLines.length + longLines.length, 30_000, 200);
    const byMessage = new Map(smallRecords().map((r) => [r.record.message.split(' ')[0] as string, r.record]));
    for (const line of shortLines) {
      const record = byMessage.get(line.split(' ')[0] as string);
      assert.equal(record?.message, line);
      assert.ok(!record.log.flags?.includes('truncated'));
    }
    for (const line of longLines) {
      const record = byMessage.get(line.split(' ')[0] as string);
      assert.ok(record, `${line.slice(0, 7)} arrived`);
      assert.ok(record.message.length < line.length && line.startsWith(record.message), 'cut, a prefix of the line');
      assert.ok(record.log.flags?.includes('truncated'), 'flagged truncated');
    }
    assert.ok((await metricValue(opsUrl, 'logship_agent_kafka_send_errors_total', { reason: 'message_too_large' })) > 0);
    assert.ok((await metricValue(opsUrl, 'logship_agent_kafka_messages_split_total')) > 0, 'grouped messages were split');
    assert.ok((await metricValue(opsUrl, 'logship_agent_records_cut_to_fit_broker_total')) >= longLines.length);
    assert.equal(await metricValue(opsUrl, 'logship_agent_records_dropped_too_large_total'), 0);
    assert.equal(agent.child.exitCode, null, 'the agent kept running');
  });
});

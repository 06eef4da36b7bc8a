import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { agentConfigFile, appendLines, cri, makeRoot, metricValue, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { startIsolatedAgent, type IsolatedAgent } from '../helpers/isolated-network.js';
import { kafkaConfig, rssBytes, startStackServer, stopStackServer, uniqueName, waitFor } from '../helpers/stack.js';
import { CHECKPOINT_FILE, type Checkpoint } from '../../agent/checkpoint-store.js';

const MIB = 1024 * 1024;
const OUTAGE_MS = 30_000;
const PADDING = 'x'.repeat(240);

describe('agent: Kafka stopped for 30 s mid-run (real Kafka)', () => {
  const topicPrefix = uniqueName('it-agent-outage');
  const topic = `${topicPrefix}.ns-outage`;
  const collector = new RecordCollector();
  let agent: AgentProcess | undefined;
  let kafkaDown = false;

  before(() => collector.start([topic]));
  after(async () => {
    if (kafkaDown) await startStackServer('kafka');
    await agent?.kill9();
    await collector.stop([topic]);
  });

  it('waits with bounded memory while lines pile up, then ships them all', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const maxBufferedBytes = 4 * MIB;
    const config = agentConfigFile({
      root,
      stateDir,
      topicPrefix,
      extra: {
        kafka: {
          brokers: ['127.0.0.1:19092'],
          topicTemplate: `${topicPrefix}.{namespace}`,
          maxMessageBytes: 256 * 1024,
          maxBatchBytes: MIB,
          maxBufferedBytes,
          retryInitialDelayMs: 100,
          retryMaxDelayMs: 1_000,
          requestTimeoutMs: 5_000,
          connectionTimeoutMs: 1_000,
        },
      },
    });
    const files = [0, 1].map((i) => join(podDir(root, 'ns-outage', `pod-${i}`, `1000000${i}-bbbb-4bbb-8bbb-bbbbbbbbbbbb`, 'app').dir, '0.log'));
    let next = 0;
    const write = (count: number): void => {
      for (const [i, file] of files.entries()) {
        appendLines(file, Array.from({ length: count }, (_, n) => cri(`m-${i}-${next + n} ${PADDING}`)));
      }
      next += count;
    };

    write(10_000);
    agent = startAgentProcess(config);
    const opsUrl = await agent.opsUrl;
    const pid = agent.child.pid ?? 0;
    await collector.waitForCount(20_000, 60_000);
    const baselineRss = rssBytes(pid);

    await stopStackServer('kafka');
    kafkaDown = true;
    const outageStart = Date.now();
    let peakRss = baselineRss;
    let peakBuffered = 0;
    let peakUnshipped = 0;
    while (Date.now() - outageStart < OUTAGE_MS) {
      if (next < 210_000) write(10_000);
      await sleep(500);
      peakRss = Math.max(peakRss, rssBytes(pid));
      peakBuffered = Math.max(peakBuffered, await metricValue(opsUrl, 'logship_agent_producer_buffered_bytes'));
      peakUnshipped = Math.max(peakUnshipped, await metricValue(opsUrl, 'logship_agent_unshipped_bytes'));
    }
    const writtenDuringOutage = (next - 10_000) * files.length;
    assert.equal(agent.child.exitCode, null, 'the agent keeps running while Kafka is away');
    await startStackServer('kafka');
    kafkaDown = false;

    const total = next * files.length;
    await waitFor(`all ${total} lines after Kafka came back`, () => new Set(collector.records.map((r) => r.record.message)).size >= total, 180_000, 500).catch(
      async (error: unknown) => {
        t.diagnostic(`received ${collector.records.length}; agent acked ${await metricValue(opsUrl, 'logship_agent_kafka_messages_acked_total')} messages, produced ${await metricValue(opsUrl, 'logship_agent_records_produced_total')} records, unshipped ${await metricValue(opsUrl, 'logship_agent_unshipped_bytes')}, buffered ${await metricValue(opsUrl, 'logship_agent_producer_buffered_bytes')}`);
        t.diagnostic(agent?.logs().split('\n').filter((l) => /warn|error/i.test(l) && !/partitioner/.test(l)).slice(-8).map((l) => l.slice(0, 400)).join('\n') ?? '');
        throw error;
      },
    );
    const distinct = new Set(collector.records.map((r) => r.record.message));
    assert.equal(distinct.size, total);
    for (let i = 0; i < next; i += 997) assert.ok(distinct.has(`m-0-${i} ${PADDING}`) && distinct.has(`m-1-${i} ${PADDING}`), `line ${i}`);

    t.diagnostic(
      `outage ${OUTAGE_MS / 1000}s: ${writtenDuringOutage} lines (${Math.round((writtenDuringOutage * 300) / MIB)} MiB) written; ` +
        `RSS ${Math.round(baselineRss / MIB)} → peak ${Math.round(peakRss / MIB)} MiB; producer buffer peak ${Math.round(peakBuffered / 1024)} KiB; backlog peak ${Math.round(peakUnshipped / MIB)} MiB`,
    );
    // The backlog is on disk, not in memory: the agent saw it, held at most its buffer bound, and its
    // memory grew by far less than what piled up (~120 MiB of lines, ~2.5x that as records).
    assert.ok(peakUnshipped > 60 * MIB, `backlog metric saw the pile-up (${peakUnshipped})`);
    assert.ok(peakBuffered <= maxBufferedBytes + MIB, `producer buffer stayed bounded (${peakBuffered})`);
    assert.ok(peakRss - baselineRss < 100 * MIB, `memory stayed flat: grew ${Math.round((peakRss - baselineRss) / MIB)} MiB`);
  });
});

describe('agent: SIGTERM while Kafka is unreachable (real Kafka, cut for the agent alone)', () => {
  const topicPrefix = uniqueName('it-agent-unreachable');
  const topic = `${topicPrefix}.ns-cut`;
  const collector = new RecordCollector();
  let agent: IsolatedAgent | undefined;

  before(() => collector.start([topic]));
  after(async () => {
    await agent?.kill9();
    await agent?.close();
    await collector.stop([topic]);
  });

  it('writes the checkpoints of what Kafka acknowledged and exits within its shutdown timeout', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const brokers = kafkaConfig().brokers;
    const kafkaPort = Number((brokers[0] ?? '').split(':')[1]);
    // Inside its own network namespace every port is free: a fixed one for the ops server.
    const opsPort = 9102;
    const timeoutMs = 6_000;
    const config = agentConfigFile({
      root,
      stateDir,
      topicPrefix,
      extra: {
        ops: { host: '127.0.0.1', port: opsPort },
        kafka: {
          brokers,
          topicTemplate: `${topicPrefix}.{namespace}`,
          maxBatchBytes: 256 * 1024,
          maxBufferedBytes: MIB,
          retryInitialDelayMs: 100,
          retryMaxDelayMs: 1_000,
          requestTimeoutMs: 2_000,
          connectionTimeoutMs: 500,
        },
        // Never on the interval: only the shutdown writes checkpoints in this test.
        checkpoints: { dir: stateDir, intervalMs: 3_600_000 },
        shutdown: { timeoutMs },
      },
    });
    const file = join(podDir(root, 'ns-cut', 'pod-0', '20000000-cccc-4ccc-8ccc-cccccccccccc', 'app').dir, '0.log');
    appendLines(file, Array.from({ length: 5_000 }, (_, n) => cri(`before-${n} ${PADDING}`)));
    const acknowledgedSize = statSync(file).size;

    agent = await startIsolatedAgent(config, kafkaPort, opsPort);
    const opsUrl = await agent.opsUrl;
    await collector.waitForCount(5_000, 60_000);
    await waitFor('every line acknowledged to the agent', async () => (await metricValue(opsUrl, 'logship_agent_unshipped_bytes')) === 0, 30_000, 100);

    agent.cut();
    // Far more than the producer's buffer: reading ends up waiting for room that never comes.
    appendLines(file, Array.from({ length: 20_000 }, (_, n) => cri(`after-${n} ${PADDING}`)));
    await waitFor('the buffer full, reading waiting for Kafka', async () => (await metricValue(opsUrl, 'logship_agent_producer_buffered_bytes')) >= MIB, 30_000, 100);
    // A first start writes its state once at start (before anything was read); nothing since.
    const before = existsSync(join(stateDir, CHECKPOINT_FILE)) ? (JSON.parse(readFileSync(join(stateDir, CHECKPOINT_FILE), 'utf8')) as { checkpoints: Checkpoint[] }).checkpoints : [];
    assert.ok(before.every((c) => c.offset < acknowledgedSize), `no checkpoint covers the acknowledged lines yet: ${JSON.stringify(before.map((c) => c.offset))}`);

    const stopped = agent.stop().then((exitCode) => ({ code: exitCode }));
    let exit: { code: number | null } | undefined;
    void stopped.then((value) => (exit = value));
    const code = await waitFor('the agent to exit after SIGTERM', () => exit, 4 * timeoutMs, 100);
    const logs = agent.logs();
    const finished = logs.split('\n').filter((l) => l.includes('"shutdown finished"')).map((l) => JSON.parse(l) as { completed: string[]; failed: { name: string }[]; timedOut?: string; elapsedMs: number });
    t.diagnostic(`exit ${String(code.code)}; ${JSON.stringify(finished[0])}`);
    assert.equal(finished.length, 1, 'the shutdown ran to its end');
    const result = finished[0] as (typeof finished)[number];
    assert.equal(result.timedOut, undefined, 'within shutdown.timeoutMs');
    assert.ok(result.completed.includes('stop reading') && result.completed.includes('write checkpoints') && result.completed.includes('write final checkpoints'), `steps done: ${result.completed.join(', ')}`);
    assert.deepEqual(result.failed.map((f) => f.name), ['flush producer'], 'only the flush, which Kafka could not take, gave up');
    assert.equal(code.code, 1, 'an incomplete flush is a non-zero exit');

    const written = JSON.parse(readFileSync(join(stateDir, CHECKPOINT_FILE), 'utf8')) as { checkpoints: Checkpoint[] };
    assert.deepEqual(written.checkpoints.map((c) => c.offset), [acknowledgedSize], 'the checkpoint covers what Kafka acknowledged, nothing more');
    assert.equal(new Set(collector.records.map((r) => r.record.message)).size, 5_000);
  });
});

describe('agent: Kafka unreachable for the agent alone, then back (real Kafka)', () => {
  const topicPrefix = uniqueName('it-agent-cut');
  const topics = [`${topicPrefix}.ns-cut-a`, `${topicPrefix}.ns-cut-b`];
  const collector = new RecordCollector();
  let agent: IsolatedAgent | undefined;

  before(() => collector.start(topics));
  after(async () => {
    await agent?.kill9();
    await agent?.close();
    await collector.stop(topics);
  });

  it('counts the failed sends as connection errors, stalls no topic, and ships every line once Kafka is back', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const brokers = kafkaConfig().brokers;
    const opsPort = 9103;
    const config = agentConfigFile({
      root,
      stateDir,
      topicPrefix,
      extra: {
        ops: { host: '127.0.0.1', port: opsPort },
        kafka: {
          brokers,
          topicTemplate: `${topicPrefix}.{namespace}`,
          maxBatchBytes: 256 * 1024,
          maxBufferedBytes: MIB,
          retryInitialDelayMs: 100,
          retryMaxDelayMs: 1_000,
          requestTimeoutMs: 2_000,
          connectionTimeoutMs: 500,
        },
      },
    });
    const files = ['ns-cut-a', 'ns-cut-b'].map((ns, i) => join(podDir(root, ns, `pod-${i}`, `3000000${i}-dddd-4ddd-8ddd-dddddddddddd`, 'app').dir, '0.log'));
    let next = 0;
    const write = (count: number): void => {
      for (const [i, file] of files.entries()) appendLines(file, Array.from({ length: count }, (_, n) => cri(`c-${i}-${next + n} ${PADDING}`)));
      next += count;
    };
    write(2_000);
    agent = await startIsolatedAgent(config, Number((brokers[0] ?? '').split(':')[1]), opsPort);
    const opsUrl = await agent.opsUrl;
    await collector.waitForCount(4_000, 60_000);

    agent.cut();
    for (let round = 0; round < 5; round++) {
      write(4_000);
      await sleep(1_000);
    }
    await waitFor('failed sends counted', async () => (await metricValue(opsUrl, 'logship_agent_kafka_send_errors_total', { reason: 'other' })) > 0, 30_000, 200);
    assert.equal(await metricValue(opsUrl, 'logship_agent_stalled_topics'), 0, 'a connection failure stalls no topic');
    await agent.restore();

    const total = next * files.length;
    await waitFor(`all ${total} lines once Kafka is reachable again`, () => new Set(collector.records.map((r) => r.record.message)).size >= total, 120_000, 500).catch(async (error: unknown) => {
      t.diagnostic(`received ${new Set(collector.records.map((r) => r.record.message)).size}; buffered ${await metricValue(opsUrl, 'logship_agent_producer_buffered_bytes')}`);
      throw error;
    });
    const seen = new Map<string, number>();
    for (const r of collector.records) {
      const [, file, n] = /^c-(\d)-(\d+) /.exec(r.record.message) ?? [];
      const key = `${file}`;
      const line = Number(n);
      // Per pod (one key, one partition), each line's first arrival is in file order.
      if (line > (seen.get(key) ?? -1)) seen.set(key, line);
      else assert.ok(collector.records.filter((o) => o.record.message === r.record.message).length > 1, `line ${r.record.message.slice(0, 12)} out of order`);
    }
    assert.equal(await metricValue(opsUrl, 'logship_agent_kafka_send_errors_total', { reason: 'unknown_topic' }), 0);
    assert.equal(await metricValue(opsUrl, 'logship_agent_stalled_topics'), 0);
  });
});

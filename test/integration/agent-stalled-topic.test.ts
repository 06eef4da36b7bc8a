/**
 * One topic that cannot take the agent's messages, next to healthy ones: the topic of namespace
 * `ns-small` allows 4 KiB messages (`max.message.bytes`) and its pod writes 40-49 KiB lines, more of them
 * than the agent's producer buffer holds. The healthy namespace's lines must keep arriving, the
 * errors must be counted, and the long lines must reach their topic cut (flagged `truncated`) or whole,
 * never be retried forever. Real Kafka.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Admin } from 'kafkajs';
import { createKafka } from '../../shared/kafka.js';
import { agentConfigFile, makeRoot, metricValue, RecordCollector, startAgentProcess, type AgentProcess, type ReceivedRecord } from '../helpers/agent.js';
import { describeMissing, LineTally } from '../helpers/node-log-check.js';
import { NodeLogWriter, type NodeLogWriterOptions } from '../helpers/node-log-writer.js';
import { kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const SMALL_MESSAGE_BYTES = 4096;
/** 40-49 KiB each: ~13 MiB, above the producer's 8 MiB buffer. */
const LONG_LINES = 300;

describe('agent: one topic rejects every message, the others keep flowing (real Kafka)', () => {
  const topicPrefix = uniqueName('it-stalled-topic');
  const healthyTopic = `${topicPrefix}.ns-healthy`;
  const smallTopic = `${topicPrefix}.ns-small`;
  let agent: AgentProcess | undefined;
  let admin: Admin | undefined;
  const collector = new RecordCollector({ keep: false, onRecord: (r) => onRecord(r) });
  let onRecord: (r: ReceivedRecord) => void = () => undefined;
  after(async () => {
    await agent?.kill9();
    await collector.stop([healthyTopic, smallTopic]);
    await admin?.disconnect();
  });

  it('ships the healthy pods while a topic rejects messages as too large, counts the errors, and ships the long lines cut or whole', async (t) => {
    admin = createKafka(kafkaConfig({ clientId: 'logship-it-admin' }), testLogger()).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: smallTopic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: String(SMALL_MESSAGE_BYTES) }] }], waitForLeaders: true });

    const root = makeRoot();
    const common: Omit<NodeLogWriterOptions, 'namespace' | 'criContainers' | 'longLineEvery' | 'longLineContainers'> = { root, dockerPod: false, copytruncatePod: false, linesPerSecond: 0, rotateBytes: 1 << 30, maxFiles: 5, monitorIntervalMs: 1_000, restartContainers: 0, restartAfterMs: 0 };
    const healthy = new NodeLogWriter({ ...common, namespace: 'ns-healthy', criContainers: 3, longLineEvery: 0, longLineContainers: 0 });
    const small = new NodeLogWriter({ ...common, namespace: 'ns-small', name: 'big-', criContainers: 1, longLineEvery: 1, longLineContainers: 1 });
    const healthyTally = new LineTally(healthy);
    /** The long lines' records by id: whole, or cut and flagged. */
    const longArrivals = new Map<string, 'whole' | 'truncated'>();
    const longProblems: string[] = [];
    let pieces = 0;
    onRecord = (received) => {
      if (received.topic === healthyTopic) return healthyTally.onRecord(received);
      const message = received.record.message;
      const id = message.slice(0, message.indexOf(' '));
      const line = small.byId.get(id);
      if (!line) {
        pieces++;
        return;
      }
      const expected = small.expectedMessage(line);
      if (message === expected) longArrivals.set(id, 'whole');
      else if (received.record.log.flags?.includes('truncated') && expected.startsWith(message)) longArrivals.set(id, longArrivals.get(id) ?? 'truncated');
      else if (longProblems.length < 5) longProblems.push(`${id}: ${Buffer.byteLength(message)} bytes, flags ${JSON.stringify(received.record.log.flags ?? [])}, not a prefix of the line`);
    };
    await collector.start([healthyTopic, smallTopic]);

    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    agent = startAgentProcess(agentConfigFile({ root, stateDir, topicPrefix }));
    const opsUrl = await agent.opsUrl;
    await waitFor('the agent is ready', () => fetch(`${opsUrl}/readyz`).then((r) => r.ok), 60_000, 50);

    healthy.writeLines(300);
    await waitFor('the healthy lines before the long ones', () => healthyTally.missing().length === 0, 30_000);
    small.writeLines(LONG_LINES);
    // The long lines fill the producer while their topic rejects them; then the healthy pods write on.
    await waitFor('the agent reports errors', async () => (await metricValue(opsUrl, 'logship_agent_errors_total')) > 0, 30_000, 250).catch(() => undefined);
    const errors = await metricValue(opsUrl, 'logship_agent_errors_total');
    const from = healthy.lines.length;
    for (let round = 0; round < 5; round++) healthy.writeLines(200);
    const later = healthy.lines.slice(from);
    await waitFor('the healthy lines written while a topic rejects messages', () => healthyTally.missing(later).length === 0, 30_000, 250).catch(() => undefined);
    const missingHealthy = healthyTally.missing(later);
    await waitFor('every long line in its topic, cut or whole', () => longArrivals.size >= small.lines.length, 30_000, 250).catch(() => undefined);
    const truncated = [...longArrivals.values()].filter((v) => v === 'truncated').length;
    t.diagnostic(
      `healthy: ${later.length - missingHealthy.length} of ${later.length} later lines arrived; errors_total ${errors}; long lines: ${longArrivals.size} of ${small.lines.length} arrived (${truncated} cut), ${pieces} records without a line id; ` +
        `producer buffered ${await metricValue(opsUrl, 'logship_agent_producer_buffered_bytes')} bytes`,
    );
    assert.equal(missingHealthy.length, 0, `${missingHealthy.length} of ${later.length} lines of healthy pods never arrived while another topic rejected messages:\n${describeMissing(healthy, missingHealthy)}`);
    assert.equal(healthyTally.mismatched, 0, healthyTally.mismatchExamples.join('\n'));
    assert.ok(errors > 0, 'the rejected messages are counted in logship_agent_errors_total');
    assert.deepEqual(longProblems, [], 'a long line arrives whole, or cut to a prefix and flagged truncated');
    assert.equal(longArrivals.size, small.lines.length, `${small.lines.length - longArrivals.size} of ${small.lines.length} long lines never reached their topic`);
    healthy.close();
    small.close();
  });
});

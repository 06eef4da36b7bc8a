/**
 * The agent on a node log tree written the way the kubelet and containerd write it
 * (test/helpers/node-log-writer.ts): kubelet rotation with gzip and pruning, 16 KiB `P` chunks of
 * multi-byte text with the other stream between them, a docker json-file pod, a copytruncate pod,
 * container restarts. Real Kafka; every line is checked by id, message bytes and stream.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { agentConfigFile, makeRoot, metricValue, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { describeDuplicates, describeMissing, LineTally, waitUntilDoneOrStalled } from '../helpers/node-log-check.js';
import { NodeLogWriter } from '../helpers/node-log-writer.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const LINES_PER_SECOND = 10_000;
const LINES = 200_000;
/** After the writer stops, how long the agent gets to ship what is left (a healthy agent needs a few seconds). */
const DRAIN_TIMEOUT_MS = 90_000;

function agentConfig(root: string, topicPrefix: string, files: Record<string, unknown> = {}): { config: string; stateDir: string } {
  const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
  return { stateDir, config: agentConfigFile({ root, stateDir, topicPrefix, extra: { files: { root, pollIntervalMs: 100, rescanIntervalMs: 1_000, rotateWaitMs: 1_000, ...files } } }) };
}

async function ready(agent: AgentProcess): Promise<string> {
  const url = await agent.opsUrl;
  await waitFor('the agent is ready', () => fetch(`${url}/readyz`).then((r) => r.ok), 60_000, 50);
  return url;
}

describe('agent on a kubelet/containerd node log tree (real Kafka)', () => {
  const agents: AgentProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const agent of agents) await agent.kill9();
    for (const cleanup of cleanups) await cleanup();
  });

  it('without a crash, every line arrives once, byte for byte, through rotation, gzip, pruning and copytruncate', async (t) => {
    const topicPrefix = uniqueName('it-node-rotation');
    const namespace = 'ns-rotation';
    const topic = `${topicPrefix}.${namespace}`;
    const root = makeRoot();
    const writer = new NodeLogWriter({
      root,
      namespace,
      criContainers: 12,
      dockerPod: true,
      copytruncatePod: true,
      linesPerSecond: LINES_PER_SECOND,
      rotateBytes: 256 * 1024,
      maxFiles: 3,
      monitorIntervalMs: 1_000,
      longLineEvery: 150,
      longLineContainers: 3,
      restartContainers: 2,
      restartAfterMs: 8_000,
      forceSameSecondRotationAfterMs: 5_000,
    });
    const tally = new LineTally(writer);
    const collector = new RecordCollector({ onRecord: tally.onRecord, keep: false });
    cleanups.push(() => collector.stop([topic]));
    await collector.start([topic]);

    const agent = startAgentProcess(agentConfig(root, topicPrefix).config);
    agents.push(agent);
    const opsUrl = await ready(agent);
    writer.start();
    await waitFor(`${LINES} lines written`, () => writer.stats.lines >= LINES, (LINES / LINES_PER_SECOND) * 1000 * 3, 100);
    writer.stop();
    writer.close();
    const written = writer.lines.length;
    t.diagnostic(`writer: ${JSON.stringify(writer.stats)}; ${writer.incarnations.length} file incarnations`);

    // The writer exercised what it claims to.
    assert.ok(writer.stats.rotations >= 20, `kubelet rotations: ${writer.stats.rotations}`);
    assert.ok(writer.stats.deletedIncarnations >= 10, `files pruned: ${writer.stats.deletedIncarnations}`);
    assert.ok(writer.stats.copytruncates >= 2, `copytruncates: ${writer.stats.copytruncates}`);
    assert.ok(writer.stats.chunksSplittingUtf8 > 0, 'some 16 KiB cuts fall inside a UTF-8 character');
    assert.equal(writer.stats.sameSecondRotations, 1);
    assert.equal(writer.stats.restarts, 2);

    await waitUntilDoneOrStalled(() => tally.missing().length === 0, () => collector.received, { stallMs: 15_000, timeoutMs: DRAIN_TIMEOUT_MS });
    const missing = tally.missing();
    const lost = await metricValue(opsUrl, 'logship_agent_lost_bytes_total');
    t.diagnostic(`${written} lines written, ${tally.records} records received, ${missing.length} missing, ${tally.duplicates()} duplicates, ${tally.mismatched} altered, ${tally.unknown} unknown; lost_bytes_total ${lost}`);
    assert.equal(missing.length, 0, `${missing.length} of ${written} lines never reached Kafka:\n${describeMissing(writer, missing)}`);
    assert.equal(tally.mismatched, 0, `records with another message or stream than written:\n${tally.mismatchExamples.join('\n')}`);
    assert.equal(tally.unknown, 0, `records that are no written line (pieces of a long line?):\n${tally.unknownExamples.join('\n')}`);
    assert.equal(tally.duplicates(), 0, `without a crash, no line is shipped twice:\n${describeDuplicates(writer, tally)}`);
    assert.equal(lost, 0, 'nothing was deleted before it was read');
    assert.equal(await agent.stop(), 0, 'the agent stops cleanly on SIGTERM');
  });

  it('files.startAt: end applies to the first start only: lines written while the agent was stopped arrive', async () => {
    const topicPrefix = uniqueName('it-node-start-at');
    const namespace = 'ns-start-at';
    const topic = `${topicPrefix}.${namespace}`;
    const root = makeRoot();
    const common = { root, namespace, dockerPod: false, copytruncatePod: false, linesPerSecond: 0, rotateBytes: 1 << 30, maxFiles: 5, monitorIntervalMs: 1_000, longLineEvery: 0, longLineContainers: 0, restartContainers: 0, restartAfterMs: 0 };
    const first = new NodeLogWriter({ ...common, criContainers: 2 });
    const tally = new LineTally(first);
    // The pod created while the agent is down has its own writer and tally, made then.
    const lateRef: { tally?: LineTally } = {};
    const collector = new RecordCollector({ onRecord: (r) => (tally.onRecord(r), lateRef.tally?.onRecord(r)), keep: false });
    cleanups.push(() => collector.stop([topic]));
    await collector.start([topic]);

    // Before the first start: lines that `end` skips.
    first.writeLines(100);
    const before = [...first.lines];
    const { config, stateDir } = agentConfig(root, topicPrefix, { startAt: 'end' });
    let agent = startAgentProcess(config);
    agents.push(agent);
    await ready(agent);
    // Tailing works: new lines of both files arrive.
    const liveFrom = first.lines.length;
    first.writeLines(40);
    await waitFor('the lines written after the first start', () => tally.missing(first.lines.slice(liveFrom)).length === 0, 30_000);
    // A clean stop (its final checkpoints written): the state folder is not empty, the next start is not a first one.
    assert.equal(await agent.stop(), 0);
    assert.ok(readdirSync(stateDir).length > 0, 'the agent keeps its state in the state folder');
    // While it is down: more lines in both files, one file rotated (kubelet rename), a new pod.
    const downFrom = first.lines.length;
    first.writeLines(60);
    first.rotateNow(0);
    first.writeLines(40);
    const late = new NodeLogWriter({ ...common, name: 'late-', criContainers: 1 });
    const lateLines = new LineTally(late);
    lateRef.tally = lateLines;
    late.writeLines(50);
    await sleep(500); // a real restart gap, not a wait for a condition

    agent = startAgentProcess(config);
    agents.push(agent);
    await ready(agent);
    const afterRestart = first.lines.slice(downFrom);
    const lateWriter = late;
    await waitFor('the lines written while the agent was down', () => tally.missing(afterRestart).length === 0 && lateLines.missing(lateWriter.lines).length === 0, 30_000).catch(() => undefined);
    const missingOld = tally.missing(afterRestart);
    const missingNew = lateLines.missing(lateWriter.lines);
    assert.equal(
      missingOld.length + missingNew.length,
      0,
      `${missingOld.length} of ${afterRestart.length} lines written to known pods while stopped are missing:\n${describeMissing(first, missingOld)}\n` +
        `${missingNew.length} of ${lateWriter.lines.length} lines of a pod created while stopped are missing:\n${describeMissing(lateWriter, missingNew)}`,
    );
    assert.equal(tally.missing(before).length, before.length, 'lines present at the first start are skipped (startAt: end)');
    assert.equal(tally.mismatched + lateLines.mismatched, 0, [...tally.mismatchExamples, ...lateLines.mismatchExamples].join('\n'));
    first.close();
    late.close();
    assert.equal(await agent.stop(), 0);
  });
});

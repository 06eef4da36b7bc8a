/**
 * kill -9 of the agent, ten times, while a node log tree is written and rotated the way the kubelet and
 * containerd do it (test/helpers/node-log-writer.ts). Each time the agent stays down between 0.5 s and
 * 10 s, so files are renamed, gzipped and deleted while nobody reads them. Real Kafka.
 *
 * What must hold (test/helpers/node-log-check.ts, judgeKillRun). The writer stands still from each start
 * until the new agent shipped everything on disk (or stalled for 5 s), then goes on for 0.5-1.5 s
 * before the next kill:
 * - every line that was on disk in any form (`.gz` included) when an agent started, or at the end,
 *   arrives at least once, byte for byte, and a replayed line carries its original event_id;
 * - any other missing line lies in a file that the kubelet deleted after a kill and before the next
 *   agent was up; if an agent had seen that file (up 1 s while it existed), the agent that found it gone
 *   logged "lost bytes" for it, from an offset at or below the line (the bytes after what the agent
 *   last saw are unknowable: the file grew after the kill and was deleted before the restart);
 * - no loss is reported for a file that was not deleted, and the last agent's
 *   logship_agent_lost_bytes_total is the sum of the ranges it logged.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { agentConfigFile, makeRoot, metricValue, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { describeMissing, judgeKillRun, LineTally, lossReports, waitUntilDoneOrStalled, type AgentRun } from '../helpers/node-log-check.js';
import { NodeLogWriter } from '../helpers/node-log-writer.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

/** How long the agent stays down after each kill, shuffled: several span two rotations or more of every file. */
const DOWN_MS = [500, 600, 800, 1_000, 1_500, 2_000, 2_500, 3_000, 4_000, 10_000];
/** How long an agent runs once it caught up with the files, before the next kill (random in this range). */
const UP_MS: [number, number] = [500, 1_500];
/** How long an agent gets to ship what is on disk after a restart before the writer goes on anyway, and how long it may stall. */
const CATCH_UP_MS = 30_000;
const CATCH_UP_STALL_MS = 5_000;
const LINES_PER_SECOND = 10_000;
/** After the last restart, the writer goes on this long, then the agent ships what is left. */
const TAIL_MS = 3_000;
const DRAIN_TIMEOUT_MS = 120_000;
/** The drain ends early once no record arrived for this long. */
const STALL_MS = 15_000;
/** Time an agent gets after it is ready to find what is on disk (poll 100 ms, rescan 1 s). */
const GRACE_MS = 1_500;
/** An agent up this long while a file existed tracked and checkpointed it (poll 100 ms, checkpoints every 200 ms). */
const SEEN_MS = 1_000;

function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

describe('agent: kill -9 ten times on a rotating node log tree (real Kafka)', () => {
  const topicPrefix = uniqueName('it-node-crash');
  const namespace = 'ns-crash';
  const topic = `${topicPrefix}.${namespace}`;
  let agent: AgentProcess | undefined;
  let collector: RecordCollector | undefined;
  after(async () => {
    await agent?.kill9();
    await collector?.stop([topic]);
  });

  it('ships every line still on disk at each restart, and reports what the kubelet deleted first', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const config = agentConfigFile({ root, stateDir, topicPrefix, extra: { files: { root, pollIntervalMs: 100, rescanIntervalMs: 1_000, rotateWaitMs: 1_000 } } });
    const writer = new NodeLogWriter({
      root,
      namespace,
      criContainers: 12,
      dockerPod: true,
      copytruncatePod: true,
      linesPerSecond: LINES_PER_SECOND,
      rotateBytes: 256 * 1024,
      maxFiles: 4,
      monitorIntervalMs: 1_000,
      longLineEvery: 150,
      longLineContainers: 3,
      restartContainers: 2,
      restartAfterMs: 15_000,
      forceSameSecondRotationAfterMs: 5_000,
    });
    const tally = new LineTally(writer);
    const received = new RecordCollector({ onRecord: tally.onRecord, keep: false });
    collector = received;
    await received.start([topic]);

    const runs: (AgentRun & { agent: AgentProcess; lostMetric?: number })[] = [];
    // The node stands still while an agent starts and catches up (start-up through tsx takes seconds
    // on a loaded machine): files change while it is down and while it runs, and the run's size does
    // not depend on the machine's load.
    const start = async (): Promise<void> => {
      writer.pause();
      const spawnedAtMs = Date.now();
      agent = startAgentProcess(config);
      const url = await agent.opsUrl;
      const current = agent;
      await waitFor('the agent is ready', () => fetch(`${url}/readyz`).then((r) => r.ok), 60_000, 50);
      runs.push({ spawnedAtMs, readyAtMs: Date.now(), logs: '', agent: current });
      // Caught up: every line still on disk (in any form) is in Kafka; or nothing new came for a while.
      const onDisk = writer.lines.filter((l) => writer.incarnations[l.incarnation]?.deletedAtMs === undefined);
      const caughtUp = await waitUntilDoneOrStalled(() => tally.missing(onDisk).length === 0, () => received.received, { stallMs: CATCH_UP_STALL_MS, timeoutMs: CATCH_UP_MS });
      if (!caughtUp) t.diagnostic(`agent ${runs.length}: ${tally.missing(onDisk).length} lines on disk at its start not in Kafka when it stalled`);
      writer.resume();
    };

    writer.start();
    await start();
    for (const downMs of shuffled(DOWN_MS)) {
      await sleep(UP_MS[0] + Math.random() * (UP_MS[1] - UP_MS[0]));
      const run = runs[runs.length - 1];
      if (!run || !agent) throw new Error('no agent running');
      // A killed agent's counters die with it: read them first.
      run.lostMetric = await metricValue(await agent.opsUrl, 'logship_agent_lost_bytes_total').catch(() => Number.NaN);
      await agent.kill9();
      run.killedAtMs = Date.now();
      t.diagnostic(`kill ${runs.length}: up ${((run.killedAtMs - run.readyAtMs) / 1000).toFixed(1)} s, down ${(downMs / 1000).toFixed(1)} s; ${writer.stats.lines} lines written, ${collector.received} records received`);
      await sleep(downMs);
      await start();
    }
    await sleep(TAIL_MS);
    writer.stop();
    writer.close();
    const last = runs[runs.length - 1];
    if (!last || !agent) throw new Error('no agent running');
    t.diagnostic(`writer: ${JSON.stringify(writer.stats)}; ${writer.incarnations.length} file incarnations`);
    assert.ok(writer.stats.chunksSplittingUtf8 > 0 && writer.stats.copytruncates >= 2 && writer.stats.sameSecondRotations === 1, `the writer exercised long lines, copytruncate and a same-second rotation: ${JSON.stringify(writer.stats)}`);

    const judge = (): ReturnType<typeof judgeKillRun> => {
      for (const run of runs) run.logs = run.agent.logs();
      return judgeKillRun(writer, tally, runs, lossReports(runs), { graceMs: GRACE_MS, seenMs: SEEN_MS });
    };
    await waitUntilDoneOrStalled(() => judge().lostWhileOnDisk.length === 0, () => received.received, { stallMs: STALL_MS, timeoutMs: DRAIN_TIMEOUT_MS, intervalMs: 1_000 });
    const verdict = judge();
    const reports = lossReports(runs);
    last.lostMetric = await metricValue(await agent.opsUrl, 'logship_agent_lost_bytes_total').catch(() => Number.NaN);
    const missing = tally.missing();
    const bytesOf = (lines: readonly { start: number; end: number }[]): number => lines.reduce((sum, l) => sum + l.end - l.start, 0);
    t.diagnostic(
      `${runs.length - 1} kills; ${writer.lines.length} lines written, ${tally.records} records received, ${missing.length} missing (${bytesOf(missing)} bytes): ` +
        `${verdict.lostWhileOnDisk.length} while on disk at a start, ${verdict.lostWhileUp.length} deleted while an agent was up, ${verdict.lostSeenUnreported.length} in seen files unreported, ${verdict.lostSeenReported.length} reported, ${verdict.lostNeverSeen.length} in files no agent saw; ` +
        `${tally.duplicates()} duplicates, ${tally.mismatched} altered, ${tally.unknown} unknown; ${reports.length} loss reports (${reports.reduce((s, r) => s + (r.toOffset ?? r.fromOffset) - r.fromOffset, 0)} bytes), ` +
        `lost_bytes_total per run ${runs.map((r) => r.lostMetric).join(',')}`,
    );

    // TEST_DUMP_AGENT_LOGS=<prefix> keeps each agent's log as <prefix>.<run> (never a LOGSHIP_ variable: the agent reads those).
    const dumpTo = process.env.TEST_DUMP_AGENT_LOGS;
    if (dumpTo !== undefined) for (const [i, run] of runs.entries()) writeFileSync(`${dumpTo}.${i}`, run.logs);
    if (tally.mismatched > 0) t.diagnostic(`altered records, e.g.:\n${tally.mismatchExamples.join('\n')}`);
    assert.equal(verdict.lostWhileOnDisk.length, 0, `${verdict.lostWhileOnDisk.length} lines on disk (in some form) when an agent started, or at the end, never reached Kafka:\n${describeMissing(writer, verdict.lostWhileOnDisk)}`);
    assert.equal(verdict.lostWhileUp.length, 0, `${verdict.lostWhileUp.length} lines of files deleted while an agent was up (and not killed before the next start) never reached Kafka:\n${describeMissing(writer, verdict.lostWhileUp)}`);
    assert.equal(tally.mismatched, 0, `records with another message or stream than written:\n${tally.mismatchExamples.join('\n')}`);
    assert.equal(tally.unknown, 0, `records that are no written line:\n${tally.unknownExamples.join('\n')}`);
    assert.deepEqual(tally.eventIdChanges().slice(0, 5), [], 'a replayed line carries its original event_id');
    assert.equal(verdict.lostSeenUnreported.length, 0, `${verdict.lostSeenUnreported.length} lost lines of files an agent had seen, with no "lost bytes" log covering them:\n${describeMissing(writer, verdict.lostSeenUnreported)}`);
    assert.deepEqual(verdict.falseReports.slice(0, 5), [], 'losses are reported only for files the kubelet deleted');
    // The last agent was never killed: its counter holds every loss it logged.
    const lastReports = lossReports([last]);
    if (lastReports.every((r) => r.toOffset !== undefined)) {
      const logged = lastReports.reduce((s, r) => s + (r.toOffset ?? 0) - r.fromOffset, 0);
      assert.equal(last.lostMetric, logged, 'logship_agent_lost_bytes_total is the sum of the ranges the agent logged');
    }
    assert.equal(await agent.stop(), 0, 'the last agent stops cleanly on SIGTERM');
  });
});

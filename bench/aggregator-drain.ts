/** One aggregator run: start the bundled binary with one sink, time the drain of the backlog, sample CPU and memory. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Admin } from 'kafkajs';
import { stringify } from 'yaml';
import { procStat, progressBySecond, rssEverySecond, serverCpuDelta, serverCpuSeconds, sustainedRate, type Progress } from './runtime.js';
import { fetchMetricSum } from '../scripts/metrics-text.js';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { deleteTopics } from '../scripts/stack/topics.js';
import { stack } from '../test/helpers/stack.js';
import { type Backlog, committed } from './aggregator-backlog.js';
import { AGGREGATOR_ENV, CPU, EXTRA_CONFIG, IDLE_MS, LOG_DIR, NODE_FLAGS, POLL_MS, PROFILE_DIR, PROGRESS_INTERVAL_MS, RUN_TIMEOUT_MS, merge, nodeOfAggregator } from './aggregator-settings.js';
import { freePort, log, round, roundValues } from './aggregator-util.js';

export interface DrainResult {
  records: number;
  drainSeconds: number;
  firstCommitSeconds: number;
  /** Records over the whole drain, start-up and the last batches' wait for their max age included. */
  drainRecordsPerSec: number;
  /** Records per second while the pipeline is saturated (see sustainedRate). */
  recordsPerSec: number;
  /** Seconds after the start between which `recordsPerSec` was measured. */
  sustainedWindow: number[];
  cpuSeconds: number;
  /** Seconds from the start until /readyz answered 200 (consumer running, sink healthy). */
  readySeconds: number;
  /** CPU seconds from /readyz on (start-up excluded). */
  cpuSecondsAfterReady: number;
  mainThreadCpuSeconds: number;
  /** CPU seconds per thread name over the whole run (the main thread, libuv's pool, V8's helpers). */
  threadCpuSeconds: Record<string, number>;
  runQueueSeconds: number;
  /** Kernel CPU seconds and minor page faults of the whole run (start-up included). */
  systemCpuSeconds: number;
  minorFaults: number;
  /** CPU seconds of the stack's servers (Kafka, and Elasticsearch or MinIO) over the drain. */
  serverCpuSeconds: Record<string, number>;
  peakRssBytes: number;
  /** RSS after IDLE_MS with the backlog drained and nothing new to consume. */
  idleRssBytes: number;
  deadLetters: number;
  batches: number;
  fetchPausedSeconds: number;
}

/** Records before the given offsets (committed offsets; -1 = none). */
export function recordsIn(plan: Backlog, offsets: ReadonlyMap<string, number>): number {
  let total = 0;
  for (const [key, before] of plan.recordsBefore) total += before[Math.max(0, Math.min(offsets.get(key) ?? 0, before.length - 1))] ?? 0;
  return total;
}

/** Drains `plan` with the bundled aggregator at `binary` (bundleBinary) and one sink. */
export async function drain(name: string, binary: string, admin: Admin, work: string, groupId: string, plan: Backlog, sink: Record<string, unknown>): Promise<DrainResult> {
  const port = await freePort();
  const deadLetterTopic = `${groupId}.deadletter`;
  const config = merge(
    {
      logLevel: 'warn',
      ops: { host: '127.0.0.1', port },
      kafka: { brokers: stack().kafka.brokers, clientId: 'logship-bench-aggregator', groupId, topics: [...plan.topics] },
      deadLetter: { topic: deadLetterTopic },
      sinks: [sink],
    },
    EXTRA_CONFIG,
  );
  const configFile = join(work, `${name}.yaml`);
  writeFileSync(configFile, stringify(config));
  const flags = [...NODE_FLAGS];
  if (PROFILE_DIR !== undefined) flags.push('--cpu-prof', `--cpu-prof-dir=${join(PROFILE_DIR, name)}`);
  const logFile = join(LOG_DIR ?? work, `${name}.log`);
  const out = openSync(logFile, 'w');
  const startedAt = performance.now();
  const serversAtStart = serverCpuSeconds();
  const child = spawn('taskset', ['-c', CPU, nodeOfAggregator().path, ...flags, binary, '--config', configFile], {
    stdio: ['ignore', out, out],
    cwd: REPO_ROOT,
    env: { ...process.env, ...AGGREGATOR_ENV.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  closeSync(out);
  const pid = child.pid ?? 0;
  const exited = once(child, 'exit');
  let exitCode: number | null | undefined;
  void exited.then(([code]) => (exitCode = code as number | null));
  const failure = (why: string): Error => new Error(`${name} run: ${why}\n${readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n')}`);

  try {
    const total = plan.total;
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    /** (time, records committed) at every poll that saw the count move; the first is the first commit. */
    const progress: Progress[] = [];
    let readyAt = 0;
    let cpuAtReady = 0;
    let doneAt = 0;
    let lastProgressAt = startedAt;
    while (Date.now() < deadline) {
      if (exitCode !== undefined) throw failure(`the aggregator exited early (${String(exitCode)})`);
      let offsets: Map<string, number>;
      try {
        offsets = await committed(admin, groupId, plan.topics);
      } catch (error) {
        // Another test may restart Kafka: keep polling until the deadline.
        log(`${name}: reading committed offsets failed (${String(error)}); retrying`);
        await sleep(1_000);
        continue;
      }
      const now = performance.now();
      const done = recordsIn(plan, offsets);
      if (done !== (progress[progress.length - 1]?.done ?? 0)) progress.push({ atMs: now - startedAt, done });
      if (readyAt === 0 && (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false))) {
        readyAt = performance.now();
        cpuAtReady = procStat(pid).cpuSeconds;
      }
      if (done >= total) {
        doneAt = now;
        break;
      }
      if (now - lastProgressAt >= PROGRESS_INTERVAL_MS) {
        lastProgressAt = now;
        const stat = procStat(pid);
        const url = `http://127.0.0.1:${port}`;
        const [heap, external] = await Promise.all([fetchMetricSum(url, 'nodejs_heap_size_used_bytes'), fetchMetricSum(url, 'nodejs_external_memory_bytes')]).catch(() => [0, 0]);
        const mib = (n: number): string => (n / 2 ** 20).toFixed(0);
        log(`${name}: ${((now - startedAt) / 1000).toFixed(1)} s: ${done} records committed, ${stat.cpuSeconds.toFixed(1)} CPU s, RSS ${mib(stat.rssBytes)} MiB (heap used ${mib(heap)}, external ${mib(external)})`);
      }
      await sleep(POLL_MS);
    }
    if (doneAt === 0) throw failure(`committed offsets did not reach the end within ${RUN_TIMEOUT_MS} ms`);
    const stat = procStat(pid);
    const servers = serverCpuDelta(serversAtStart, serverCpuSeconds());
    const url = `http://127.0.0.1:${port}`;
    const [deadLetters, batches, fetchPausedSeconds] = await Promise.all([
      fetchMetricSum(url, 'logship_aggregator_dead_letters_total'),
      fetchMetricSum(url, 'logship_aggregator_sink_batch_records_count'),
      fetchMetricSum(url, 'logship_aggregator_fetch_paused_seconds_total'),
    ]);
    const drainSeconds = (doneAt - startedAt) / 1000;
    const sustained = sustainedRate(progress, total);
    log(`${name}: committed records by second: ${progressBySecond(progress)}`);
    const idleRss = await rssEverySecond(pid, IDLE_MS);
    const idleRssBytes = procStat(pid).rssBytes;
    log(`${name}: RSS MiB by second after the drain: ${idleRss.map((mib) => mib.toFixed(0)).join(' ')}`);
    return {
      records: total,
      drainSeconds,
      firstCommitSeconds: (progress[0]?.atMs ?? Number.NaN) / 1000,
      drainRecordsPerSec: total / drainSeconds,
      recordsPerSec: sustained.perSec,
      sustainedWindow: sustained.windowSeconds.map(round),
      cpuSeconds: stat.cpuSeconds,
      readySeconds: readyAt === 0 ? Number.NaN : (readyAt - startedAt) / 1000,
      cpuSecondsAfterReady: stat.cpuSeconds - cpuAtReady,
      mainThreadCpuSeconds: stat.mainThreadCpuSeconds,
      threadCpuSeconds: roundValues(stat.threadCpuSeconds),
      runQueueSeconds: stat.runQueueSeconds,
      systemCpuSeconds: stat.systemCpuSeconds,
      minorFaults: stat.minorFaults,
      serverCpuSeconds: servers,
      peakRssBytes: stat.hwmBytes,
      idleRssBytes,
      deadLetters,
      batches,
      fetchPausedSeconds,
    };
  } finally {
    if (exitCode === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    await admin.deleteGroups([groupId]).catch(() => undefined);
    await deleteTopics(admin, { names: [deadLetterTopic] }).catch((error: unknown) => log(`cleanup of ${deadLetterTopic} failed: ${String(error)}`));
  }
}

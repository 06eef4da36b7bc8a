/**
 * `npm run bench:agent:rotation`: the agent shipping a node log tree that the kubelet rotates under it
 * all the time, to the real Kafka, on one core.
 *
 * test/helpers/node-log-writer.ts writes FILES CRI containers (a docker json-file pod and a
 * copytruncate pod among them) at RATE lines/s for SECONDS, and rotates every file kubelet-style as soon
 * as it passes ROTATE_BYTES (checked every second): rename to `0.log.<timestamp>`, gzip every older
 * rotated file (`.gz.tmp`, rename, remove), keep MAX_FILES files per container. Some lines are long
 * (16 KiB `P` chunks of multi-byte text). The agent runs as the image ships it (the bundle of
 * scripts/bundle.ts, the DaemonSet's runtime settings) pinned to one CPU, Kubernetes enrichment off
 * (path-derived metadata: the API server is not what is measured here).
 *
 * It reports the rate the agent shipped at (lines Kafka acknowledged over the time from the first line
 * written until the last one was acknowledged), how far behind it ended (drain time after the writer
 * stopped), the agent's CPU, peak RSS, and what went missing: `lost_bytes` (the agent's
 * logship_agent_lost_bytes_total, which must be 0: nothing was deleted before the agent could read it
 * unless it fell more than MAX_FILES rotations behind) and, once the measurement is over, every line
 * read back from Kafka by its id: `missing_lines`, `duplicate_lines`, `altered_lines` (message or
 * stream not as written). The last output line is one JSON object, also written to
 * bench/results/agent-rotation.json.
 *
 * Knobs: BENCH_RATE (lines/s offered, 40,000), BENCH_SECONDS (30), BENCH_FILES (CRI containers, 40),
 * BENCH_ROTATE_BYTES (393,216), BENCH_MAX_FILES (5), BENCH_CPU ('1'), BENCH_NODE (see bench/runtime.ts).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel as KafkaLogLevel } from 'kafkajs';
import { stringify } from 'yaml';
import { fetchMetricSum } from '../scripts/metrics-text.js';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { readEndpoints } from '../scripts/stack/endpoints.js';
import { deleteTopics } from '../scripts/stack/topics.js';
import { RecordCollector } from '../test/helpers/agent.js';
import { LineTally, waitUntilDoneOrStalled } from '../test/helpers/node-log-check.js';
import { NodeLogWriter } from '../test/helpers/node-log-writer.js';
import { benchNode, bundleBinary, deployedEnv, machineReferenceMs, procStat, serverCpuDelta, serverCpuSeconds } from './runtime.js';

const RATE = Number(process.env.BENCH_RATE ?? 40_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const FILES = Number(process.env.BENCH_FILES ?? 40);
const ROTATE_BYTES = Number(process.env.BENCH_ROTATE_BYTES ?? 384 * 1024);
const MAX_FILES = Number(process.env.BENCH_MAX_FILES ?? 5);
const CPU = process.env.BENCH_CPU ?? '1';
/** After the writer stops: the agent is done when it produced every line, or when nothing moved for this long. */
const STALL_MS = 15_000;
const DRAIN_TIMEOUT_MS = 180_000;
const OPS_PORT = 19103;
const NAMESPACE = 'bench-rotation';

const AGENT_ENV = deployedEnv('agent-daemonset.yaml', 'agent');

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

async function main(): Promise<void> {
  const endpoints = readEndpoints();
  const work = mkdtempSync(join(tmpdir(), 'logship-bench-rotation-'));
  const binary = await bundleBinary(work, 'agent');
  const prefix = `bench-rotation-${Date.now().toString(36)}`;
  const root = join(work, 'pods');
  mkdirSync(root, { recursive: true });
  const configFile = join(work, 'agent.yaml');
  writeFileSync(
    configFile,
    stringify({
      cluster: 'bench',
      nodeName: 'bench-node',
      logLevel: 'warn',
      ops: { host: '127.0.0.1', port: OPS_PORT },
      files: { root },
      kubernetes: { enabled: false },
      kafka: { brokers: endpoints.kafka.brokers, topicTemplate: `${prefix}.{namespace}` },
      checkpoints: { dir: join(work, 'state') },
    }),
  );
  const node = benchNode(log);
  const referenceBefore = machineReferenceMs(CPU);
  const child = spawn('taskset', ['-c', CPU, node.path, binary, '--config', configFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
    cwd: REPO_ROOT,
    env: { ...process.env, ...AGENT_ENV.env, KAFKAJS_NO_PARTITIONER_WARNING: '1' },
  });
  // The agent's own log lines at warn and above, kept to show what it said about losses.
  let agentLog = '';
  child.stdout.on('data', (chunk: Buffer) => {
    if (agentLog.length < 1 << 20) agentLog += chunk.toString();
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const pid = child.pid ?? 0;
  const url = `http://127.0.0.1:${OPS_PORT}`;
  const writer = new NodeLogWriter({
    root,
    namespace: NAMESPACE,
    criContainers: FILES,
    dockerPod: true,
    copytruncatePod: true,
    linesPerSecond: RATE,
    rotateBytes: ROTATE_BYTES,
    maxFiles: MAX_FILES,
    monitorIntervalMs: 1_000,
    longLineEvery: 500,
    longLineContainers: Math.ceil(FILES / 10),
    restartContainers: 0,
    restartAfterMs: 0,
  });
  let result: Record<string, unknown>;
  try {
    const readyDeadline = Date.now() + 60_000;
    while (!(await fetch(`${url}/readyz`).then((r) => r.ok, () => false))) {
      if (Date.now() > readyDeadline || child.exitCode !== null) throw new Error('agent did not become ready');
      await sleep(50);
    }
    const atStart = procStat(pid);
    const serversAtStart = serverCpuSeconds();
    const startedAt = Date.now();
    writer.start();
    let maxBehind = 0;
    while (Date.now() - startedAt < SECONDS * 1000) {
      await sleep(1_000);
      const produced = await fetchMetricSum(url, 'logship_agent_records_produced_total');
      maxBehind = Math.max(maxBehind, writer.stats.lines - produced);
    }
    writer.stop();
    const stoppedAt = Date.now();
    const written = writer.stats.lines;
    log(`wrote ${written} lines in ${((stoppedAt - startedAt) / 1000).toFixed(1)} s: ${writer.stats.rotations} rotations, ${writer.stats.copytruncates} copytruncates, ${writer.stats.deletedIncarnations} files pruned`);
    let produced = 0;
    let lastMoveAt = Date.now();
    let doneAt = 0;
    for (;;) {
      const [now, unshipped] = await Promise.all([fetchMetricSum(url, 'logship_agent_records_produced_total'), fetchMetricSum(url, 'logship_agent_unshipped_bytes')]);
      if (now !== produced) lastMoveAt = Date.now();
      produced = now;
      if (produced >= written && unshipped === 0) {
        doneAt = Date.now();
        break;
      }
      if (Date.now() - lastMoveAt > STALL_MS || Date.now() - stoppedAt > DRAIN_TIMEOUT_MS) {
        doneAt = lastMoveAt;
        log(`the agent stopped at ${produced} of ${written} lines`);
        break;
      }
      await sleep(250);
    }
    const busy = procStat(pid);
    const servers = serverCpuSeconds();
    const [lostBytes, lostDeleted] = await Promise.all([fetchMetricSum(url, 'logship_agent_lost_bytes_total'), fetchMetricSum(url, 'logship_agent_lost_bytes_total', { reason: 'deleted_before_read' })]);
    const seconds = (doneAt - startedAt) / 1000;
    const cpuSeconds = busy.cpuSeconds - atStart.cpuSeconds;
    result = {
      bench: 'agent-rotation',
      at: new Date().toISOString(),
      offered_lines_per_sec: RATE,
      write_seconds: round((stoppedAt - startedAt) / 1000),
      lines_written: written,
      // Counted from Kafka by line id below (the agent's produced-records counter would count a line twice, or a piece of one).
      missing_lines: Number.NaN,
      lost_bytes: lostBytes,
      lost_bytes_deleted_before_read: lostDeleted,
      lines_per_sec: Math.round(Math.min(produced, written) / seconds),
      drained: produced >= written,
      drain_seconds_after_writer_stopped: round((doneAt - stoppedAt) / 1000),
      max_lines_behind: maxBehind,
      files: writer.containers.length,
      rotate_bytes: ROTATE_BYTES,
      max_files: MAX_FILES,
      rotations: writer.stats.rotations,
      copytruncates: writer.stats.copytruncates,
      files_pruned: writer.stats.deletedIncarnations,
      long_lines: writer.stats.longLines,
      cpu_seconds: round(cpuSeconds),
      cpu_s_per_million_lines: round(cpuSeconds / (Math.max(produced, 1) / 1e6)),
      run_queue_wait_seconds: round(busy.runQueueSeconds - atStart.runQueueSeconds),
      server_cpu_seconds: serverCpuDelta(serversAtStart, servers),
      peak_rss_mib: round(busy.hwmBytes / 2 ** 20),
      cpu: CPU,
      node: node.version,
      as_deployed: AGENT_ENV.asDeployed && node.asImage,
      machine_reference_ms: [referenceBefore, machineReferenceMs(CPU)],
    };
    // Every line by id, from the beginning of the topic, once the measurement is over.
    const tally = new LineTally(writer);
    const collector = new RecordCollector({ onRecord: tally.onRecord, keep: false });
    const topic = `${prefix}.${NAMESPACE}`;
    await collector.start([topic]);
    await waitUntilDoneOrStalled(() => tally.missing().length === 0, () => collector.received, { stallMs: 10_000, timeoutMs: 300_000 });
    await collector.stop([]);
    Object.assign(result, {
      records_produced: produced,
      missing_lines: tally.missing().length,
      duplicate_lines: tally.duplicates(),
      altered_lines: tally.mismatched,
      unknown_records: tally.unknown,
    });
    const losses = agentLog.split('\n').filter((l) => l.includes('lost bytes')).slice(0, 5);
    if (losses.length > 0) log(`the agent logged losses, e.g.:\n${losses.join('\n')}`);
  } finally {
    writer.stop();
    writer.close();
    child.kill('SIGTERM');
    await exited;
    rmSync(work, { recursive: true, force: true });
    const admin = new Kafka({ brokers: endpoints.kafka.brokers, clientId: 'logship-bench', logLevel: KafkaLogLevel.NOTHING }).admin();
    await admin
      .connect()
      .then(() => deleteTopics(admin, { prefix: `${prefix}.` }))
      .catch((error: unknown) => log(`deleting the topics ${prefix}.* failed: ${String(error)}`))
      .finally(() => admin.disconnect());
  }
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'agent-rotation.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${String(error)}\n`);
  process.exit(1);
});

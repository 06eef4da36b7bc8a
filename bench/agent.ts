/**
 * `npm run bench:agent`: how fast the real agent ships CRI logs to the real Kafka, on one core.
 *
 * Creates one pod per file in the stack's API server (FILES pods in 5 namespaces, on the agent's node),
 * writes LINES whole CRI lines of LINE_BYTES bytes into their log files, starts the agent as the image
 * ships it (the bundle of scripts/bundle.ts, Kubernetes enrichment on) pinned to one CPU (taskset)
 * with the DaemonSet's runtime settings (deployedEnv), and measures from the moment it is ready until Kafka acknowledged every line: lines/s,
 * MB/s of log bytes, CPU seconds per million lines (all threads; the main thread's share apart), time
 * reading waited for Kafka (backpressure), time the agent's threads waited for the core (other
 * processes on it), the CPU the stack's servers used meanwhile (Kafka above all; the machine has two
 * cores), peak RSS (VmHWM over the whole run) and RSS after IDLE_MS with nothing to do (sampled every
 * second meanwhile: before and after the idle page-out of shared/resident-memory.ts). Then it writes
 * WAKE_LINES more lines and measures how the agent wakes up: time until Kafka acknowledged them, CPU,
 * and the page faults that read back what the page-out gave away. The last output line is one JSON
 * object, also written to bench/results/agent.json.
 *
 * Besides the whole run, the rate and CPU per line are measured while the agent is saturated, between
 * the polls that saw 10% and 90% of the lines acknowledged (`sustained_…`, as the aggregator's
 * benchmark does). A run starts with V8 compiling the hot code: sampled with `perf record` over a
 * 9M-line run, its optimizing compiler took 16% of the agent's CPU in the first 5 s, 10%, 7% and 3%
 * in the next three, then ~1%. A DaemonSet pays that once a start; a 3M-line run (20 s) paid it on
 * most of its lines, which is why the default is 6M.
 *
 * Knobs: BENCH_LINES, BENCH_FILES, BENCH_CPU, BENCH_IDLE_MS, BENCH_CWD, BENCH_NODE (the node the agent
 * runs under, the images' Node.js by default: see bench/runtime.ts), BENCH_NODE_FLAGS (extra node
 * arguments, e.g. --cpu-prof), BENCH_NODE_OPTIONS and BENCH_MALLOC_MMAP_THRESHOLD (replace the
 * DaemonSet's settings), BENCH_KAFKA (JSON merged into the agent's `kafka` settings), BENCH_RESERVE_CPU=1
 * (the stack's servers move off the agent's CPU, see reserveCpu), BENCH_ENV (see bench/runtime.ts),
 * BENCH_KUBERNETES=0 (enrichment off: no API server, path-derived metadata), BENCH_PAGE_OUT_MS (the
 * agent's idle.pageOutAfterMs; 0 turns the page-out off), BENCH_WAKE_LINES.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel as KafkaLogLevel } from 'kafkajs';
import { stringify } from 'yaml';
import { fetchMetricSum } from '../scripts/metrics-text.js';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { readEndpoints } from '../scripts/stack/endpoints.js';
import { deleteNamespaceNow, ensureDefaultServiceAccount } from '../scripts/stack/namespaces.js';
import { deleteTopics as deleteStackTopics } from '../scripts/stack/topics.js';
import { createKubeClients, type KubeClients } from '../shared/kube.js';
import { benchNode, bundleBinary, deployedEnv, machineReferenceMs, procStat, progressBySecond, RESERVE_CPU, reserveCpu, rssEverySecond, serverCpuDelta, serverCpuSeconds, sustainedRate, type Progress, type ProcStat } from './runtime.js';

const LINES = Number(process.env.BENCH_LINES ?? 6_000_000);
const FILES = Number(process.env.BENCH_FILES ?? 40);
const LINE_BYTES = 170;
/** Past the agent's idle page-out (idle.pageOutAfterMs, 30 s by default). */
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 45_000);
/** idle.pageOutAfterMs for the agent (0: off); the agent's default when unset. */
const PAGE_OUT_MS = process.env.BENCH_PAGE_OUT_MS === undefined ? undefined : Number(process.env.BENCH_PAGE_OUT_MS);
/** Lines written after the idle time, spread over the files: how the agent wakes up. */
const WAKE_LINES = Number(process.env.BENCH_WAKE_LINES ?? 20_000);
/** Kubernetes enrichment, on as deployed; BENCH_KUBERNETES=0 runs with path-derived metadata only. */
const ENRICH = process.env.BENCH_KUBERNETES !== '0';
const CPU = process.env.BENCH_CPU ?? '1';
const TIMEOUT_MS = 15 * 60_000;
const OPS_PORT = 19102;

/** NODE_OPTIONS, MALLOC_* and UV_THREADPOOL_SIZE of the DaemonSet: the benchmark runs what is deployed (bench/runtime.ts). */
const AGENT_ENV = deployedEnv('agent-daemonset.yaml', 'agent');

function run(command: string, args: string[]): void {
  execFileSync(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}


/** Whether a TCP connection to `host:port` opens within a second. */
function reachable(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    const socket = connect({ host, port: Number(port), timeout: 1000 });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/** A pod the logs are written for: created in the stack's API server, so the agent enriches as in a cluster. */
interface BenchPod {
  namespace: string;
  name: string;
  uid: string;
}

const NAMESPACES = 5;
const NODE_NAME = 'bench-node';

/**
 * Creates NAMESPACES namespaces and one pod per file on NODE_NAME (no kubelet runs: they stay
 * Pending, which is all the agent's watcher needs), with labels as a Deployment gives them.
 */
async function createPods(kube: KubeClients, prefix: string): Promise<BenchPod[]> {
  for (let n = 0; n < NAMESPACES; n++) {
    await kube.core.createNamespace({ body: { metadata: { name: `${prefix}-ns-${n}`, labels: { team: `team-${n}`, 'kubernetes.io/metadata.name': `${prefix}-ns-${n}` } } } });
    await ensureDefaultServiceAccount(kube.core, `${prefix}-ns-${n}`);
  }
  const pods: BenchPod[] = [];
  for (let f = 0; f < FILES; f++) {
    const namespace = `${prefix}-ns-${f % NAMESPACES}`;
    const name = `api-${f}-7f9c6d5b8-x${f.toString(36)}`;
    const created = await kube.core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name, labels: { app: 'api', 'app.kubernetes.io/name': 'api', 'pod-template-hash': '7f9c6d5b8' }, annotations: { 'kubectl.kubernetes.io/default-container': 'app' } },
        spec: { nodeName: NODE_NAME, containers: [{ name: 'app', image: 'registry.example/api:1.0' }] },
      },
    });
    pods.push({ namespace, name, uid: created.metadata?.uid ?? '' });
  }
  return pods;
}

/** Zero grace (nothing would confirm a graceful deletion); then the namespaces, finalized at once (scripts/stack/namespaces.ts). */
async function deletePods(kube: KubeClients, prefix: string, pods: readonly BenchPod[]): Promise<void> {
  for (const pod of pods) await kube.core.deleteNamespacedPod({ name: pod.name, namespace: pod.namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
  for (let n = 0; n < NAMESPACES; n++) await deleteNamespaceNow(kube.core, `${prefix}-ns-${n}`).catch(() => undefined);
}

/**
 * Deletes the run's topics (`<prefix>.<namespace>`): left behind, they piled up in the stack's broker
 * (1,307 after a day of runs, each with its partitions' log segments and indexes).
 */
async function deleteTopics(brokers: string[], prefix: string): Promise<void> {
  const admin = new Kafka({ brokers, clientId: 'logship-bench', logLevel: KafkaLogLevel.NOTHING }).admin();
  try {
    await admin.connect();
    await deleteStackTopics(admin, { prefix: `${prefix}.` });
  } catch (error) {
    process.stderr.write(`bench: deleting the topics ${prefix}.* failed: ${String(error)}\n`);
  } finally {
    await admin.disconnect();
  }
}

/**
 * CRI lines of exactly LINE_BYTES bytes, all whole (`F`): runtimes split only lines over 16 KiB.
 * `lines` spread evenly over the pods' files; appended to files already there.
 */
function writeLogs(root: string, pods: readonly BenchPod[], lines: number): number {
  const perFile = Math.ceil(lines / pods.length);
  let bytes = 0;
  const time = '2026-11-22T04:17:19.123456789Z';
  for (const [f, pod] of pods.entries()) {
    const dir = join(root, `${pod.namespace}_${pod.name}_${pod.uid}`, 'app');
    mkdirSync(dir, { recursive: true });
    const fd = openSync(join(dir, '0.log'), 'a');
    const chunk: string[] = [];
    for (let i = 0; i < perFile; i++) {
      const head = `${time} stdout F `;
      const body = `f${f} line ${i} GET /api/v1/orders?id=${i} 200 `;
      const line = `${head}${body.padEnd(LINE_BYTES - head.length - 1, 'x')}\n`;
      chunk.push(line);
      if (chunk.length === 10_000) {
        bytes += writeSync(fd, chunk.join(''));
        chunk.length = 0;
      }
    }
    bytes += writeSync(fd, chunk.join(''));
    closeSync(fd);
  }
  return bytes;
}

async function main(): Promise<void> {
  // Kafka is shared: bring it up only when it does not answer already.
  if (!(await reachable(readEndpoints().kafka.brokers[0] ?? ''))) run(process.execPath, ['--import', 'tsx', 'scripts/stack/cli.ts', 'up', 'kafka']);
  if (ENRICH && !(await reachable(new URL(readEndpoints().kubernetes.server).host))) run(process.execPath, ['--import', 'tsx', 'scripts/stack/cli.ts', 'up', 'kubernetes']);
  const endpoints = readEndpoints();
  const work = mkdtempSync(join(tmpdir(), 'logship-bench-agent-'));
  const binary = await bundleBinary(work, 'agent');
  const prefix = `bench-agent-${Date.now().toString(36)}`;
  const kube = ENRICH ? createKubeClients({ kubeconfig: endpoints.kubernetes.kubeconfig }) : undefined;
  const pods = kube
    ? await createPods(kube, prefix)
    : Array.from({ length: FILES }, (_, f) => ({ namespace: `${prefix}-ns-${f % NAMESPACES}`, name: `api-${f}`, uid: `${String(f).padStart(8, '0')}-0000-4000-8000-000000000000` }));
  const root = join(work, 'pods');
  const t0 = Date.now();
  const bytes = writeLogs(root, pods, LINES);
  const lines = Math.ceil(LINES / FILES) * FILES;
  process.stderr.write(`bench: wrote ${lines} lines (${(bytes / 1e6).toFixed(0)} MB) in ${FILES} files in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);

  const configFile = join(work, 'agent.yaml');
  writeFileSync(
    configFile,
    stringify({
      cluster: 'bench',
      nodeName: NODE_NAME,
      logLevel: 'warn',
      ops: { host: '127.0.0.1', port: OPS_PORT },
      files: { root },
      kubernetes: ENRICH ? { enabled: true, kubeconfig: endpoints.kubernetes.kubeconfig } : { enabled: false },
      kafka: { brokers: endpoints.kafka.brokers, topicTemplate: `${prefix}.{namespace}`, ...(JSON.parse(process.env.BENCH_KAFKA ?? '{}') as object) },
      checkpoints: { dir: join(work, 'state') },
      ...(PAGE_OUT_MS === undefined ? {} : { idle: { pageOutAfterMs: PAGE_OUT_MS } }),
    }),
  );
  const url = `http://127.0.0.1:${OPS_PORT}`;
  // Another agent answering there (a concurrent bench) would be measured instead of ours.
  if (await reachable(`127.0.0.1:${OPS_PORT}`)) throw new Error(`port ${OPS_PORT} is in use: is another agent benchmark running?`);
  const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const log = (message: string): void => void process.stderr.write(`bench: ${message}\n`);
  const node = benchNode(log);
  const referenceBefore = machineReferenceMs(CPU);
  const releaseCpu = reserveCpu(CPU, log);
  const child = spawn('taskset', ['-c', CPU, node.path, ...nodeFlags, binary, '--config', configFile], {
    stdio: ['ignore', process.env.BENCH_AGENT_STDOUT ? 'inherit' : 'ignore', 'inherit'],
    cwd: process.env.BENCH_CWD ?? REPO_ROOT,
    env: { ...process.env, ...AGENT_ENV.env, KAFKAJS_NO_PARTITIONER_WARNING: '1' },
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const pid = child.pid ?? 0;
  let readyAt = 0;
  let doneAt = 0;
  let atReady: ProcStat;
  let serversAtReady: Record<string, number>;
  let serversBusy: Record<string, number>;
  let busy: ProcStat;
  let idle: ProcStat;
  let heapTotal: number, heapUsed: number, external: number, backpressure: number, messages: number, metadataHits: number, pageOuts: number, pagedOutBytes: number;
  /** RSS every second of the idle time, MiB. */
  let idleTrace: number[] = [];
  let wake: { lines: number; ms: number; start: ProcStat; end: ProcStat } | undefined;
  /** Lines Kafka acknowledged at every poll that saw the count move, with the agent's CPU then. */
  const progress: (Progress & { cpuSeconds: number })[] = [];
  try {
    const deadline = Date.now() + TIMEOUT_MS;
    while (Date.now() < deadline && child.exitCode === null) {
      const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
      if (ok) {
        readyAt = Date.now();
        break;
      }
      await sleep(50);
    }
    if (!readyAt) throw new Error('agent did not become ready');
    atReady = procStat(pid);
    serversAtReady = serverCpuSeconds();
    while (Date.now() < deadline) {
      const [produced, unshipped] = await Promise.all([fetchMetricSum(url, 'logship_agent_records_produced_total'), fetchMetricSum(url, 'logship_agent_unshipped_bytes')]);
      // The files' lines are all alike: the bytes Kafka acknowledged tell the lines.
      const acked = Math.floor(((bytes - unshipped) / bytes) * lines);
      if (acked !== (progress[progress.length - 1]?.done ?? 0)) progress.push({ atMs: Date.now() - readyAt, done: acked, cpuSeconds: procStat(pid).cpuSeconds });
      if (produced >= lines && unshipped === 0) {
        doneAt = Date.now();
        break;
      }
      // Polling /metrics costs the agent CPU (prom-client collects process metrics): keep it sparse.
      await sleep(250);
    }
    if (!doneAt) throw new Error('agent did not finish in time');
    busy = procStat(pid);
    serversBusy = serverCpuSeconds();
    idleTrace = await rssEverySecond(pid, IDLE_MS);
    idle = procStat(pid);
    [heapTotal, heapUsed, external, backpressure, messages, metadataHits, pageOuts, pagedOutBytes] = await Promise.all([
      fetchMetricSum(url, 'nodejs_heap_size_total_bytes'),
      fetchMetricSum(url, 'nodejs_heap_size_used_bytes'),
      fetchMetricSum(url, 'nodejs_external_memory_bytes'),
      fetchMetricSum(url, 'logship_agent_backpressure_seconds_total'),
      fetchMetricSum(url, 'logship_agent_kafka_messages_acked_total'),
      fetchMetricSum(url, 'logship_agent_metadata_lookups_total', { result: 'hit' }),
      fetchMetricSum(url, 'logship_agent_idle_reclaims_total', { step: 'page_out' }),
      fetchMetricSum(url, 'logship_agent_idle_paged_out_bytes_total'),
    ]);
    if (WAKE_LINES > 0) {
      const wakeStart = procStat(pid);
      const wokeAt = Date.now();
      const wakeBytes = writeLogs(root, pods, WAKE_LINES);
      const wakeLines = Math.ceil(WAKE_LINES / FILES) * FILES;
      for (;;) {
        if (Date.now() > deadline) throw new Error('the agent did not ship the wake-up lines in time');
        const [produced, unshipped] = await Promise.all([fetchMetricSum(url, 'logship_agent_records_produced_total'), fetchMetricSum(url, 'logship_agent_unshipped_bytes')]);
        if (produced >= lines + wakeLines && unshipped === 0) break;
        await sleep(20);
      }
      wake = { lines: wakeLines, ms: Date.now() - wokeAt, start: wakeStart, end: procStat(pid) };
      process.stderr.write(`bench: ${wakeLines} wake-up lines (${(wakeBytes / 1e6).toFixed(1)} MB) shipped in ${wake.ms} ms\n`);
    }
  } finally {
    releaseCpu();
    child.kill('SIGTERM');
    await exited;
    rmSync(work, { recursive: true, force: true });
    if (kube) await deletePods(kube, prefix, pods);
    await deleteTopics(endpoints.kafka.brokers, prefix);
  }
  const referenceAfter = machineReferenceMs(CPU);
  if (ENRICH && metadataHits !== lines) process.stderr.write(`bench: WARNING: ${metadataHits} of ${lines} lines enriched from the pod watcher\n`);

  const seconds = (doneAt - readyAt) / 1000;
  const cpuSeconds = busy.cpuSeconds - atReady.cpuSeconds;
  const sustained = sustainedRate(progress, lines);
  const sustainedCpu = sustained.from && sustained.to ? (sustained.to.cpuSeconds - sustained.from.cpuSeconds) / ((sustained.to.done - sustained.from.done) / 1e6) : Number.NaN;
  process.stderr.write(`bench: lines acknowledged by second: ${progressBySecond(progress)}\n`);
  const result = {
    bench: 'agent',
    at: new Date().toISOString(),
    lines,
    files: FILES,
    line_bytes: LINE_BYTES,
    seconds: round(seconds),
    lines_per_sec: Math.round(lines / seconds),
    mb_per_sec: round(bytes / 1e6 / seconds),
    cpu_seconds: round(cpuSeconds),
    cpu_s_per_million_lines: round(cpuSeconds / (lines / 1e6)),
    // Between the polls that first saw 10% and 90% of the lines acknowledged (bench/runtime.ts):
    // without the JIT's warm-up at the start (see the module comment) and the last batches.
    sustained_lines_per_sec: Math.round(sustained.perSec),
    sustained_window_seconds: sustained.windowSeconds.map(round),
    sustained_cpu_s_per_million_lines: round(sustainedCpu),
    main_thread_cpu_seconds: round(busy.mainThreadCpuSeconds - atReady.mainThreadCpuSeconds),
    system_cpu_seconds: round(busy.systemCpuSeconds - atReady.systemCpuSeconds),
    minor_page_faults: busy.minorFaults - atReady.minorFaults,
    backpressure_seconds: round(backpressure),
    kafka_messages: messages,
    // Lines whose metadata came from the pod watcher (the pods exist in the stack's API server), as in a cluster.
    metadata_hits: metadataHits,
    kubernetes_enrichment: ENRICH,
    run_queue_wait_seconds: round(busy.runQueueSeconds - atReady.runQueueSeconds),
    // What the stack's servers (Kafka above all) used of the machine's two cores meanwhile.
    server_cpu_seconds: serverCpuDelta(serversAtReady, serversBusy),
    // Threads that ended before the run finished are missing; the total above includes them.
    thread_cpu_seconds: Object.fromEntries(
      Object.entries(busy.threadCpuSeconds).map(([name, s]) => [name, round(s - (atReady.threadCpuSeconds[name] ?? 0))]),
    ),
    // The high-water mark over the whole run, idle time included.
    peak_rss_mib: round(idle.hwmBytes / 2 ** 20),
    idle_rss_mib: round(idle.rssBytes / 2 ** 20),
    idle_heap_total_mib: round(heapTotal / 2 ** 20),
    idle_heap_used_mib: round(heapUsed / 2 ** 20),
    idle_external_mib: round(external / 2 ** 20),
    // RSS every 5 s of the idle time; the heap is collected after 5 s quiet, node's pages paged out after 30 s (the agent's defaults).
    idle_rss_trace_mib: idleTrace.filter((_, i) => (i + 1) % 5 === 0).map(round),
    idle_page_outs: pageOuts,
    idle_paged_out_mib: round(pagedOutBytes / 2 ** 20),
    idle_page_out_after_ms: PAGE_OUT_MS ?? 'default',
    // Waking up: WAKE_LINES written at once after the idle time, until Kafka acknowledged them all.
    ...(wake === undefined
      ? {}
      : {
          wake_lines: wake.lines,
          wake_ms: wake.ms,
          wake_cpu_seconds: round(wake.end.cpuSeconds - wake.start.cpuSeconds),
          wake_major_page_faults: wake.end.majorFaults - wake.start.majorFaults,
          wake_minor_page_faults: wake.end.minorFaults - wake.start.minorFaults,
          rss_after_wake_mib: round(wake.end.rssBytes / 2 ** 20),
        }),
    cpu: CPU,
    node: node.version,
    harness_node: process.version,
    agent_env: AGENT_ENV.env,
    as_deployed: AGENT_ENV.asDeployed && nodeFlags.length === 0 && node.asImage,
    cpu_reserved: RESERVE_CPU,
    node_flags: nodeFlags.join(' '),
    // The machine's speed before and after the run (bench/runtime.ts): CPU ms of a fixed job, lower is faster.
    machine_reference_ms: [referenceBefore, referenceAfter],
  };
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'agent.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${String(error)}\n`);
  process.exit(1);
});

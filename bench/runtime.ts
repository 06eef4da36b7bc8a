/**
 * What both benchmarks share: bundling the binaries as the images ship them (bundleBinary), running one
 * with its deployed settings (deployedEnv), optionally on a core of its own (reserveCpu), and reading its
 * CPU and memory (procStat).
 *
 * deployedEnv: a binary's runtime settings exactly as deployed: the literal `NODE_OPTIONS`, `MALLOC_*` and `UV_THREADPOOL_SIZE` entries of
 * a container's env in a k8s/base manifest (the images' ENTRYPOINT is plain `node /app/<binary>.mjs`),
 * so that a benchmark measures what runs in the cluster. BENCH_NODE_OPTIONS, BENCH_MALLOC_MMAP_THRESHOLD and BENCH_UV_THREADPOOL_SIZE
 * replace them for experiments ('' for none), BENCH_ENV (a JSON object) adds or replaces any variable
 * (e.g. `{"LD_PRELOAD":"…/libjemalloc.so.2","MALLOC_CONF":"…"}`); `asDeployed` says whether anything was replaced.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse as parseYaml } from 'yaml';
import { bundleBinaries } from '../scripts/bundle.js';
import { imageNode, imageNodeVersion } from '../scripts/image-node.js';
import { REPO_ROOT, runningPid, stackPaths } from '../scripts/stack/context.js';

export interface DeployedEnv {
  readonly env: Record<string, string>;
  readonly asDeployed: boolean;
}

/** The env entries of a manifest that tune the runtime rather than configure logship. */
const RUNTIME_ENV = /^(NODE_OPTIONS|MALLOC_\w+|UV_THREADPOOL_SIZE)$/;

export function deployedEnv(manifest: string, containerName: string): DeployedEnv {
  const file = join('k8s', 'base', manifest);
  const parsed = parseYaml(readFileSync(join(REPO_ROOT, file), 'utf8')) as {
    spec: { template: { spec: { containers: { name: string; env?: { name: string; value?: string }[] }[] } } };
  };
  const container = parsed.spec.template.spec.containers.find((c) => c.name === containerName);
  if (!container) throw new Error(`${file}: no container ${containerName}`);
  const deployed: Record<string, string> = {};
  for (const entry of container.env ?? []) {
    if (entry.value !== undefined && RUNTIME_ENV.test(entry.name)) deployed[entry.name] = entry.value;
  }
  const env = { ...deployed };
  if (process.env.BENCH_NODE_OPTIONS !== undefined) env.NODE_OPTIONS = process.env.BENCH_NODE_OPTIONS;
  if (process.env.BENCH_MALLOC_MMAP_THRESHOLD !== undefined) env.MALLOC_MMAP_THRESHOLD_ = process.env.BENCH_MALLOC_MMAP_THRESHOLD;
  if (process.env.BENCH_UV_THREADPOOL_SIZE !== undefined) env.UV_THREADPOOL_SIZE = process.env.BENCH_UV_THREADPOOL_SIZE;
  if (process.env.BENCH_ENV) Object.assign(env, JSON.parse(process.env.BENCH_ENV) as Record<string, string>);
  return { env, asDeployed: JSON.stringify(env) === JSON.stringify(deployed) };
}

/** The stack's servers a run talks to, or shares the machine with. */
const STACK_SERVERS = ['kafka', 'minio', 'elasticsearch', 'etcd', 'kube-apiserver'];

/**
 * With BENCH_RESERVE_CPU=1, the measured binary gets its core to itself: for the run, the stack's
 * servers (processes this project started, found by their PID files) are moved with all their threads
 * to the other CPUs; the returned function moves them back to every CPU. Off by default: on this
 * 2-core machine it leaves Kafka one core, and the agent then waits for the broker (111,703 lines/s
 * against 144,044 unreserved, same commit); `run_queue_wait_seconds` says how much the binary waited
 * for its core either way.
 */
export const RESERVE_CPU = process.env.BENCH_RESERVE_CPU === '1';

export function reserveCpu(cpus: string, log: (message: string) => void): () => void {
  if (!RESERVE_CPU) return () => undefined;
  const reserved = new Set(cpus.split(',').map(Number));
  const all = Array.from({ length: availableParallelism() }, (_, i) => i);
  const others = all.filter((c) => !reserved.has(c));
  if (others.length === 0) return () => undefined;
  const paths = stackPaths();
  const moved: number[] = [];
  for (const server of STACK_SERVERS) {
    const pid = runningPid(paths, server);
    if (pid === undefined) continue;
    execFileSync('taskset', ['-a', '-p', '-c', others.join(','), String(pid)], { stdio: 'ignore' });
    moved.push(pid);
  }
  log(`CPU ${cpus} reserved: ${STACK_SERVERS.join(', ')} moved to CPU ${others.join(',')}`);
  return () => {
    for (const pid of moved) {
      try {
        execFileSync('taskset', ['-a', '-p', '-c', all.join(','), String(pid)], { stdio: 'ignore' });
      } catch {
        // The server stopped meanwhile: nothing to give back.
      }
    }
  };
}

/**
 * CPU seconds so far of each stack server that is running, with its descendants (Elasticsearch's
 * launcher runs the server JVM as a child): the difference over a run says how much of the machine
 * the servers took from the binary.
 */
export function serverCpuSeconds(): Record<string, number> {
  const paths = stackPaths();
  const seconds: Record<string, number> = {};
  for (const server of STACK_SERVERS) {
    const pid = runningPid(paths, server);
    if (pid === undefined) continue;
    try {
      seconds[server] = treeCpuSeconds(pid);
    } catch {
      // It stopped between the PID check and the read.
    }
  }
  return seconds;
}

/** The servers' CPU seconds between two serverCpuSeconds() readings, rounded to 0.01. */
export function serverCpuDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([server, s]) => [server, Math.round((s - (before[server] ?? s)) * 100) / 100]));
}

/** CPU seconds of a process and all its live descendants, plus the children they already reaped. */
function treeCpuSeconds(pid: number): number {
  let seconds = statCpuSeconds(`/proc/${pid}/stat`, true);
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean);
    for (const child of children) seconds += treeCpuSeconds(Number(child));
  }
  return seconds;
}

/** The fields of a /proc stat file after the command name: index 0 is proc(5)'s field 3 (state). */
function statFields(statFile: string): string[] {
  const stat = readFileSync(statFile, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of a /proc stat file, in seconds; with `children`, also of its waited-for children. */
function statCpuSeconds(statFile: string, children = false): number {
  return cpuSecondsOf(statFields(statFile), children);
}

function cpuSecondsOf(fields: readonly string[], children = false): number {
  const ticks = Number(fields[11]) + Number(fields[12]) + (children ? Number(fields[13]) + Number(fields[14]) : 0);
  return ticks / 100;
}

/** The node a benchmark runs a binary under (benchNode). */
export interface BenchNode {
  readonly path: string;
  /** `process.version` of that node, e.g. v22.23.2. */
  readonly version: string;
  /** Whether it is the images' Node.js (the Dockerfile's NODE_IMAGE). */
  readonly asImage: boolean;
}

/**
 * The node a benchmark runs the binary under. By default the images' own Node.js (the version of the
 * Dockerfile's NODE_IMAGE), as deployed: the machine's node may be another major, and the majors differ
 * in memory (V8 12, Node 22, keeps the pages a collection freed: shared/v8-heap.ts). It is fetched once
 * (scripts/image-node.ts). BENCH_NODE=system runs the node running the benchmark,
 * BENCH_NODE=<path> a node of your choice.
 */
export function benchNode(log: (message: string) => void): BenchNode {
  const choice = process.env.BENCH_NODE ?? 'image';
  const image = imageNodeVersion();
  const path = choice === 'system' ? process.execPath : choice === 'image' ? imageNode(image, log) : choice;
  const version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
  return { path, version, asImage: version === `v${image}` };
}

/** Bundles both binaries into `<work>/bundle` as the images ship them (scripts/bundle.ts); returns the path of `binary`'s entry. */
export async function bundleBinary(work: string, binary: 'agent' | 'aggregator'): Promise<string> {
  const outdir = join(work, 'bundle');
  await bundleBinaries(outdir);
  return join(outdir, `${binary}.mjs`);
}

/** What /proc says of a benchmarked process: CPU (all threads, the main thread, per thread), waiting for the core, memory. */
export interface ProcStat {
  /** CPU seconds of the whole process (all threads). */
  cpuSeconds: number;
  /** CPU seconds of the main (JavaScript) thread alone; the rest is zlib, file reads and GC helpers. */
  mainThreadCpuSeconds: number;
  /** Seconds the process's threads were ready to run but waited for the core (other processes on it, or each other). */
  runQueueSeconds: number;
  rssBytes: number;
  hwmBytes: number;
  /** CPU seconds by thread name (main thread as `main`; V8's GC/compiler helpers, libuv's pool for zlib and fs). */
  threadCpuSeconds: Record<string, number>;
  /** CPU seconds in the kernel (all threads): page faults, system calls. */
  systemCpuSeconds: number;
  /** Minor page faults of the process so far: first touches of fresh memory, each a few µs of kernel time here. */
  minorFaults: number;
  /** Major page faults so far: pages read from a file (node's binary after the idle page-out). */
  majorFaults: number;
}

export function procStat(pid: number): ProcStat {
  const cpuOf = (statFile: string): number => statCpuSeconds(statFile);
  let runQueueSeconds = 0;
  const threadCpuSeconds: Record<string, number> = {};
  // Threads in creation order: V8's platform workers (GC and compiler helpers) start with the process,
  // libuv's pool (zlib, fs) on first use; named by name and rank, e.g. `node#3`.
  const tasks = readdirSync(`/proc/${pid}/task`).sort((a, b) => Number(a) - Number(b));
  for (const [rank, task] of tasks.entries()) {
    const schedstat = readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ');
    runQueueSeconds += Number(schedstat[1]) / 1e9;
    const name = task === String(pid) ? 'main' : `${readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').trim()}#${rank}`;
    threadCpuSeconds[name] = (threadCpuSeconds[name] ?? 0) + cpuOf(`/proc/${pid}/task/${task}/stat`);
  }
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  const fields = statFields(`/proc/${pid}/stat`);
  return {
    cpuSeconds: cpuSecondsOf(fields),
    mainThreadCpuSeconds: cpuOf(`/proc/${pid}/task/${pid}/stat`),
    runQueueSeconds,
    rssBytes: kb('VmRSS'),
    hwmBytes: kb('VmHWM'),
    threadCpuSeconds,
    // proc(5): minflt is field 10, majflt field 12, stime field 15.
    systemCpuSeconds: Number(fields[12]) / 100,
    minorFaults: Number(fields[7]),
    majorFaults: Number(fields[9]),
  };
}

/**
 * RSS of `pid` in MiB once a second for `ms`, each sample on the second from the call (nothing else
 * touches the process meanwhile: /proc only). Both benchmarks watch their binary go idle with it.
 */
export async function rssEverySecond(pid: number, ms: number): Promise<number[]> {
  const startedAt = Date.now();
  const samples: number[] = [];
  for (let second = 1; second * 1000 <= ms; second++) {
    await sleep(startedAt + second * 1000 - Date.now());
    samples.push(procStat(pid).rssBytes / 2 ** 20);
  }
  return samples;
}

/**
 * A fixed job, in plain JavaScript: JSON.parse of 20,000 log records and gzip level 6 of their
 * NDJSON (~4 MiB), five times; prints its own CPU milliseconds. Both binaries spend most of their CPU
 * on such work (parsing, zlib, copying).
 */
const REFERENCE_JOB = `
import { gzipSync } from 'node:zlib';
const lines = [];
for (let n = 0; n < 20000; n++) {
  lines.push(JSON.stringify({ '@timestamp': new Date(1763800000000 + n).toISOString(), message: '10.0.' + (n % 256) + '.' + (n % 199) + ' "GET /api/v1/orders?id=' + n + ' HTTP/1.1" 200 ' + (512 + (n % 4096)), stream: 'stdout', event_id: n.toString(16).padStart(32, '0'), kubernetes: { cluster: 'c', namespace: 'ns', pod: 'api-' + (n % 12), labels: { app: 'api', tier: String(n % 3) } } }));
}
const ndjson = Buffer.from(lines.join('\\n'));
const start = process.cpuUsage();
let check = 0;
for (let round = 0; round < 5; round++) {
  for (const line of lines) check += JSON.parse(line).message.length;
  check += gzipSync(ndjson, { level: 6 }).length;
}
const used = process.cpuUsage(start);
process.stdout.write(String(check > 0 ? Math.round((used.user + used.system) / 1000) : -1));
`;

/**
 * How fast the machine runs right now: the CPU milliseconds of REFERENCE_JOB on `cpu` (the best of
 * three). The CPU time of the same work drifts by a third and more on this machine, within minutes
 * and without any steal time in /proc/stat (the hypervisor's neighbours share caches and memory
 * bandwidth), so a benchmark figure means little without the machine's speed at the time: the
 * benchmarks run this before and after their measured runs and report both.
 */
export function machineReferenceMs(cpu: string): number {
  let best = Number.POSITIVE_INFINITY;
  for (let attempt = 0; attempt < 3; attempt++) {
    const out = execFileSync('taskset', ['-c', cpu, process.execPath, '--input-type=module', '-e', REFERENCE_JOB], { encoding: 'utf8' });
    const ms = Number(out.trim());
    if (!Number.isFinite(ms) || ms <= 0) throw new Error(`reference job printed ${JSON.stringify(out)}`);
    best = Math.min(best, ms);
  }
  return best;
}

/** A run's progress: `done` items (records committed, lines acknowledged) `atMs` after a fixed start. */
export interface Progress {
  readonly atMs: number;
  readonly done: number;
}

/** Share of the items between which a sustained rate is measured. */
const SUSTAINED_FROM = 0.1;
const SUSTAINED_TO = 0.9;

/**
 * The rate while the pipeline was saturated: from the poll that first saw 10% of the `total` items
 * done to the one that first saw 90%. A whole-run rate also counts start-up, the first batches, and
 * the last partial ones (in the aggregator only an age limit seals them: 5 s in its benchmark, a
 * quarter of a 1,000,000-record drain on one core). `from` and `to` are the two polls (NaN rate when
 * the progress never got there), so that a caller can take other figures over the same window.
 */
export function sustainedRate<P extends Progress>(progress: readonly P[], total: number): { perSec: number; windowSeconds: [number, number]; from?: P; to?: P } {
  const from = progress.find((p) => p.done >= total * SUSTAINED_FROM);
  const to = progress.find((p) => p.done >= total * SUSTAINED_TO);
  if (from === undefined || to === undefined || to.atMs <= from.atMs) return { perSec: Number.NaN, windowSeconds: [Number.NaN, Number.NaN] };
  return { perSec: ((to.done - from.done) * 1000) / (to.atMs - from.atMs), windowSeconds: [from.atMs / 1000, to.atMs / 1000], from, to };
}

/** The progress as `<seconds>s=<done>`, the last poll of each second, to check the sustained window. */
export function progressBySecond(progress: readonly Progress[]): string {
  const second = (p: Progress | undefined): number => Math.floor((p?.atMs ?? Number.NaN) / 1000);
  return progress
    .filter((p, i) => second(p) !== second(progress[i + 1]))
    .map((p) => `${(p.atMs / 1000).toFixed(1)}s=${p.done}`)
    .join(' ');
}

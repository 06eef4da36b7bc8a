/**
 * `npm run bench:agent`: how fast the real agent ships CRI logs to the real Kafka, on one core.
 *
 * Writes LINES lines of LINE_BYTES bytes (CRI, partial lines included) across FILES files of several
 * pods and namespaces, starts the compiled agent pinned to one CPU (taskset), and measures from the
 * moment it is ready until Kafka acknowledged every line: lines/s, MB/s of log bytes, CPU seconds per
 * million lines, peak RSS (VmHWM), and RSS after IDLE_MS with nothing to do. The last output line is
 * one JSON object, also written to bench/results/agent.json.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { readEndpoints } from '../scripts/stack/endpoints.js';

const LINES = Number(process.env.BENCH_LINES ?? 3_000_000);
const FILES = Number(process.env.BENCH_FILES ?? 40);
const LINE_BYTES = 170;
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 15_000);
const CPU = process.env.BENCH_CPU ?? '1';
const TIMEOUT_MS = 15 * 60_000;

function run(command: string, args: string[]): void {
  execFileSync(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}

function procStat(pid: number): { cpuSeconds: number; rssBytes: number; hwmBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { cpuSeconds: ticks / 100, rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

/** One CRI line of exactly LINE_BYTES bytes; every 50th message is split into P + F chunks. */
function writeLogs(root: string): number {
  const perFile = Math.ceil(LINES / FILES);
  let bytes = 0;
  const time = '2026-11-22T04:17:19.123456789Z';
  for (let f = 0; f < FILES; f++) {
    const ns = `bench-ns-${f % 5}`;
    const dir = join(root, `${ns}_pod-${f}_${String(f).padStart(8, '0')}-0000-4000-8000-000000000000`, 'app');
    mkdirSync(dir, { recursive: true });
    const fd = openSync(join(dir, '0.log'), 'w');
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
  run(process.execPath, ['--import', 'tsx', 'scripts/stack/cli.ts', 'up', 'kafka']);
  run('npx', ['tsc', '-p', 'tsconfig.build.json']);
  const endpoints = readEndpoints();
  const work = mkdtempSync(join(tmpdir(), 'logship-bench-agent-'));
  const root = join(work, 'pods');
  const t0 = Date.now();
  const bytes = writeLogs(root);
  const lines = Math.ceil(LINES / FILES) * FILES;
  process.stderr.write(`bench: wrote ${lines} lines (${(bytes / 1e6).toFixed(0)} MB) in ${FILES} files in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);

  const prefix = `bench-agent-${Date.now().toString(36)}`;
  const configFile = join(work, 'agent.yaml');
  writeFileSync(
    configFile,
    stringify({
      cluster: 'bench',
      nodeName: 'bench-node',
      logLevel: 'warn',
      ops: { host: '127.0.0.1', port: 19102 },
      files: { root },
      kubernetes: { enabled: false },
      kafka: { brokers: endpoints.kafka.brokers, topicTemplate: `${prefix}.{namespace}` },
      checkpoints: { dir: join(work, 'state') },
    }),
  );
  const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const child = spawn('taskset', ['-c', CPU, process.execPath, ...nodeFlags, join(REPO_ROOT, 'dist', 'agent', 'main.js'), '--config', configFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
    cwd: process.env.BENCH_CWD ?? REPO_ROOT,
    env: { ...process.env, KAFKAJS_NO_PARTITIONER_WARNING: '1' },
  });
  const pid = child.pid ?? 0;
  const url = 'http://127.0.0.1:19102';
  const deadline = Date.now() + TIMEOUT_MS;
  let readyAt = 0;
  while (Date.now() < deadline) {
    const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ok) {
      readyAt = Date.now();
      break;
    }
    await sleep(50);
  }
  const cpuAtReady = procStat(pid).cpuSeconds;
  let doneAt = 0;
  while (Date.now() < deadline) {
    const [produced, unshipped] = await Promise.all([metric(url, 'logship_agent_records_produced_total'), metric(url, 'logship_agent_unshipped_bytes')]);
    if (produced >= lines && unshipped === 0) {
      doneAt = Date.now();
      break;
    }
    // Polling /metrics costs the agent CPU (prom-client collects process metrics): keep it sparse.
    await sleep(250);
  }
  if (!doneAt) throw new Error('agent did not finish in time');
  const busy = procStat(pid);
  await sleep(IDLE_MS);
  const idle = procStat(pid);
  const [heapTotal, heapUsed, external] = await Promise.all([
    metric(url, 'nodejs_heap_size_total_bytes'),
    metric(url, 'nodejs_heap_size_used_bytes'),
    metric(url, 'nodejs_external_memory_bytes'),
  ]);
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
  rmSync(work, { recursive: true, force: true });

  const seconds = (doneAt - readyAt) / 1000;
  const cpuSeconds = busy.cpuSeconds - cpuAtReady;
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
    peak_rss_mib: round(busy.hwmBytes / 2 ** 20),
    idle_rss_mib: round(idle.rssBytes / 2 ** 20),
    idle_heap_total_mib: round(heapTotal / 2 ** 20),
    idle_heap_used_mib: round(heapUsed / 2 ** 20),
    idle_external_mib: round(external / 2 ** 20),
    cpu: CPU,
    node: process.version,
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

/**
 * `npm run bench:node`: the agent as deployed (k8s/ through the test-node overlay: its image, its
 * manifest's CPU and memory limits enforced by the kubelet's cgroup) on the stack's real node, shipping
 * what workload pods print through containerd as fast as they can.
 *
 * Reports, over the time the agent was shipping: lines/s produced to Kafka (the agent's own counter),
 * the agent container's CPU (cgroup cpuacct) and lines per CPU-second, the CPU limit as the cgroup
 * enforces it (cfs quota/period), and memory as the kubelet sees it: the working set from the kubelet's
 * summary API (`/stats/summary`, what eviction and `kubectl top` use), plus cgroup usage minus
 * inactive file pages read directly. Writes bench/results/node.json.
 *
 * Knobs: BENCH_NODE_PODS (4), BENCH_NODE_LINES per pod (150000), BENCH_NODE_TIMEOUT_S (300).
 * The writers share the machine's cores with the agent and containerd (which copies every line into
 * the log files): the figures are the agent's under that contention, as on a busy node.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assembleNodeImages } from '../scripts/images.js';
import { sumMetric } from '../scripts/metrics-text.js';
import { AGENT_LABEL, cleanupRun, createWorkloadPod, deployLogship, waitForReadyPod, type NodeRun } from '../scripts/node-logship.js';
import { REPO_ROOT, stackPaths } from '../scripts/stack/context.js';
import { PORTS } from '../scripts/stack/versions.js';

const PODS = Number(process.env.BENCH_NODE_PODS ?? 4);
const LINES = Number(process.env.BENCH_NODE_LINES ?? 150_000);
const TIMEOUT_MS = Number(process.env.BENCH_NODE_TIMEOUT_S ?? 300) * 1000;
const AGENT_OPS = 'http://127.0.0.1:9102';

interface Sample {
  t: number;
  /** logship_agent_errors_total by reason (non-zero ones). */
  errors: Record<string, number>;
  produced: number;
  read: number;
  cpuNs: number;
  workingSet: number | undefined;
  usageMinusInactiveFile: number;
}

function kubeletSummary(): Promise<{ pods?: { podRef: { name: string; namespace: string }; containers?: { name: string; memory?: { workingSetBytes?: number } }[] }[] }> {
  const token = readFileSync(join(stackPaths().pki, 'admin.token'), 'utf8').trim();
  return new Promise((resolve, reject) => {
    // The kubelet's serving certificate is self-signed; it listens on loopback only.
    const req = request(`https://127.0.0.1:${PORTS.kubelet}/stats/summary?only_cpu_and_memory=true`, { rejectUnauthorized: false, headers: { authorization: `Bearer ${token}` }, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body) as never) : reject(new Error(`kubelet summary: ${res.statusCode ?? 0} ${body.slice(0, 200)}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** The agent container's cgroup folder (cgroupfs driver, v1) in a controller's hierarchy. */
function cgroupDir(controller: string, qos: string, podUid: string, containerId: string): string {
  return join('/sys/fs/cgroup', controller, 'kubepods', ...(qos === 'Guaranteed' ? [] : [qos.toLowerCase()]), `pod${podUid}`, containerId);
}

function readNumber(file: string): number {
  return Number(readFileSync(file, 'utf8').trim());
}

function memoryStat(dir: string): Record<string, number> {
  return Object.fromEntries(
    readFileSync(join(dir, 'memory.stat'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([k, v]) => [k ?? '', Number(v)]),
  );
}

async function main(): Promise<void> {
  const images = await assembleNodeImages((m) => process.stderr.write(`bench:node: ${m}\n`));
  const id = `bench-node-${Date.now().toString(36)}`;
  let run: NodeRun | undefined;
  try {
    run = await deployLogship(id, images, (m) => process.stderr.write(`bench:node: ${m}\n`));
    const agent = await waitForReadyPod(run, AGENT_LABEL, 10_000);
    const podUid = agent.metadata?.uid ?? '';
    const containerId = (agent.status?.containerStatuses?.find((c) => c.name === 'agent')?.containerID ?? '').replace(/^containerd:\/\//, '');
    const qos = agent.status?.qosClass ?? 'Burstable';
    const cpuDir = cgroupDir('cpu', qos, podUid, containerId);
    const quota = readNumber(join(cpuDir, 'cpu.cfs_quota_us'));
    const period = readNumber(join(cpuDir, 'cpu.cfs_period_us'));
    const cpuacct = join(cgroupDir('cpuacct', qos, podUid, containerId), 'cpuacct.usage');
    const memDir = cgroupDir('memory', qos, podUid, containerId);
    process.stderr.write(`bench:node: agent ${agent.metadata?.name ?? '?'} (${qos}), CPU limit ${(quota / period).toFixed(2)} cores by cfs quota; ${PODS} pods × ${LINES} lines\n`);

    const sample = async (): Promise<Sample> => {
      const text = await (await fetch(`${AGENT_OPS}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
      const summary = await kubeletSummary().catch(() => undefined);
      const workingSet = summary?.pods?.find((p) => p.podRef.name === agent.metadata?.name)?.containers?.find((c) => c.name === 'agent')?.memory?.workingSetBytes;
      const stat = memoryStat(memDir);
      const errors: Record<string, number> = {};
      for (const m of text.matchAll(/^logship_agent_errors_total\{reason="([a-z_]+)"\} (\d+)/gm)) if (Number(m[2]) > 0) errors[m[1] ?? ''] = Number(m[2]);
      return {
        t: Date.now(),
        errors,
        produced: sumMetric(text, 'logship_agent_records_produced_total'),
        read: sumMetric(text, 'logship_agent_lines_read_total'),
        cpuNs: readNumber(cpuacct),
        workingSet,
        usageMinusInactiveFile: readNumber(join(memDir, 'memory.usage_in_bytes')) - (stat.total_inactive_file ?? 0),
      };
    };

    const before = await sample();
    for (let i = 0; i < PODS; i++) {
      await createWorkloadPod(run, images.workload, { name: `writer-${i}`, lines: LINES, linesPerTick: LINES, tickSeconds: 0, longEvery: 0, exitAfter: true });
    }
    const written = PODS * (LINES + 1);
    const samples: Sample[] = [before];
    const deadline = Date.now() + TIMEOUT_MS;
    let lastChange = Date.now();
    for (;;) {
      await sleep(1_000);
      const s = await sample();
      const prev = samples[samples.length - 1];
      samples.push(s);
      if (prev !== undefined && s.produced > prev.produced) lastChange = s.t;
      process.stderr.write(`bench:node: produced ${s.produced - before.produced}/${written}, working set ${((s.workingSet ?? 0) / 2 ** 20).toFixed(1)} MiB\r`);
      if (s.produced - before.produced >= written || Date.now() - lastChange > 30_000 || Date.now() > deadline) break;
    }
    process.stderr.write('\n');
    const active = samples.filter((s, i) => i > 0 && s.produced > (samples[i - 1]?.produced ?? 0));
    const first = samples[samples.indexOf(active[0] ?? before) - 1] ?? before;
    const last = active[active.length - 1] ?? before;
    const seconds = (last.t - first.t) / 1000;
    const produced = last.produced - first.produced;
    const cpuSeconds = (last.cpuNs - first.cpuNs) / 1e9;
    const workingSets = samples.map((s) => s.workingSet).filter((v): v is number => v !== undefined);
    const result = {
      at: new Date().toISOString(),
      node: agent.spec?.nodeName,
      pods: PODS,
      linesPerPod: LINES + 1,
      linesWritten: written,
      linesProducedByAgent: (samples[samples.length - 1]?.produced ?? before.produced) - before.produced,
      /** Written but never produced: rotated away by the kubelet (containerLogMaxFiles) before the agent read them. */
      linesNotShipped: written - ((samples[samples.length - 1]?.produced ?? before.produced) - before.produced),
      agentErrorsByReason: samples[samples.length - 1]?.errors ?? {},
      cpuLimitCores: quota / period,
      shipping: { seconds, linesPerSecond: Math.round(produced / seconds), cpuSeconds: Number(cpuSeconds.toFixed(2)), cpuCores: Number((cpuSeconds / seconds).toFixed(2)), linesPerCpuSecond: Math.round(produced / cpuSeconds) },
      memory: {
        workingSetPeakMiB: Number((Math.max(...workingSets) / 2 ** 20).toFixed(1)),
        workingSetEndMiB: Number(((workingSets[workingSets.length - 1] ?? 0) / 2 ** 20).toFixed(1)),
        usageMinusInactiveFilePeakMiB: Number((Math.max(...samples.map((s) => s.usageMinusInactiveFile)) / 2 ** 20).toFixed(1)),
        limitMiB: readNumber(join(memDir, 'memory.limit_in_bytes')) / 2 ** 20,
      },
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(join(REPO_ROOT, 'bench', 'results', 'node.json'), `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    if (run !== undefined) await cleanupRun(run);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:node: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

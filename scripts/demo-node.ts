/**
 * `npm run demo:node [-- --keep]`: logship's story on a real Kubernetes node (root only; the first
 * run builds the node, see docs/real-node.md).
 *
 * 1. Brings the stack up with its node (`stack up`: kubelet + containerd on this machine).
 * 2. Assembles the agent and aggregator images from the working tree without Docker and imports them
 *    into the node's containerd (scripts/images.ts).
 * 3. Applies k8s/ through the test-node overlay in a namespace of its own: the agent DaemonSet and the
 *    aggregator Deployment run as real pods (uid 65532, read-only root, projected token).
 * 4. Starts three workload pods that print numbered lines at a steady rate (some over the runtime's
 *    16 KiB chunk), and a short-lived pod that prints 100 lines and exits. containerd writes their
 *    logs; the kubelet rotates them at 1 MiB.
 * 5. Shows progress until every line is in S3 and Elasticsearch, then prints an Elasticsearch query
 *    and a summary. The last line is one JSON object; the exit status is 0 only when S3 rows =
 *    Elasticsearch documents = lines printed, per pod.
 * 6. Deletes what it created (unless `--keep`) and leaves the stack and node running.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { V1Pod } from '@kubernetes/client-node';
import { KubernetesField } from '../shared/record.js';
import { assembleNodeImages } from './images.js';
import {
  AGENT_LABEL,
  AGGREGATOR_LABEL,
  cleanupRun,
  createWorkloadPod,
  deployLogship,
  elasticsearchCountsByPod,
  logFileHolds,
  readS3Records,
  rotatedFiles,
  waitFor,
  waitForReadyPod,
  type NodeRun,
  type WorkloadPlan,
} from './node-logship.js';
import { REPO_ROOT } from './stack/context.js';

const WORKLOADS: WorkloadPlan[] = [
  { name: 'shop-web', lines: 3_000, linesPerTick: 25, tickSeconds: 0.25, longEvery: 100, exitAfter: false },
  { name: 'shop-cart', lines: 2_000, linesPerTick: 20, tickSeconds: 0.25, longEvery: 0, exitAfter: false },
  { name: 'payments-api', lines: 2_500, linesPerTick: 25, tickSeconds: 0.25, longEvery: 50, exitAfter: false },
];
const BURST: WorkloadPlan = { name: 'nightly-report', lines: 99, linesPerTick: 99, tickSeconds: 0, longEvery: 0, exitAfter: true };
const LANDING_TIMEOUT_MS = 5 * 60_000;

function say(message: string): void {
  process.stdout.write(`${message}\n`);
}

async function stackUp(): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'stack', 'cli.ts'), 'up'], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  const [code] = (await once(child, 'exit')) as [number | null];
  return code ?? 1;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false } } });
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo:node: the real node needs root (containerd, mounts, cgroups); `npm run demo` runs without it\n');
    return 2;
  }
  const started = Date.now();
  say('logship on a real node: bringing the stack and its node up (the first run builds the kubelet)…');
  const stackCode = await stackUp();
  if (stackCode !== 0) {
    process.stderr.write(`demo:node: the stack did not come up (exit ${stackCode})\n`);
    return stackCode;
  }
  say('assembling the agent and aggregator images from this working tree (no Docker)…');
  const images = await assembleNodeImages((m) => say(`  ${m}`));
  const id = `demo-node-${Date.now().toString(36)}`;
  let run: NodeRun | undefined;
  try {
    run = await deployLogship(id, images, (m) => say(`  ${m}`));
    const agent = await waitForReadyPod(run, AGENT_LABEL, 10_000);
    const aggregator = await waitForReadyPod(run, AGGREGATOR_LABEL, 10_000);
    say(`agent pod ${agent.metadata?.name ?? '?'} and aggregator pod ${aggregator.metadata?.name ?? '?'} are Ready on node ${agent.spec?.nodeName ?? '?'}`);

    const pods = new Map<string, V1Pod>();
    for (const plan of WORKLOADS) pods.set(plan.name, await createWorkloadPod(run, images.workload, plan));
    say(`workload pods printing: ${WORKLOADS.map((p) => `${p.name} (${p.lines + 1} lines)`).join(', ')}`);
    const r = run;
    await waitFor('the workload pods to run', async () => {
      for (const plan of WORKLOADS) pods.set(plan.name, await r.kube.core.readNamespacedPod({ namespace: r.namespace, name: plan.name }));
      return [...pods.values()].every((p) => p.status?.containerStatuses?.[0]?.state?.running !== undefined);
    }, 120_000);
    pods.set(BURST.name, await createWorkloadPod(run, images.workload, BURST));
    say(`${BURST.name}: a short-lived pod printing 100 lines at once`);

    const expected = new Map([...WORKLOADS, BURST].map((p) => [p.name, p.lines + 1]));
    const total = [...expected.values()].reduce((a, b) => a + b, 0);
    const rotations = new Map<string, Set<string>>();
    const landed = Date.now();
    let s3 = 0;
    let es = 0;
    await waitFor(
      `${total} lines in S3 and Elasticsearch`,
      async () => {
        for (const plan of WORKLOADS) {
          const pod = pods.get(plan.name);
          if (pod === undefined) continue;
          const seen = rotations.get(plan.name) ?? new Set<string>();
          for (const f of rotatedFiles(r, pod)) seen.add(f.replace(/\.gz$/, ''));
          rotations.set(plan.name, seen);
        }
        const records = (await readS3Records(r)).filter((rec) => expected.has(rec.kubernetes[KubernetesField.POD]));
        const counts = await elasticsearchCountsByPod(r);
        s3 = records.length;
        es = [...expected.keys()].reduce((a, k) => a + (counts.get(k) ?? 0), 0);
        const written = WORKLOADS.every((p) => {
          const pod = pods.get(p.name);
          return pod !== undefined && logFileHolds(r, pod, `seq=${p.lines} last`);
        });
        say(`  ${((Date.now() - landed) / 1000).toFixed(0).padStart(4)}s  S3 ${String(s3).padStart(6)}  Elasticsearch ${String(es).padStart(6)}  of ${total}${written ? '' : ' (pods still printing)'}`);
        return s3 >= total && es >= total;
      },
      LANDING_TIMEOUT_MS,
      3_000,
    ).catch((error: unknown) => say(`demo:node: ${error instanceof Error ? error.message : String(error)}`));

    const records = (await readS3Records(r)).filter((rec) => expected.has(rec.kubernetes[KubernetesField.POD]));
    const esCounts = await elasticsearchCountsByPod(r);
    const sample = records.find((rec) => rec.kubernetes[KubernetesField.POD] === 'payments-api');
    if (sample !== undefined) {
      say('\none record as it landed in S3 (gzip NDJSON, Hive-style partitions):');
      say(JSON.stringify({ ...sample, message: sample.message.slice(0, 120) }, null, 2));
    }
    const search = await r.elasticsearch.search({
      index: `${r.esIndexPrefix}-*`,
      size: 3,
      query: { bool: { filter: [{ term: { 'kubernetes.labels.app': 'payments-api' } }, { term: { stream: 'stderr' } }] } },
      sort: [{ '@timestamp': 'desc' }],
    });
    say(`\nElasticsearch: stderr of app=payments-api (${JSON.stringify(search.hits.total)} hits), newest first:`);
    for (const hit of search.hits.hits) say(`  ${(hit._source as { message: string }).message}`);

    const perPod = Object.fromEntries([...expected].map(([pod, lines]) => [pod, { printed: lines, s3: records.filter((rec) => rec.kubernetes[KubernetesField.POD] === pod).length, elasticsearch: esCounts.get(pod) ?? 0 }]));
    const ok = Object.values(perPod).every((p) => p.s3 === p.printed && p.elasticsearch === p.printed);
    const summary = {
      ok,
      node: agent.spec?.nodeName,
      namespace: r.namespace,
      linesPrinted: total,
      s3Rows: records.length,
      elasticsearchDocuments: es,
      perPod,
      rotatedFilesSeen: Object.fromEntries([...rotations].map(([k, v]) => [k, v.size])),
      seconds: Math.round((Date.now() - started) / 1000),
    };
    say(`\n${ok ? 'every line printed by the pods is in S3 and Elasticsearch, once' : 'MISMATCH between lines printed and lines landed'}`);
    say(JSON.stringify(summary));
    return ok ? 0 : 1;
  } finally {
    if (run !== undefined && !values.keep) {
      say('cleaning up (namespace, topics, S3 objects, indices)…');
      await cleanupRun(run);
    } else if (run !== undefined) say(`kept: namespace ${run.namespace}, S3 prefix ${run.s3Prefix}, indices ${run.esIndexPrefix}-*`);
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`demo:node: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);

/**
 * logship on the stack's real node (scripts/stack/node.ts): k8s/ applied through the test-node
 * overlay, the images assembled from the working tree (scripts/images.ts), workload pods whose logs
 * containerd writes and the kubelet rotates. Mid-run the agent pod is deleted (the DaemonSet
 * controller recreates it), the DaemonSet is restarted by a rollout, a workload pod is deleted, and
 * a short-lived pod prints 100 lines within a second. At the end S3 and Elasticsearch hold every
 * line exactly once, each record enriched with the real pod's labels, uid, container id and image.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { assembleNodeImages, type NodeImages } from '../../scripts/images.js';
import {
  AGENT_LABEL,
  aggregatorCaughtUp,
  cleanupRun,
  containerPid,
  createWorkloadPod,
  deployLogship,
  elasticsearchCountsByPod,
  kubectl,
  LONG_LINE_BYTES,
  logFileHolds,
  readS3Records,
  rotatedFiles,
  waitFor,
  waitForReadyPod,
  type NodeRun,
  type WorkloadPlan,
} from '../../scripts/node-logship.js';
import { stackPaths } from '../../scripts/stack/context.js';
import { NODE_NAME, nodeReady } from '../../scripts/stack/node.js';
import { KubernetesField, RecordFlag, type LogRecord } from '../../shared/record.js';
import { uniqueName } from '../helpers/stack.js';

/** Three pods writing ~100 lines/s each for ~60 s (a 20,000-character line every 50): each rotates about twice at 1 MiB. */
const STEADY: WorkloadPlan[] = ['web-a', 'web-b', 'web-c'].map((name) => ({ name, lines: 6_000, linesPerTick: 20, tickSeconds: 0.2, longEvery: 50, exitAfter: false }));
/** Deleted as soon as its last line is on disk. */
const DELETED: WorkloadPlan = { name: 'doomed', lines: 1_500, linesPerTick: 20, tickSeconds: 0.2, longEvery: 50, exitAfter: false };
/** 100 lines in all (99 numbered and the last), as fast as the shell prints, then exits. */
const BURST: WorkloadPlan = { name: 'burst', lines: 99, linesPerTick: 99, tickSeconds: 0, longEvery: 0, exitAfter: true };

const log = (message: string): void => {
  if (process.env.LOG_LEVEL !== undefined) process.stderr.write(`node-e2e: ${message}\n`);
};

function readyPodUid(pod: V1Pod): string {
  const uid = pod.metadata?.uid;
  assert.ok(uid);
  return uid;
}

describe('logship on a real node (kubelet + containerd)', { timeout: 20 * 60_000 }, () => {
  let images: NodeImages;
  let run: NodeRun | undefined;
  /** Pods as they were while running (status with container ids), by name. */
  const seen = new Map<string, V1Pod>();
  const rotations = new Map<string, Set<string>>();

  before(async () => {
    assert.equal(await nodeReady(stackPaths()), 'True', `node ${NODE_NAME} Ready (npm run stack -- up node)`);
    images = await assembleNodeImages(log);
    run = await deployLogship(uniqueName('e2e-node'), images, log);
  });

  after(async () => {
    if (run !== undefined) await cleanupRun(run);
  });

  it('the agent pod is Ready by its own probes, as uid 65532 on a read-only root, with a projected token and NODE_NAME', async () => {
    assert.ok(run);
    const pod = await waitForReadyPod(run, AGENT_LABEL, 60_000);
    assert.equal(pod.spec?.nodeName, NODE_NAME);
    const containerId = pod.status?.containerStatuses?.find((c) => c.name === 'agent')?.containerID;
    assert.ok(containerId !== undefined && containerId.startsWith('containerd://'), `container id ${String(containerId)}`);
    const pid = await containerPid(containerId);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65532\s+65532\s+65532\s+65532$/m);
    assert.match(status, /^Gid:\s+65532\s+65532\s+65532\s+65532$/m);
    assert.deepEqual(/^Groups:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).sort(), ['0', '65532']);
    assert.match(status, /^CapEff:\s+0+$/m, 'no capability');
    const rootMount = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').find((l) => l.split(' ')[4] === '/');
    assert.ok(rootMount?.split(' ')[5]?.split(',').includes('ro'), `read-only root: ${String(rootMount)}`);
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    assert.ok(environ.includes(`LOGSHIP_NODE_NAME=${NODE_NAME}`), 'NODE_NAME from the downward API');
    // The ServiceAccount admission plugin added the projected volume; the kubelet wrote a bound token.
    const projected = pod.spec.volumes?.find((v) => v.name.startsWith('kube-api-access-'));
    assert.ok(projected?.projected?.sources?.some((s) => s.serviceAccountToken !== undefined), 'projected token volume');
    const token = readFileSync(`/proc/${pid}/root/var/run/secrets/kubernetes.io/serviceaccount/token`, 'utf8');
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub?: string; 'kubernetes.io'?: { pod?: { name?: string; uid?: string } } };
    assert.equal(claims.sub, `system:serviceaccount:${run.namespace}:logship-agent${run.nameSuffix}`);
    assert.equal(claims['kubernetes.io']?.pod?.uid, pod.metadata?.uid, 'the token is bound to this pod');
  });

  it('ships every line of workload pods exactly once through an agent deletion, a rollout restart, a pod deletion and a short-lived pod', async (t) => {
    assert.ok(run);
    const r = run;
    const remember = async (name: string): Promise<V1Pod> => {
      const pod = await r.kube.core.readNamespacedPod({ namespace: r.namespace, name });
      seen.set(name, pod);
      return pod;
    };
    const running = async (name: string): Promise<V1Pod> =>
      waitFor(`${name} running`, async () => {
        const pod = await remember(name);
        return pod.status?.containerStatuses?.[0]?.state?.running !== undefined ? pod : undefined;
      }, 120_000);

    for (const plan of [...STEADY, DELETED]) await createWorkloadPod(r, images.workload, plan);
    for (const plan of [...STEADY, DELETED]) await running(plan.name);
    const watchRotation = setInterval(() => {
      for (const plan of STEADY) {
        const pod = seen.get(plan.name);
        if (pod === undefined) continue;
        const files = rotations.get(plan.name) ?? new Set<string>();
        for (const f of rotatedFiles(r, pod)) files.add(f.replace(/\.gz$/, ''));
        rotations.set(plan.name, files);
      }
    }, 500);
    t.after(() => clearInterval(watchRotation));

    // The agent is shipping: some lines are in Elasticsearch.
    await waitFor('first workload lines in Elasticsearch', async () => ((await elasticsearchCountsByPod(r)).get('web-a') ?? 0) > 0, 120_000, 1_000);

    // 1. Delete the agent pod: the DaemonSet controller makes a new one.
    const first = await waitForReadyPod(r, AGENT_LABEL, 10_000);
    await r.kube.core.deleteNamespacedPod({ namespace: r.namespace, name: first.metadata?.name ?? '' });
    const second = await waitForReadyPod(r, AGENT_LABEL, 180_000, readyPodUid(first));
    log(`agent pod ${String(first.metadata?.name)} deleted; ${String(second.metadata?.name)} Ready`);

    // 2. Restart the DaemonSet's pods with a rollout.
    await kubectl(['--namespace', r.namespace, 'rollout', 'restart', `daemonset/${r.agentDaemonSet}`]);
    await kubectl(['--namespace', r.namespace, 'rollout', 'status', `daemonset/${r.agentDaemonSet}`, '--timeout=180s'], undefined, 200_000);
    const third = await waitForReadyPod(r, AGENT_LABEL, 60_000, readyPodUid(second));
    assert.notEqual(third.metadata?.labels?.['controller-revision-hash'], second.metadata?.labels?.['controller-revision-hash'], 'a new revision');
    log(`rollout restart: ${String(third.metadata?.name)} Ready`);

    // 3. Delete a workload pod right after its last line reached its log file.
    const doomed = seen.get(DELETED.name);
    assert.ok(doomed);
    await waitFor(`${DELETED.name}'s last line on disk`, () => logFileHolds(r, doomed, `seq=${DELETED.lines} last`), 120_000, 200);
    await r.kube.core.deleteNamespacedPod({ namespace: r.namespace, name: DELETED.name });
    log(`${DELETED.name} deleted`);

    // 4. A short-lived pod: 100 lines, then it exits.
    await createWorkloadPod(r, images.workload, BURST);
    await waitFor(`${BURST.name} Succeeded`, async () => (await remember(BURST.name)).status?.phase === 'Succeeded', 120_000);

    // Every steady pod wrote its last line.
    for (const plan of STEADY) {
      const pod = seen.get(plan.name);
      assert.ok(pod);
      await waitFor(`${plan.name}'s last line on disk`, () => logFileHolds(r, pod, `seq=${plan.lines} last`), 240_000, 500);
    }
    for (const plan of STEADY) await remember(plan.name);

    const plans = [...STEADY, DELETED, BURST];
    const expected = new Map(plans.map((p) => [p.name, p.lines + 1]));
    const total = [...expected.values()].reduce((a, b) => a + b, 0);
    const ours = (record: LogRecord): boolean => expected.has(record.kubernetes[KubernetesField.POD]) && record.kubernetes[KubernetesField.LABELS]['logship.dev/workload'] !== undefined;
    // Everything arrived (or the deadline says how much did not), then the aggregator committed all of it.
    let s3Records: LogRecord[] = [];
    await waitFor(
      `${total} workload lines in S3`,
      async () => {
        s3Records = (await readS3Records(r)).filter(ours);
        log(`S3: ${s3Records.length}/${total}`);
        return s3Records.length >= total;
      },
      240_000,
      3_000,
    ).catch(async (error: unknown) => {
      const byPod = countBy(s3Records);
      throw new Error(`${String(error)}; S3 per pod ${JSON.stringify(Object.fromEntries(byPod))}, Elasticsearch ${JSON.stringify(Object.fromEntries(await elasticsearchCountsByPod(r)))}, expected ${JSON.stringify(Object.fromEntries(expected))}`);
    });
    await waitFor('the aggregator to commit every message of the run', () => aggregatorCaughtUp(r), 120_000, 1_000);
    s3Records = (await readS3Records(r)).filter(ours);
    const esCounts = await elasticsearchCountsByPod(r);
    t.diagnostic(`S3 ${s3Records.length}, Elasticsearch ${[...expected.keys()].reduce((a, k) => a + (esCounts.get(k) ?? 0), 0)}, expected ${total}`);

    // Exact counts, per pod, in both sinks; every sequence number once.
    assert.deepEqual(Object.fromEntries(countBy(s3Records)), Object.fromEntries(expected), 'S3 rows per pod');
    assert.deepEqual(Object.fromEntries([...expected.keys()].map((k) => [k, esCounts.get(k) ?? 0])), Object.fromEntries(expected), 'Elasticsearch documents per pod');
    for (const plan of plans) {
      const seqs = s3Records.filter((rec) => rec.kubernetes[KubernetesField.POD] === plan.name).map((rec) => Number(/ seq=(\d+) /.exec(rec.message)?.[1]));
      assert.deepEqual([...new Set(seqs)].sort((a, b) => a - b), Array.from({ length: plan.lines + 1 }, (_, i) => i), `${plan.name}: every line once`);
    }
    assert.equal(new Set(s3Records.map((rec) => rec.event_id)).size, s3Records.length, 'event ids unique');

    // Each record carries the metadata of the real pod that wrote it. Mismatches are collected per
    // pod and field (with the first and last sequence numbers affected) and asserted at once.
    const mismatches = new Map<string, { count: number; firstSeq: number; lastSeq: number; got: string }>();
    const check = (record: LogRecord, field: string, actual: unknown, wanted: unknown): void => {
      if (JSON.stringify(actual) === JSON.stringify(wanted)) return;
      const key = `${record.kubernetes[KubernetesField.POD]} ${field}`;
      const seq = Number(/ seq=(\d+) /.exec(record.message)?.[1]);
      const m = mismatches.get(key) ?? { count: 0, firstSeq: seq, lastSeq: seq, got: actual === undefined ? 'undefined' : JSON.stringify(actual) };
      m.count += 1;
      m.firstSeq = Math.min(m.firstSeq, seq);
      m.lastSeq = Math.max(m.lastSeq, seq);
      mismatches.set(key, m);
    };
    for (const record of s3Records) {
      const k = record.kubernetes;
      const pod = seen.get(k[KubernetesField.POD]);
      assert.ok(pod);
      const status = pod.status?.containerStatuses?.find((c) => c.name === 'app');
      check(record, 'node', k[KubernetesField.NODE], NODE_NAME);
      check(record, 'cluster', k[KubernetesField.CLUSTER], r.cluster);
      check(record, 'namespace', k[KubernetesField.NAMESPACE], r.namespace);
      check(record, 'pod_uid', k[KubernetesField.POD_UID], pod.metadata?.uid);
      check(record, 'container', k[KubernetesField.CONTAINER], 'app');
      check(record, 'labels', k[KubernetesField.LABELS], pod.metadata?.labels);
      check(record, 'container_id', k[KubernetesField.CONTAINER_ID], status?.containerID);
      check(record, 'image', k[KubernetesField.IMAGE], status?.image);
      check(record, 'metadata_fallback', record.log.flags?.includes(RecordFlag.METADATA_FALLBACK) ?? false, false);
    }
    // Long lines were split by containerd (16 KiB chunks) and joined again whole.
    const longOnes = s3Records.filter((rec) => rec.message.includes(' long '));
    assert.ok(longOnes.length > 0);
    for (const rec of longOnes) assert.equal(rec.message.length, rec.message.indexOf(' long ') + 6 + LONG_LINE_BYTES, 'a long line arrives whole');
    assert.ok(s3Records.some((rec) => rec.stream === 'stderr'), 'stderr lines');

    // The kubelet rotated the steady pods' logs while the agent was shipping them.
    for (const plan of STEADY) assert.ok((rotations.get(plan.name)?.size ?? 0) >= 1, `${plan.name}: the kubelet rotated its log (saw ${[...(rotations.get(plan.name) ?? [])].join(', ')})`);
    t.diagnostic(`rotated files seen: ${JSON.stringify(Object.fromEntries([...rotations].map(([k, v]) => [k, v.size])))}`);

    // Last: each record carries the metadata of the real pod that wrote it.
    assert.deepEqual(Object.fromEntries(mismatches), {}, 'records whose metadata differs from the pod that wrote them (count, sequence numbers, value)');
  });
});

function countBy(records: readonly LogRecord[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const record of records) counts.set(record.kubernetes[KubernetesField.POD], (counts.get(record.kubernetes[KubernetesField.POD]) ?? 0) + 1);
  return new Map([...counts].sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * logship on the stack's real node (scripts/stack/node.ts): k8s/ applied through the test-node
 * overlay, the images assembled from the working tree (scripts/images.ts), workload pods whose logs
 * containerd writes and the kubelet rotates. Mid-run the agent pod is deleted (the DaemonSet
 * controller recreates it), the DaemonSet is restarted by a rollout, a workload pod is deleted, a
 * short-lived pod prints 100 lines within a second, and a container crash-loops (the kubelet restarts
 * it into 1.log, 2.log… and garbage-collects the old instances' files). At the end S3 and
 * Elasticsearch hold every line exactly once, each record enriched with the real pod's labels, uid,
 * image and the id of the container instance that wrote it.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { assembleNodeImages, type NodeImages } from '../../scripts/images.js';
import {
  AGENT_LABEL,
  aggregatorCaughtUp,
  cleanupRun,
  containerLogDir,
  containerPid,
  createCrashLoopPod,
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
import { sumMetric } from '../../scripts/metrics-text.js';
import { stackPaths } from '../../scripts/stack/context.js';
import { NODE_NAME, nodeReady } from '../../scripts/stack/node.js';
import { KubernetesField, RecordFlag, type LogRecord } from '../../shared/record.js';
import { inPrivateRange } from '../helpers/addresses.js';
import { uniqueName } from '../helpers/stack.js';

/** Three pods writing ~100 lines/s each for ~60 s (a 20,000-character line every 50): each rotates about twice at 1 MiB. */
const STEADY: WorkloadPlan[] = ['web-a', 'web-b', 'web-c'].map((name) => ({ name, lines: 6_000, linesPerTick: 20, tickSeconds: 0.2, longEvery: 50, exitAfter: false }));
/** Deleted as soon as its last line is on disk. */
const DELETED: WorkloadPlan = { name: 'doomed', lines: 1_500, linesPerTick: 20, tickSeconds: 0.2, longEvery: 50, exitAfter: false };
/** 100 lines in all (99 numbered and the last), as fast as the shell prints, then exits. */
const BURST: WorkloadPlan = { name: 'burst', lines: 99, linesPerTick: 99, tickSeconds: 0, longEvery: 0, exitAfter: true };
/**
 * A container that prints 40 lines and a last one, then fails; the kubelet restarts it after 10, 20
 * and 40 s of back-off, so 4 instances write 0.log … 3.log (about 80 s). The kubelet keeps one dead
 * instance per container: its container garbage collection (every minute) deletes older ones and
 * their log files.
 */
const CRASH = { name: 'crash', lines: 40, runs: 4 };
/** The agent pod's ops server (hostNetwork, test overlay). */
const AGENT_OPS = 'http://127.0.0.1:9102';

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

    // What the kubelet gives every pod as the API server's address: the kubernetes Service's
    // ClusterIP, outside the private ranges.
    const master = await r.kube.core.readNamespacedService({ namespace: 'default', name: 'kubernetes' });
    const webA = seen.get('web-a')?.status?.containerStatuses?.[0]?.containerID;
    assert.ok(webA);
    const workloadEnv = readFileSync(`/proc/${await containerPid(webA)}/environ`, 'utf8').split('\0');
    const serviceHost = workloadEnv.find((e) => e.startsWith('KUBERNETES_SERVICE_HOST='))?.split('=')[1];
    assert.equal(serviceHost, master.spec?.clusterIP, 'KUBERNETES_SERVICE_HOST in a workload pod');
    assert.ok(serviceHost !== undefined && !inPrivateRange(serviceHost), `KUBERNETES_SERVICE_HOST ${String(serviceHost)} outside 10/8, 172.16/12, 192.168/16`);
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

    // 2b. A crash-looping container, under this agent pod (its metrics count what it could not read).
    // Each instance's container id is taken from the pod's status while it is the last terminated one
    // (at least 10 s of back-off each), in the order they ran; the log files from the pod's folder.
    await createCrashLoopPod(r, images.workload, CRASH.name, CRASH.lines);
    const crashIds: string[] = [];
    const crashFileBytes = new Map<string, number>();
    const crashFilesDeleted = new Set<string>();
    let crashPod: V1Pod | undefined;
    let crashBusy = false;
    const noteCrash = async (): Promise<void> => {
      if (crashBusy) return;
      crashBusy = true;
      try {
        const pod = await r.kube.core.readNamespacedPod({ namespace: r.namespace, name: CRASH.name });
        crashPod = pod;
        const st = pod.status?.containerStatuses?.find((c) => c.name === 'app');
        for (const id of [st?.lastState?.terminated?.containerID, st?.state?.terminated?.containerID, st?.state?.running !== undefined ? st.containerID : undefined]) {
          if (id !== undefined && id !== '' && !crashIds.includes(id)) crashIds.push(id);
        }
        if (pod.metadata?.uid === undefined) return;
        const dir = containerLogDir(r, pod);
        const names = readdirSync(dir, { withFileTypes: true }).map((d) => d.name);
        for (const f of names.filter((n) => /^\d+\.log$/.test(n))) {
          const size = statSync(join(dir, f), { throwIfNoEntry: false })?.size;
          if (size !== undefined) crashFileBytes.set(f, Math.max(size, crashFileBytes.get(f) ?? 0));
        }
        for (const f of crashFileBytes.keys()) if (!names.includes(f)) crashFilesDeleted.add(f);
      } catch {
        // The folder appears with the first container; the next poll sees it.
      } finally {
        crashBusy = false;
      }
    };
    const watchCrash = setInterval(() => void noteCrash(), 300);
    t.after(() => clearInterval(watchCrash));

    // 3. Delete a workload pod right after its last line reached its log file.
    const doomed = seen.get(DELETED.name);
    assert.ok(doomed);
    await waitFor(`${DELETED.name}'s last line on disk`, () => logFileHolds(r, doomed, `seq=${DELETED.lines} last`), 120_000, 200);
    await r.kube.core.deleteNamespacedPod({ namespace: r.namespace, name: DELETED.name });
    log(`${DELETED.name} deleted`);

    // 4. A short-lived pod: 100 lines, then it exits.
    await createWorkloadPod(r, images.workload, BURST);
    await waitFor(`${BURST.name} Succeeded`, async () => (await remember(BURST.name)).status?.phase === 'Succeeded', 120_000);

    // The crash-looping pod ran CRASH.runs times; its last instance has exited and the kubelet waits
    // 80 s before the next. Once its lines are in Elasticsearch (or 60 s passed: then the counts
    // below say what is missing), the pod is deleted, with whatever log files the kubelet kept.
    await waitFor(
      `${CRASH.runs} instances of ${CRASH.name} exited`,
      () => {
        const st = crashPod?.status?.containerStatuses?.find((c) => c.name === 'app');
        const last = crashIds[CRASH.runs - 1];
        return last !== undefined && st?.state?.running === undefined && (st?.lastState?.terminated?.containerID === last || st?.state?.terminated?.containerID === last);
      },
      240_000,
    );
    await waitFor(`${CRASH.name}'s lines in Elasticsearch`, async () => ((await elasticsearchCountsByPod(r)).get(CRASH.name) ?? 0) >= CRASH.runs * (CRASH.lines + 1), 60_000, 1_000).catch(() => undefined);
    clearInterval(watchCrash);
    await noteCrash();
    const crashStatus = crashPod?.status?.containerStatuses?.find((c) => c.name === 'app');
    await r.kube.core.deleteNamespacedPod({ namespace: r.namespace, name: CRASH.name });
    log(`${CRASH.name}: ${crashIds.length} instances, files ${JSON.stringify(Object.fromEntries(crashFileBytes))}, deleted by the kubelet: ${[...crashFilesDeleted].join(', ')}`);
    assert.equal(crashIds.length, CRASH.runs, `container ids of ${CRASH.name}'s instances: ${crashIds.join(', ')}`);

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
    const crashRecords = (records: readonly LogRecord[]): LogRecord[] => records.filter((rec) => rec.kubernetes[KubernetesField.POD] === CRASH.name && rec.kubernetes[KubernetesField.LABELS]['logship.dev/workload'] !== undefined);
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
    const everything = await readS3Records(r);
    s3Records = everything.filter(ours);
    const crashS3 = crashRecords(everything);
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

    // The crash-looping pod: each run's lines arrived all, exactly once, from the file of the instance
    // that wrote them (`<run>.log`) and with that instance's container id; or none, and then the
    // kubelet deleted that file and the agent counted its bytes as lost.
    const runOf = (rec: LogRecord): number => Number(/ run=(\d+) /.exec(rec.message)?.[1]);
    const delivered: number[] = [];
    const missing: number[] = [];
    for (let run = 0; run < CRASH.runs; run++) {
      const seqs = crashS3.filter((rec) => runOf(rec) === run).map((rec) => Number(/ seq=(\d+) /.exec(rec.message)?.[1]));
      if (seqs.length === 0) {
        missing.push(run);
        continue;
      }
      delivered.push(run);
      assert.deepEqual(seqs.sort((a, b) => a - b), Array.from({ length: CRASH.lines + 1 }, (_, i) => i), `${CRASH.name} run ${run}: every line once`);
    }
    assert.equal(crashS3.length, delivered.length * (CRASH.lines + 1), `${CRASH.name}: no line outside runs 0-${CRASH.runs - 1}`);
    assert.equal(esCounts.get(CRASH.name) ?? 0, crashS3.length, `${CRASH.name}: Elasticsearch documents = S3 rows`);
    assert.equal(new Set(crashS3.map((rec) => rec.event_id)).size, crashS3.length, `${CRASH.name}: event ids unique`);
    for (const run of missing) assert.ok(crashFilesDeleted.has(`${run}.log`), `${CRASH.name} run ${run} missing although the kubelet did not delete ${run}.log`);
    // Every loss the agent counts, it logs with the file's path. Other pods' files count too (the
    // previous agent pod's last log lines, its folder deleted before this agent read them): the crash
    // pod's share is read from the log.
    const lostBytes = sumMetric(await (await fetch(`${AGENT_OPS}/metrics`, { signal: AbortSignal.timeout(5_000) })).text(), 'logship_agent_lost_bytes_total');
    const losses = lostBytesLogged(containerLogDir(r, third, 'agent'));
    t.diagnostic(`lost bytes logged by the agent: ${JSON.stringify(losses)}`);
    assert.equal(losses.reduce((sum, l) => sum + l.bytes, 0), lostBytes, 'every lost byte counted is logged with its file');
    const crashLost = losses.filter((l) => l.path.includes(`_${CRASH.name}_`)).reduce((sum, l) => sum + l.bytes, 0);
    assert.equal(crashLost, missing.reduce((sum, run) => sum + (crashFileBytes.get(`${run}.log`) ?? Number.NaN), 0), `lost bytes logged for ${CRASH.name} = bytes of its runs that never arrived (${missing.join(', ') || 'none'})`);
    for (const rec of crashS3) {
      const k = rec.kubernetes;
      const run = runOf(rec);
      check(rec, 'file', rec.log.file.slice(rec.log.file.lastIndexOf('/') + 1), `${run}.log`);
      check(rec, 'container_id', k[KubernetesField.CONTAINER_ID], crashIds[run]);
      check(rec, 'image', k[KubernetesField.IMAGE], crashStatus?.image);
      check(rec, 'pod_uid', k[KubernetesField.POD_UID], crashPod?.metadata?.uid);
      check(rec, 'labels', k[KubernetesField.LABELS], crashPod?.metadata?.labels);
      check(rec, 'node', k[KubernetesField.NODE], NODE_NAME);
      check(rec, 'metadata_fallback', rec.log.flags?.includes(RecordFlag.METADATA_FALLBACK) ?? false, false);
    }
    t.diagnostic(`${CRASH.name}: ${CRASH.runs} instances; runs delivered ${delivered.join(', ')}; missing ${missing.join(', ') || 'none'}; log files the kubelet deleted while the pod ran: ${[...crashFilesDeleted].sort().join(', ') || 'none'}; lost bytes ${lostBytes}`);

    // Last: each record carries the metadata of the real pod that wrote it.
    assert.deepEqual(Object.fromEntries(mismatches), {}, 'records whose metadata differs from the pod that wrote them (count, sequence numbers, value)');
  });
});

function countBy(records: readonly LogRecord[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const record of records) counts.set(record.kubernetes[KubernetesField.POD], (counts.get(record.kubernetes[KubernetesField.POD]) ?? 0) + 1);
  return new Map([...counts].sort(([a], [b]) => a.localeCompare(b)));
}

/** The agent's `lost bytes` log lines (path and bytes) from its container's CRI log files. */
function lostBytesLogged(dir: string): { path: string; bytes: number }[] {
  const losses: { path: string; bytes: number }[] = [];
  for (const file of readdirSync(dir).filter((f) => /^\d+\.log$/.test(f))) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      // `<time> <stream> <P|F> <message>`: the agent logs one JSON object per line.
      const message = line.split(' ').slice(3).join(' ');
      if (!message.includes('"lost bytes"')) continue;
      const entry = JSON.parse(message) as { msg?: unknown; path?: unknown; bytes?: unknown };
      if (entry.msg === 'lost bytes' && typeof entry.path === 'string' && typeof entry.bytes === 'number') losses.push({ path: entry.path, bytes: entry.bytes });
    }
  }
  return losses;
}

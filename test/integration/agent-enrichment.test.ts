import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { V1Container } from '@kubernetes/client-node';
import { ANNOTATION_EXCLUDE, ANNOTATION_EXCLUDE_CONTAINERS } from '../../agent/pod-metadata.js';
import { KubernetesField, RecordFlag, type KubernetesMetadata, type LogRecord } from '../../shared/record.js';
import { agentConfigFile, appendLines, cri, makeRoot, metricValue, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { createNamespace, createPod, deletePod, testKube } from '../helpers/kube.js';
import { stack, startStackServer, stopStackServer, uniqueName, waitFor } from '../helpers/stack.js';

/** The agent keeps a deleted pod's metadata this long; the test's writes after a deletion happen well within it. */
const DELETED_POD_GRACE_MS = 60_000;
/** `cluster` as agentConfigFile writes it. */
const CLUSTER = 'it';
const LOOKUPS = 'logship_agent_metadata_lookups_total';
const EXCLUDED = 'logship_agent_records_excluded_total';
/** The label every scenario namespace carries, so that a barrier can tell the namespace's labels arrived. */
const TEAM_LABEL = 'team';

const kube = testKube();

/** One agent (on a node name of its own), its Kafka topics and its log root, all removed when the test ends. */
interface Scenario {
  agent: AgentProcess;
  opsUrl: string;
  collector: RecordCollector;
  root: string;
  nodeName: string;
}

/**
 * Starts a collector on `<prefix>.<namespace>` for every namespace the test will write for, then the
 * real agent with Kubernetes metadata on, watching `nodeName`.
 */
async function startScenario(t: TestContext, name: string, namespaces: string[]): Promise<Scenario> {
  const topicPrefix = uniqueName(`it-enrich-${name}`);
  const topics = namespaces.map((ns) => `${topicPrefix}.${ns}`);
  const root = makeRoot();
  const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
  const nodeName = uniqueName('it-enrich-node');
  const collector = new RecordCollector();
  const started: { agent?: AgentProcess } = {};
  t.after(async () => {
    // The agent first: nothing may produce to the topics once they are deleted.
    await started.agent?.stop();
    await collector.stop(topics);
    rmSync(root, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  });
  await collector.start(topics);
  const agent = startAgentProcess(
    agentConfigFile({
      root,
      stateDir,
      topicPrefix,
      kubernetes: { enabled: true, kubeconfig: stack().kubernetes.kubeconfig, deletedPodGraceMs: DELETED_POD_GRACE_MS },
      extra: { nodeName },
    }),
  );
  started.agent = agent;
  const opsUrl = await agent.opsUrl;
  return { agent, opsUrl, collector, root, nodeName };
}

/** `<root>/<namespace>_<pod>_<uid>/<container>/0.log`, its folder created. */
function logFile(root: string, namespace: string, pod: string, uid: string, container: string): string {
  return join(podDir(root, namespace, pod, uid, container).dir, '0.log');
}

function messages(tag: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${tag}-${i}`);
}

function writeMessages(file: string, tag: string, count: number): string[] {
  const written = messages(tag, count);
  appendLines(
    file,
    written.map((m) => cri(m)),
  );
  return written;
}

function isFallback(record: LogRecord): boolean {
  return record.log.flags?.includes(RecordFlag.METADATA_FALLBACK) === true;
}

/** Records whose message is `<tag>-<n>`, by message. */
function recordsTagged(collector: RecordCollector, tag: string): Map<string, LogRecord> {
  const found = new Map<string, LogRecord>();
  const pattern = new RegExp(`^${tag}-\\d+$`);
  for (const { record } of collector.records) if (pattern.test(record.message)) found.set(record.message, record);
  return found;
}

/** Waits until every message written with `tag` arrived once, and returns their records in writing order. */
async function waitForTagged(collector: RecordCollector, tag: string, count: number, timeoutMs = 60_000): Promise<LogRecord[]> {
  await waitFor(`${count} "${tag}" records in Kafka`, () => recordsTagged(collector, tag).size >= count, timeoutMs);
  const byMessage = recordsTagged(collector, tag);
  const all = collector.records.filter((r) => byMessage.has(r.record.message));
  assert.equal(all.length, count, `"${tag}" records arrive exactly once`);
  return messages(tag, count).map((m) => {
    const record = byMessage.get(m);
    assert.ok(record, m);
    return record;
  });
}

/**
 * Appends `<tag>-<n>` lines to `file` one at a time, each after the previous one reached Kafka, until a
 * record `ready` accepts arrives. Watch events reach the agent in order, so once the lines of a pod
 * created after some change are enriched, the agent has applied that change too.
 */
async function probeUntil(collector: RecordCollector, file: string, tag: string, ready: (record: LogRecord) => boolean, timeoutMs = 60_000): Promise<LogRecord> {
  let sent = 0;
  let pending: string | undefined;
  return waitFor(
    `a "${tag}" line shipped with pod metadata`,
    () => {
      if (pending === undefined) {
        pending = `${tag}-${sent++}`;
        appendLines(file, [cri(pending)]);
        return undefined;
      }
      const line = pending;
      const arrived = collector.records.find((r) => r.record.message === line);
      if (arrived === undefined) return undefined;
      pending = undefined;
      return ready(arrived.record) ? arrived.record : undefined;
    },
    timeoutMs,
  );
}

/**
 * Creates a pod in `namespace` and writes its lines until they arrive enriched, with the namespace's
 * labels: from then on the agent knows every pod and namespace change made before this call.
 */
async function barrier(t: TestContext, scenario: Scenario, namespace: string, team: string, timeoutMs = 60_000): Promise<void> {
  const name = uniqueName('barrier');
  const uid = await createPod(t, namespace, name, scenario.nodeName, { containers: [{ name: 'probe', image: 'registry.invalid/probe:1' }] });
  await probeUntil(
    scenario.collector,
    logFile(scenario.root, namespace, name, uid, 'probe'),
    name,
    (record) => !isFallback(record) && record.kubernetes.pod_uid === uid && record.kubernetes.namespace_labels[TEAM_LABEL] === team,
    timeoutMs,
  );
}

async function lookups(opsUrl: string): Promise<{ hit: number; miss: number; fallback: number }> {
  return {
    hit: await metricValue(opsUrl, LOOKUPS, { result: 'hit' }),
    miss: await metricValue(opsUrl, LOOKUPS, { result: 'miss' }),
    fallback: await metricValue(opsUrl, LOOKUPS, { result: 'fallback' }),
  };
}

describe('agent: Kubernetes metadata on shipped records (real Kafka, real kube-apiserver)', () => {
  it('enriches lines with pod and namespace metadata, and keeps a deleted pod\'s metadata for its late lines', async (t) => {
    const namespace = uniqueName('it-enrich');
    const scenario = await startScenario(t, 'meta', [namespace]);
    const { collector, opsUrl, root, nodeName } = scenario;

    await createNamespace(t, namespace, { [TEAM_LABEL]: 'checkout', tier: 'gold' });
    const labels = { app: 'web', version: 'v3' };
    const uid = await createPod(t, namespace, 'web', nodeName, {
      labels,
      annotations: { owner: 'team-checkout', 'prometheus.io/scrape': 'true', 'kubectl.kubernetes.io/last-applied-configuration': '{"kind":"Pod"}' },
      containers: [
        { name: 'app', image: 'registry.invalid/web:3.1' },
        { name: 'sidecar', image: 'registry.invalid/envoy:1.30' },
      ],
    });
    await barrier(t, scenario, namespace, 'checkout');

    // 1. Lines of a known pod: every field from the API server, no fallback flag, counted as hits.
    const before = await lookups(opsUrl);
    const appFile = logFile(root, namespace, 'web', uid, 'app');
    writeMessages(appFile, 'app', 200);
    writeMessages(logFile(root, namespace, 'web', uid, 'sidecar'), 'sidecar', 50);
    const app = await waitForTagged(collector, 'app', 200);
    const sidecar = await waitForTagged(collector, 'sidecar', 50);
    const expected: KubernetesMetadata = {
      [KubernetesField.CLUSTER]: CLUSTER,
      [KubernetesField.NODE]: nodeName,
      [KubernetesField.NAMESPACE]: namespace,
      [KubernetesField.POD]: 'web',
      [KubernetesField.POD_UID]: uid,
      [KubernetesField.CONTAINER]: 'app',
      [KubernetesField.IMAGE]: 'registry.invalid/web:3.1',
      [KubernetesField.LABELS]: labels,
      // The manifest kubectl stores in an annotation is never copied into records.
      [KubernetesField.ANNOTATIONS]: { owner: 'team-checkout', 'prometheus.io/scrape': 'true' },
      // The API server labels every namespace with its own name.
      [KubernetesField.NAMESPACE_LABELS]: { 'kubernetes.io/metadata.name': namespace, [TEAM_LABEL]: 'checkout', tier: 'gold' },
    };
    for (const record of app) {
      assert.deepEqual(record.kubernetes, expected, record.message);
      assert.equal(record.log.flags, undefined, `${record.message} carries no flag`);
    }
    for (const record of sidecar) {
      assert.deepEqual(record.kubernetes, { ...expected, [KubernetesField.CONTAINER]: 'sidecar', [KubernetesField.IMAGE]: 'registry.invalid/envoy:1.30' }, record.message);
      assert.equal(record.log.flags, undefined, `${record.message} carries no flag`);
    }
    const after = await lookups(opsUrl);
    assert.equal(after.hit - before.hit, 250, 'every line counted as a hit');
    assert.equal(after.fallback - before.fallback, 0, 'no fallback');
    t.diagnostic(`hits ${before.hit} -> ${after.hit}, fallbacks ${before.fallback} -> ${after.fallback}`);

    // 2. The pod is deleted; its last lines, written after the agent saw the deletion, keep its metadata.
    await deletePod(namespace, 'web');
    await assert.rejects(kube.core.readNamespacedPod({ name: 'web', namespace }), (error: unknown) => (error as { code?: unknown }).code === 404, 'the pod is gone');
    // Watch events arrive in order: a pod created after the deletion being enriched proves the agent applied it.
    await barrier(t, scenario, namespace, 'checkout');
    const beforeLate = await lookups(opsUrl);
    writeMessages(appFile, 'late', 100);
    for (const record of await waitForTagged(collector, 'late', 100)) {
      assert.deepEqual(record.kubernetes, expected, record.message);
      assert.equal(record.log.flags, undefined, `${record.message} carries no flag`);
    }
    const afterLate = await lookups(opsUrl);
    assert.equal(afterLate.hit - beforeLate.hit, 100, 'late lines counted as hits');
    assert.equal(afterLate.fallback - beforeLate.fallback, 0, 'no fallback for a pod within its grace period');
    t.diagnostic(`after deletion: hits ${beforeLate.hit} -> ${afterLate.hit}, fallbacks ${beforeLate.fallback} -> ${afterLate.fallback}`);
  });

  it('drops the lines of excluded pods and containers, and counts them', async (t) => {
    const namespace = uniqueName('it-enrich-excl');
    const scenario = await startScenario(t, 'excl', [namespace]);
    const { collector, opsUrl, root, nodeName } = scenario;
    await createNamespace(t, namespace, { [TEAM_LABEL]: 'quiet' });
    const containers: V1Container[] = [
      { name: 'app', image: 'registry.invalid/app:1' },
      { name: 'sidecar', image: 'registry.invalid/proxy:2' },
    ];
    const quietUid = await createPod(t, namespace, 'quiet', nodeName, { containers, annotations: { [ANNOTATION_EXCLUDE]: 'true' } });
    const partialUid = await createPod(t, namespace, 'partial', nodeName, { containers, annotations: { [ANNOTATION_EXCLUDE_CONTAINERS]: 'sidecar' } });
    await barrier(t, scenario, namespace, 'quiet');

    const excludedBefore = await metricValue(opsUrl, EXCLUDED);
    const before = await lookups(opsUrl);
    writeMessages(logFile(root, namespace, 'quiet', quietUid, 'app'), 'quiet-app', 40);
    writeMessages(logFile(root, namespace, 'quiet', quietUid, 'sidecar'), 'quiet-sidecar', 30);
    writeMessages(logFile(root, namespace, 'partial', partialUid, 'sidecar'), 'partial-sidecar', 20);
    writeMessages(logFile(root, namespace, 'partial', partialUid, 'app'), 'partial-app', 50);

    const shipped = await waitForTagged(collector, 'partial-app', 50);
    for (const record of shipped) {
      assert.equal(record.kubernetes.pod_uid, partialUid);
      assert.equal(record.kubernetes.container, 'app');
      assert.equal(record.log.flags, undefined, `${record.message} carries no flag`);
    }
    // The drop is decided when the lines are read: once all 90 are counted, none of them can still be shipped.
    const excluded = await waitFor('90 excluded records counted', async () => {
      const value = (await metricValue(opsUrl, EXCLUDED)) - excludedBefore;
      return value >= 90 ? value : undefined;
    });
    assert.equal(excluded, 90);
    assert.deepEqual(
      collector.records.filter((r) => r.record.kubernetes.pod_uid === quietUid).map((r) => r.record.message),
      [],
      'nothing of the excluded pod reaches Kafka',
    );
    assert.deepEqual(
      collector.records.filter((r) => r.record.kubernetes.container === 'sidecar').map((r) => r.record.message),
      [],
      'nothing of the excluded container reaches Kafka',
    );
    const after = await lookups(opsUrl);
    assert.equal(after.hit - before.hit, 50, 'only the shipped lines count as lookups');
    assert.equal(after.fallback - before.fallback, 0);
    t.diagnostic(`excluded ${excludedBefore} -> ${excludedBefore + excluded}, hits ${before.hit} -> ${after.hit}`);
  });

  it('ships path-derived metadata while the API server is down, enriches known pods from its cache, and recovers', async (t) => {
    const namespace = uniqueName('it-enrich-outage');
    // A pod of a namespace the API server never knew: the agent can only read its path.
    const ghostNamespace = uniqueName('it-enrich-ghost');
    const scenario = await startScenario(t, 'outage', [namespace, ghostNamespace]);
    const { agent, collector, opsUrl, root, nodeName } = scenario;
    await createNamespace(t, namespace, { [TEAM_LABEL]: 'steady' });
    const steadyUid = await createPod(t, namespace, 'steady', nodeName, { labels: { app: 'steady' }, containers: [{ name: 'app', image: 'registry.invalid/steady:1' }] });
    await barrier(t, scenario, namespace, 'steady');
    const ghostUid = randomUUID();
    const steadyFile = logFile(root, namespace, 'steady', steadyUid, 'app');
    const ghostFile = logFile(root, ghostNamespace, 'ghost-7d9f-x2', ghostUid, 'worker');

    // While the API server is up and the watcher in sync, a pod it has never heard of is a miss.
    const unknownFile = logFile(root, ghostNamespace, 'unknown-5c8d-q1', randomUUID(), 'worker');
    const beforeMiss = await lookups(opsUrl);
    writeMessages(unknownFile, 'unknown', 15);
    for (const record of await waitForTagged(collector, 'unknown', 15)) assert.deepEqual(record.log.flags, [RecordFlag.METADATA_FALLBACK], record.message);
    const afterMiss = await lookups(opsUrl);
    assert.deepEqual([afterMiss.miss - beforeMiss.miss, afterMiss.fallback - beforeMiss.fallback], [15, 0], 'an unknown pod with the API in sync is a miss');

    const logOffset = agent.logs().length;
    const stopStart = Date.now();
    await stopStackServer('kube-apiserver');
    const outageStart = Date.now();
    try {
      // The agent noticed: its pod watch failed and it is backing off.
      await waitFor('the agent to report the failed pod watch', () => {
        const since = agent.logs().slice(logOffset);
        return since.split('\n').some((l) => l.includes('kubernetes list/watch failed') && l.includes('"resource":"pods"'));
      });
      t.diagnostic(`API server stopped in ${outageStart - stopStart} ms; the agent reported its failed pod watch ${Date.now() - outageStart} ms later`);
      const before = await lookups(opsUrl);
      writeMessages(ghostFile, 'ghost', 60);
      writeMessages(steadyFile, 'steady', 40);

      for (const record of await waitForTagged(collector, 'ghost', 60)) {
        assert.deepEqual(
          record.kubernetes,
          {
            [KubernetesField.CLUSTER]: CLUSTER,
            [KubernetesField.NODE]: nodeName,
            [KubernetesField.NAMESPACE]: ghostNamespace,
            [KubernetesField.POD]: 'ghost-7d9f-x2',
            [KubernetesField.POD_UID]: ghostUid,
            [KubernetesField.CONTAINER]: 'worker',
            [KubernetesField.LABELS]: {},
            [KubernetesField.ANNOTATIONS]: {},
            [KubernetesField.NAMESPACE_LABELS]: {},
          },
          record.message,
        );
        assert.deepEqual(record.log.flags, [RecordFlag.METADATA_FALLBACK], record.message);
      }
      for (const record of await waitForTagged(collector, 'steady', 40)) {
        assert.equal(record.kubernetes.pod_uid, steadyUid);
        assert.deepEqual(record.kubernetes.labels, { app: 'steady' }, record.message);
        assert.equal(record.kubernetes.image, 'registry.invalid/steady:1');
        assert.equal(record.kubernetes.namespace_labels[TEAM_LABEL], 'steady');
        assert.equal(record.log.flags, undefined, `${record.message} carries no flag`);
      }
      const after = await lookups(opsUrl);
      assert.equal(after.fallback - before.fallback, 60, 'fallbacks counted');
      assert.equal(after.miss - before.miss, 0, 'with the API unreachable these are fallbacks, not misses');
      assert.equal(after.hit - before.hit, 40, 'cached pods still hit');
      assert.equal(agent.child.exitCode, null, 'the agent keeps running');
      assert.equal((await fetch(`${opsUrl}/healthz`)).status, 200);
      t.diagnostic(`during the outage: fallbacks ${before.fallback} -> ${after.fallback}, hits ${before.hit} -> ${after.hit}`);
    } finally {
      await startStackServer('kubernetes');
      t.diagnostic(`API server down for ${Date.now() - outageStart} ms`);
    }

    // Back: the agent lists and watches again (after its capped backoff); a pod created now gets enriched.
    const recoveryStart = Date.now();
    await barrier(t, scenario, namespace, 'steady', 90_000);
    t.diagnostic(`metadata enrichment back ${Date.now() - recoveryStart} ms after the API server answered`);
    assert.equal(agent.child.exitCode, null);
  });
});

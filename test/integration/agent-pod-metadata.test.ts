import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import {
  ANNOTATION_EXCLUDE,
  ANNOTATION_EXCLUDE_CONTAINERS,
  ANNOTATION_MULTILINE,
  decideWatchRestart,
  PodMetadataStore,
  type MetadataHit,
  type MetadataLookup,
  type PodMetadataOptions,
  type WatchedResource,
  type WatchRestartReason,
} from '../../agent/pod-metadata.js';
import { parsePodLogPath, type PodLogPath } from '../../agent/pod-path.js';
import { createKubeClients, type KubeClients } from '../../shared/kube.js';
import { KubernetesField } from '../../shared/record.js';
import { createNamespace, createPod, deletePod, type TestPod } from '../helpers/kube.js';
import { kubernetesConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const LOG_ROOT = '/var/log/pods';
const CLUSTER = 'it-cluster';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

const kube = createKubeClients(kubernetesConfig());

interface PodOptions {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** Two containers with images; labels default to `app: <name>`. */
function testPod(name: string, options: PodOptions = {}): TestPod {
  return {
    labels: options.labels ?? { app: name },
    annotations: options.annotations,
    containers: [
      { name: 'main', image: 'registry.invalid/app:1' },
      { name: 'sidecar', image: 'registry.invalid/proxy:2' },
    ],
  };
}

/** A namespace of its own, removed when the test ends. */
async function createTestNamespace(t: TestContext, prefix: string, labels: Record<string, string>): Promise<string> {
  const name = uniqueName(prefix);
  await createNamespace(t, name, labels);
  return name;
}

/** The path the kubelet would write for this pod's container, through the real parser. */
function logPath(namespace: string, pod: string, uid: string, container = 'main'): PodLogPath {
  const parsed = parsePodLogPath(`${LOG_ROOT}/${namespace}_${pod}_${uid}/${container}/0.log`, LOG_ROOT);
  assert.ok(parsed);
  return parsed;
}

function startStore(t: TestContext, clients: KubeClients, nodeName: string, overrides: Partial<PodMetadataOptions> = {}): PodMetadataStore {
  const store = new PodMetadataStore(clients, {
    nodeName,
    cluster: CLUSTER,
    deletedPodGraceMs: 60_000,
    logger: testLogger(),
    backoff: { initialDelayMs: 50, maxDelayMs: 500 },
    ...overrides,
  });
  t.after(() => store.close());
  store.start();
  return store;
}

function hitOf(lookup: MetadataLookup): MetadataHit | undefined {
  return lookup.kind === 'hit' ? lookup : undefined;
}

describe('agent pod metadata against the real Kubernetes API server', () => {
  it('lists and watches this node only: labels, annotations, images, container ids and namespace labels, and their changes', async (t) => {
    const nodeA = uniqueName('node-a');
    const nodeB = uniqueName('node-b');
    const namespace = await createTestNamespace(t, 'it-podmeta', { team: 'payments' });
    // Present before the store starts: reaches it through the list.
    const listedUid = await createPod(t, namespace, 'listed', nodeA, testPod('listed', {
      labels: { app: 'api' },
      annotations: { owner: 'team-a', 'kubectl.kubernetes.io/last-applied-configuration': '{"kind":"Pod"}' },
    }));

    const store = startStore(t, kube, nodeA);
    assert.equal(await store.waitForFirstSync(30_000), true);
    assert.equal(store.synced, true);

    // The first list is served from the API server's watch cache ("any recent state"), which may trail
    // the pod's creation by a moment; the watch that follows delivers it in that case.
    const listed = await waitFor('the pod created before the start', () => hitOf(store.lookup(logPath(namespace, 'listed', listedUid))));
    assert.equal(listed.excluded, false);
    assert.deepEqual(listed.metadata, {
      [KubernetesField.CLUSTER]: CLUSTER,
      [KubernetesField.NODE]: nodeA,
      [KubernetesField.NAMESPACE]: namespace,
      [KubernetesField.POD]: 'listed',
      [KubernetesField.POD_UID]: listedUid,
      [KubernetesField.CONTAINER]: 'main',
      [KubernetesField.CONTAINER_ID]: undefined,
      [KubernetesField.IMAGE]: 'registry.invalid/app:1',
      [KubernetesField.LABELS]: { app: 'api' },
      [KubernetesField.ANNOTATIONS]: { owner: 'team-a' },
      // The API server labels every namespace with its own name.
      [KubernetesField.NAMESPACE_LABELS]: { 'kubernetes.io/metadata.name': namespace, team: 'payments' },
    });
    assert.equal(store.lookup(logPath(namespace, 'listed', listedUid)), listed, 'the same object answers every line');
    assert.equal(hitOf(store.lookup(logPath(namespace, 'listed', listedUid, 'sidecar')))?.metadata[KubernetesField.IMAGE], 'registry.invalid/proxy:2');

    // Created while the store runs: the other node's pod first, so that when this node's pod has
    // arrived through the watch, the other one's event (if it were delivered) would have too.
    const otherUid = await createPod(t, namespace, 'elsewhere', nodeB, testPod('elsewhere'));
    const watchedUid = await createPod(t, namespace, 'watched', nodeA, testPod('watched', { labels: { app: 'worker' } }));
    const watched = await waitFor('the watched pod to arrive', () => hitOf(store.lookup(logPath(namespace, 'watched', watchedUid))));
    assert.deepEqual(watched.metadata[KubernetesField.LABELS], { app: 'worker' });
    assert.equal(watched.metadata[KubernetesField.NAMESPACE_LABELS].team, 'payments');
    assert.equal(store.lookup(logPath(namespace, 'elsewhere', otherUid)).kind, 'fallback', "another node's pod never appears");

    // A label change.
    await kube.core.patchNamespacedPod({ name: 'listed', namespace, body: { metadata: { labels: { app: 'api', track: 'canary' } } } }, mergePatch);
    await waitFor('the label change', () => hitOf(store.lookup(logPath(namespace, 'listed', listedUid)))?.metadata[KubernetesField.LABELS].track === 'canary');

    // The runtime's container id, as the kubelet would report it in the pod status.
    await kube.core.patchNamespacedPodStatus(
      {
        name: 'listed',
        namespace,
        body: { status: { containerStatuses: [{ name: 'main', containerID: 'containerd://0123abcd', image: 'registry.invalid/app:1', imageID: '', ready: true, restartCount: 0 }] } },
      },
      mergePatch,
    );
    await waitFor(
      'the container id from the pod status',
      () => hitOf(store.lookup(logPath(namespace, 'listed', listedUid)))?.metadata[KubernetesField.CONTAINER_ID] === 'containerd://0123abcd',
    );

    // A namespace label change reaches the metadata of every cached pod of that namespace.
    await kube.core.patchNamespace({ name: namespace, body: { metadata: { labels: { team: 'payments', tier: 'gold' } } } }, mergePatch);
    await waitFor('the namespace label change', () =>
      [logPath(namespace, 'listed', listedUid), logPath(namespace, 'watched', watchedUid)].every(
        (p) => hitOf(store.lookup(p))?.metadata[KubernetesField.NAMESPACE_LABELS].tier === 'gold',
      ),
    );
    assert.equal(store.lookup(logPath(namespace, 'elsewhere', otherUid)).kind, 'fallback');
    assert.equal(store.synced, true);
  });

  it('keeps a deleted pod for the grace period, then falls back to the path', async (t) => {
    const node = uniqueName('node-grace');
    const namespace = await createTestNamespace(t, 'it-podmeta-grace', { team: 'grace' });
    const graceMs = 1500;
    // Real time, except that it can stand still while the test checks "within the grace period".
    let frozenAt: number | undefined;
    const now = (): number => frozenAt ?? Date.now();
    const store = startStore(t, kube, node, { deletedPodGraceMs: graceMs, now });
    assert.equal(await store.waitForFirstSync(30_000), true);

    const uid = await createPod(t, namespace, 'short-lived', node, testPod('short-lived', { labels: { app: 'batch' } }));
    const path = logPath(namespace, 'short-lived', uid);
    await waitFor('the pod to arrive', () => hitOf(store.lookup(path)));

    frozenAt = Date.now();
    await deletePod(namespace, 'short-lived');
    // Watch events arrive in order: once a pod created after the deletion is seen, so was the deletion.
    const barrierUid = await createPod(t, namespace, 'barrier', node, testPod('barrier'));
    await waitFor('the pod created after the deletion', () => hitOf(store.lookup(logPath(namespace, 'barrier', barrierUid))));
    const kept = hitOf(store.lookup(path));
    assert.ok(kept, 'a deleted pod is still a hit within the grace period');
    assert.deepEqual(kept.metadata[KubernetesField.LABELS], { app: 'batch' });

    frozenAt = undefined;
    await waitFor('the grace period to end', () => store.lookup(path).kind === 'fallback', 15_000);
    const fallback = store.lookup(path);
    assert.equal(fallback.metadata[KubernetesField.POD], 'short-lived');
    assert.equal(fallback.metadata[KubernetesField.NAMESPACE], namespace);
    assert.deepEqual(fallback.metadata[KubernetesField.LABELS], {});
    assert.equal(store.lookup(logPath(namespace, 'barrier', barrierUid)).kind, 'hit', 'pods that exist stay');
  });

  it('respects the exclusion annotations and exposes the per-pod annotations the agent reads', async (t) => {
    const node = uniqueName('node-excl');
    const namespace = await createTestNamespace(t, 'it-podmeta-excl', {});
    const store = startStore(t, kube, node);
    const excludedUid = await createPod(t, namespace, 'excluded', node, testPod('excluded', { annotations: { [ANNOTATION_EXCLUDE]: 'true' } }));
    const partialUid = await createPod(t, namespace, 'partial', node, testPod('partial', {
      annotations: { [ANNOTATION_EXCLUDE_CONTAINERS]: 'sidecar', [ANNOTATION_MULTILINE]: 'java' },
    }));

    const excludedMain = await waitFor('the excluded pod', () => hitOf(store.lookup(logPath(namespace, 'excluded', excludedUid))));
    assert.equal(excludedMain.excluded, true);
    assert.equal(hitOf(store.lookup(logPath(namespace, 'excluded', excludedUid, 'sidecar')))?.excluded, true);

    const partialMain = await waitFor('the partially excluded pod', () => hitOf(store.lookup(logPath(namespace, 'partial', partialUid))));
    assert.equal(partialMain.excluded, false);
    assert.equal(hitOf(store.lookup(logPath(namespace, 'partial', partialUid, 'sidecar')))?.excluded, true);
    assert.equal(store.annotation(partialUid, ANNOTATION_MULTILINE), 'java');
    assert.equal(store.annotation(excludedUid, ANNOTATION_MULTILINE), undefined);
    assert.equal(store.annotation('00000000-0000-0000-0000-000000000000', ANNOTATION_MULTILINE), undefined);

    // Removing the annotation lets the pod's lines through again.
    await kube.core.patchNamespacedPod({ name: 'excluded', namespace, body: { metadata: { annotations: { [ANNOTATION_EXCLUDE]: null } } } }, mergePatch);
    await waitFor('the exclusion to be lifted', () => hitOf(store.lookup(logPath(namespace, 'excluded', excludedUid)))?.excluded === false);
  });

  it('classifies what the server says about a too old resourceVersion as "relist"', async () => {
    // The server keeps a bounded history; resourceVersion 1 is older than any of it.
    let status: unknown;
    let done = false;
    const controller = await kube.watch.watch(
      '/api/v1/namespaces',
      { resourceVersion: '1', allowWatchBookmarks: true },
      (type: string, object: unknown) => {
        if (type === 'ERROR') status = object;
      },
      () => (done = true),
    );
    try {
      await waitFor('the watch of resourceVersion 1 to be refused', () => status !== undefined || done, 15_000);
    } finally {
      controller.abort();
    }
    assert.ok(status !== undefined, 'the server answers with an ERROR event');
    assert.deepEqual(decideWatchRestart({ kind: 'status', status }), { action: 'relist', reason: 'gone' });
  });

  it('answers with fallbacks and never throws when the API server is unreachable', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'logship-kubeconfig-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{ name: nowhere, cluster: { server: "https://127.0.0.1:1", insecure-skip-tls-verify: true } }]',
        'users: [{ name: nobody, user: { token: not-a-real-token } }]',
        'contexts: [{ name: nowhere, context: { cluster: nowhere, user: nobody } }]',
        'current-context: nowhere',
        '',
      ].join('\n'),
    );
    const restarts: { resource: WatchedResource; reason: WatchRestartReason }[] = [];
    const store = startStore(t, createKubeClients({ kubeconfig }), 'node-unreachable', {
      onWatchRestart: (resource, reason) => restarts.push({ resource, reason }),
    });

    const path = logPath('payments', 'api-7f9c-x2', '7f3c1e2a-9b4d-4c8e-a1f0-2d6e8b9c0a11');
    const lookup = store.lookup(path);
    assert.equal(lookup.kind, 'fallback');
    assert.deepEqual(lookup.metadata, {
      [KubernetesField.CLUSTER]: CLUSTER,
      [KubernetesField.NODE]: 'node-unreachable',
      [KubernetesField.NAMESPACE]: 'payments',
      [KubernetesField.POD]: 'api-7f9c-x2',
      [KubernetesField.POD_UID]: '7f3c1e2a-9b4d-4c8e-a1f0-2d6e8b9c0a11',
      [KubernetesField.CONTAINER]: 'main',
      [KubernetesField.LABELS]: {},
      [KubernetesField.ANNOTATIONS]: {},
      [KubernetesField.NAMESPACE_LABELS]: {},
    });
    assert.equal(await store.waitForFirstSync(300), false);
    await waitFor('retries of both resources', () =>
      (['pods', 'namespaces'] as const).every((r) => restarts.filter((e) => e.resource === r && e.reason === 'error').length >= 2),
    );
    assert.equal(store.synced, false);
    assert.equal(store.lookup(path), lookup);
    await store.close();
    assert.equal(store.synced, false);
  });
});

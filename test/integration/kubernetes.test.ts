import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { createKubeClients } from '../../shared/kube.js';
import { deleteNamespaceNow, ensureDefaultServiceAccount } from '../../scripts/stack/namespaces.js';
import { kubernetesConfig, uniqueName, waitFor } from '../helpers/stack.js';

function pod(name: string, nodeName: string): V1Pod {
  return {
    metadata: { name, labels: { app: name } },
    spec: { nodeName, containers: [{ name: 'main', image: 'registry.invalid/app:1' }] },
  };
}

describe('Kubernetes API server (real) through shared/kube', () => {
  const kube = createKubeClients(kubernetesConfig());
  const namespace = uniqueName('it-kube');
  const nodeA = uniqueName('node-a');
  const nodeB = uniqueName('node-b');

  before(async () => {
    await kube.core.createNamespace({ body: { metadata: { name: namespace, labels: { team: 'payments' } } } });
    await ensureDefaultServiceAccount(kube.core, namespace);
  });

  after(async () => {
    // No kubelet confirms deletions here, so pods bound to a node are removed with a zero grace period.
    for (const name of ['pod-a', 'pod-b']) await kube.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
    await deleteNamespaceNow(kube.core, namespace).catch(() => undefined);
  });

  it('lists only the pods of one node with a spec.nodeName field selector, and watches one change', async () => {
    await kube.core.createNamespacedPod({ namespace, body: pod('pod-a', nodeA) });
    await kube.core.createNamespacedPod({ namespace, body: pod('pod-b', nodeB) });

    const list = await kube.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeA}` });
    assert.deepEqual(list.items.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`), [`${namespace}/pod-a`]);
    assert.ok(list.metadata?.resourceVersion);

    const ns = await kube.core.readNamespace({ name: namespace });
    assert.equal(ns.metadata?.labels?.team, 'payments');

    const events: { type: string; name: string; track?: string }[] = [];
    let watchError: unknown;
    let stopping = false;
    const controller = await kube.watch.watch(
      '/api/v1/pods',
      { fieldSelector: `spec.nodeName=${nodeA}`, resourceVersion: list.metadata.resourceVersion, allowWatchBookmarks: false },
      (type, obj: V1Pod) => events.push({ type, name: obj.metadata?.name ?? '', track: obj.metadata?.labels?.track }),
      (error: unknown) => {
        if (!stopping) watchError = error;
      },
    );
    try {
      await kube.core.patchNamespacedPod(
        { name: 'pod-a', namespace, body: { metadata: { labels: { track: 'canary' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      // A change to the other node's pod must not reach this node's watch.
      await kube.core.patchNamespacedPod(
        { name: 'pod-b', namespace, body: { metadata: { labels: { track: 'stable' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      await kube.core.deleteNamespacedPod({ name: 'pod-a', namespace, gracePeriodSeconds: 0 });
      await waitFor('MODIFIED then DELETED of pod-a', () => events.some((e) => e.type === 'DELETED') || watchError !== undefined, 30_000);
    } finally {
      stopping = true;
      controller.abort();
    }
    assert.equal(watchError, undefined, 'the watch must not end on its own');
    // The label change arrives first; deletion may add a MODIFIED (deletionTimestamp set) before DELETED.
    assert.deepEqual(events[0], { type: 'MODIFIED', name: 'pod-a', track: 'canary' });
    assert.deepEqual(events.at(-1), { type: 'DELETED', name: 'pod-a', track: 'canary' });
    assert.deepEqual(new Set(events.map((e) => e.name)), new Set(['pod-a']), 'nothing from the other node');
  });
});

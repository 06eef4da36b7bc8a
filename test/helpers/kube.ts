/**
 * Kubernetes objects for integration tests against the stack's API server. No kubelet runs there:
 * pods bound to a node stay Pending, and deleting one needs a zero grace period.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { V1Container } from '@kubernetes/client-node';
import { deleteNamespaceNow, ensureDefaultServiceAccount } from '../../scripts/stack/namespaces.js';
import { createKubeClients, type KubeClients } from '../../shared/kube.js';
import { kubernetesConfig } from './stack.js';

let clients: KubeClients | undefined;

/** The admin clients of the stack's API server, made on first use. */
export function testKube(): KubeClients {
  clients ??= createKubeClients(kubernetesConfig());
  return clients;
}

export interface TestPod {
  containers: V1Container[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** Creates a namespace and registers its removal (after the test's pods: `t.after` runs last-registered first). */
export async function createNamespace(t: TestContext, name: string, labels: Record<string, string>): Promise<void> {
  const kube = testKube();
  await kube.core.createNamespace({ body: { metadata: { name, labels } } });
  t.after(async () => {
    await deleteNamespaceNow(kube.core, name).catch(() => undefined);
  });
  await ensureDefaultServiceAccount(kube.core, name);
}

/** Creates a pod bound to `nodeName` and registers its removal; returns the uid the API server gave it. */
export async function createPod(t: TestContext, namespace: string, name: string, nodeName: string, pod: TestPod): Promise<string> {
  const created = await testKube().core.createNamespacedPod({
    namespace,
    body: { metadata: { name, labels: pod.labels, annotations: pod.annotations }, spec: { nodeName, containers: pod.containers } },
  });
  t.after(async () => {
    await deletePod(namespace, name).catch(() => undefined);
  });
  const uid = created.metadata?.uid;
  assert.ok(uid, 'the API server assigns a uid');
  return uid;
}

/** Zero grace: without a kubelet nothing would ever confirm a graceful deletion. */
export async function deletePod(namespace: string, name: string): Promise<void> {
  await testKube().core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
}

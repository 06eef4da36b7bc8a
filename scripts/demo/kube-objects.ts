/** The demo's namespaces and pods in the stack's kube-apiserver, bound to the demo's node. */
import type { KubeClients } from '../../shared/kube.js';
import { deleteNamespaceNow, ensureDefaultServiceAccount } from '../stack/namespaces.js';
import type { Cleanup } from './cleanup.js';
import type { RunNames } from './run-names.js';
import { NAMESPACE_LABELS, PODS, type ContainerPlan, type PodPlan, type Random } from './workload.js';

export interface CreatedContainer {
  pod: PodPlan;
  podName: string;
  namespace: string;
  uid: string;
  plan: ContainerPlan;
}

export async function createKubeObjects(kube: KubeClients, names: RunNames, rnd: Random, cleanup: Cleanup): Promise<CreatedContainer[]> {
  for (const [logical, namespace] of Object.entries(names.namespaces) as [PodPlan['namespace'], string][]) {
    await kube.core.createNamespace({ body: { metadata: { name: namespace, labels: { ...NAMESPACE_LABELS[logical], 'logship.io/demo-run': names.id } } } });
    cleanup.add(`namespace ${namespace}`, true, () => deleteNamespaceNow(kube.core, namespace));
    await ensureDefaultServiceAccount(kube.core, namespace);
  }
  const created: CreatedContainer[] = [];
  // Names and hashes the way a Deployment's ReplicaSet makes them.
  const alnum = 'bcdfghjklmnpqrstvwxz2456789';
  const random = (length: number): string => Array.from({ length }, () => alnum.charAt(Math.floor(rnd() * alnum.length))).join('');
  for (const pod of PODS) {
    const namespace = names.namespaces[pod.namespace];
    const hash = random(10);
    const podName = `${pod.name}-${hash}-${random(5)}`;
    const response = await kube.core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: podName, labels: { ...pod.labels, 'pod-template-hash': hash }, annotations: { 'logship.io/demo-run': names.id } },
        spec: { nodeName: names.nodeName, containers: pod.containers.map((c) => ({ name: c.name, image: c.image })) },
      },
    });
    // No kubelet confirms a graceful deletion: zero grace.
    cleanup.add(`pod ${namespace}/${podName}`, true, () => kube.core.deleteNamespacedPod({ name: podName, namespace, gracePeriodSeconds: 0 }));
    const uid = response.metadata?.uid;
    if (uid === undefined) throw new Error(`the API server gave pod ${namespace}/${podName} no uid`);
    for (const plan of pod.containers) created.push({ pod, podName, namespace, uid, plan });
  }
  return created;
}

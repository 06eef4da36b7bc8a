/**
 * Deleting a namespace in the stack's API server. No controller-manager runs there, so a deleted
 * namespace would stay Terminating for good, and every agent started later (benchmarks, tests, the
 * demo) would list it and keep its labels: 679 had piled up after a day of benchmark runs. After the
 * delete, this does the namespace controller's last step itself: it clears the `kubernetes` finalizer.
 * Callers delete what the namespace holds first (pods with a zero grace period: no kubelet confirms a
 * deletion either).
 */
import type { CoreV1Api, V1Namespace } from '@kubernetes/client-node';
import { waitFor } from '../wait-for.js';

export async function deleteNamespaceNow(core: CoreV1Api, name: string): Promise<void> {
  await ignoreNotFound(core.deleteNamespace({ name }));
  const current = await ignoreNotFound(core.readNamespace({ name }));
  if (!current) return;
  const body: V1Namespace = { metadata: { name, resourceVersion: current.metadata?.resourceVersion }, spec: { finalizers: [] } };
  await ignoreNotFound(core.replaceNamespaceFinalize({ name, body }));
}

async function ignoreNotFound<T>(request: Promise<T>): Promise<T | undefined> {
  try {
    return await request;
  } catch (error) {
    if ((error as { code?: unknown }).code === 404) return undefined;
    throw error;
  }
}

/**
 * Waits (at most `timeoutMs`) until the controller-manager created the namespace's `default`
 * ServiceAccount: with the ServiceAccount admission plugin on, a pod created before it is refused.
 */
export async function waitForDefaultServiceAccount(core: CoreV1Api, namespace: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(`the default ServiceAccount of namespace ${namespace} (is the controller-manager running?)`, () => core.readNamespacedServiceAccount({ name: 'default', namespace }), timeoutMs, 100);
}

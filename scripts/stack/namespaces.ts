/**
 * Deleting a namespace in the stack's API server. No controller-manager runs there, so a deleted
 * namespace would stay Terminating for good, and every agent started later (benchmarks, tests, the
 * demo) would list it and keep its labels: 679 had piled up after a day of benchmark runs. After the
 * delete, this does the namespace controller's last step itself: it clears the `kubernetes` finalizer.
 * Callers delete what the namespace holds first (pods with a zero grace period: no kubelet confirms a
 * deletion either).
 */
import type { CoreV1Api, V1Namespace } from '@kubernetes/client-node';

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
 * Makes sure the namespace has its `default` ServiceAccount: with the ServiceAccount admission plugin
 * on, a pod created before it exists is refused. The controller-manager creates it when the stack's
 * node runs; without the node (`stack up kubernetes` alone) nothing would, so this creates the same
 * object itself, and takes the controller's if it came first.
 */
export async function ensureDefaultServiceAccount(core: CoreV1Api, namespace: string): Promise<void> {
  try {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: 'default', namespace } } });
  } catch (error) {
    if ((error as { code?: unknown }).code !== 409) throw error;
  }
}

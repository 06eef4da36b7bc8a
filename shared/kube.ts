/**
 * The project's one entry to the Kubernetes API client: where credentials come from (in-cluster
 * service account, or a kubeconfig file) and the typed APIs the project uses.
 */
import { CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import { z } from 'zod';

export const kubernetesConnectionSchema = z.strictObject({
  kubeconfig: z
    .string()
    .optional()
    .describe('Path of a kubeconfig file. When absent: the in-cluster service account if running in a pod, else the default kubeconfig ($KUBECONFIG or ~/.kube/config).'),
  context: z.string().optional().describe('Context to use from the kubeconfig file (default: its current context).'),
});

export type KubernetesConnectionConfig = z.output<typeof kubernetesConnectionSchema>;

export interface KubeClients {
  config: KubeConfig;
  core: CoreV1Api;
  watch: Watch;
  /** The API server URL in use, for logs. */
  server: string;
}

export function createKubeClients(config: KubernetesConnectionConfig): KubeClients {
  const kc = new KubeConfig();
  if (config.kubeconfig !== undefined) kc.loadFromFile(config.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (config.context !== undefined) kc.setCurrentContext(config.context);
  return { config: kc, core: kc.makeApiClient(CoreV1Api), watch: new Watch(kc), server: kc.getCurrentCluster()?.server ?? '' };
}

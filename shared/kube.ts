/**
 * The project's one entry to the Kubernetes API client: where credentials come from (in-cluster
 * service account, or a kubeconfig file) and the typed APIs the project uses.
 *
 * The client library is loaded on first use, not when this module is imported: unbundled it pulls in
 * every generated API and model of Kubernetes (about 70 MiB of resident memory, 1–2 s of start-up),
 * which a process that never talks to the API server (the agent with enrichment off, the config
 * tools) should not pay for. The binaries call `loadKubeLibrary()` first: in their bundles that loads
 * only the parts shared/kube-library.ts names (about 15 MiB). Elsewhere (tests, tools) the whole
 * library is `require`d synchronously (Node >= 20.19 `require`s ES modules).
 */
import { createRequire } from 'node:module';
import type { ConfigurationOptions, CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
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
  /** Options for a `core` call that abort the request when `signal` aborts (the generated client takes no signal otherwise). */
  withSignal: (signal: AbortSignal) => ConfigurationOptions;
}

type KubeLibrary = typeof import('./kube-library.js');

let library: KubeLibrary | undefined;

/** Loads the client library's parts the project uses (a chunk of its own in the bundled binaries). */
export async function loadKubeLibrary(): Promise<void> {
  library ??= await import('./kube-library.js');
}

function loadClient(): KubeLibrary {
  library ??= createRequire(import.meta.url)('@kubernetes/client-node') as KubeLibrary;
  return library;
}

export function createKubeClients(config: KubernetesConnectionConfig): KubeClients {
  const k8s = loadClient();
  const kc = new k8s.KubeConfig();
  if (config.kubeconfig !== undefined) kc.loadFromFile(config.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (config.context !== undefined) kc.setCurrentContext(config.context);
  const withSignal = (signal: AbortSignal): ConfigurationOptions => ({
    middleware: [
      {
        pre: (context) => {
          context.setSignal(signal);
          return new k8s.Observable(Promise.resolve(context));
        },
        post: (context) => new k8s.Observable(Promise.resolve(context)),
      },
    ],
    middlewareMergeStrategy: 'append',
  });
  return { config: kc, core: kc.makeApiClient(k8s.CoreV1Api), watch: new k8s.Watch(kc), server: kc.getCurrentCluster()?.server ?? '', withSignal };
}

/**
 * What the deployment tests need: kubectl and kustomize of the stack's version, the rendered
 * manifests as objects, wrappers that apply them under a unique namespace and name suffix, tokens of
 * ServiceAccounts with a kubeconfig around them, SubjectAccessReviews, and the built binaries started
 * from a clean folder as the image starts them.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { AuthorizationV1Api, type V1ResourceAttributes } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { REPO_ROOT, stackPaths } from '../../scripts/stack/context.js';
import { kubeBinary } from '../../scripts/stack/kubernetes.js';
import { testKube } from './kube.js';
import { exitOf } from './process.js';
import { stack } from './stack.js';

export const K8S_DIR = join(REPO_ROOT, 'k8s');
export const RBAC_DIR = join(REPO_ROOT, 'rbac');

/** A Kubernetes object as kustomize renders it. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; never rejects on a non-zero exit (the caller asserts on `code`). */
export function run(command: string, args: string[], options: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { cwd: options.cwd ?? REPO_ROOT, env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(new Error(`${command} ${args.join(' ')} failed to run: ${error.message}\n${stderr}`));
          return;
        }
        resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** kubectl of the stack's Kubernetes version, as the stack's admin. */
export function kubectl(args: string[], input?: string): Promise<CommandResult> {
  return run(kubeBinary(stackPaths(), 'kubectl'), ['--kubeconfig', stack().kubernetes.kubeconfig, ...args], { input });
}

/** Like {@link kubectl}, throwing with kubectl's output unless it exits 0. */
export async function kubectlOk(args: string[], input?: string): Promise<CommandResult> {
  const result = await kubectl(args, input);
  if (result.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${result.code}:\n${result.stderr}${result.stdout}`);
  return result;
}

/** `kubectl kustomize <dir>`, parsed into objects. */
export async function kustomize(dir: string): Promise<KubeObject[]> {
  const { stdout } = await kubectlOk(['kustomize', dir]);
  return parseObjects(stdout);
}

export function parseObjects(yamlText: string): KubeObject[] {
  return parseAllDocuments(yamlText)
    .map((doc) => doc.toJS() as KubeObject | null)
    .filter((o): o is KubeObject => o !== null);
}

export function findObject(objects: readonly KubeObject[], kind: string, name?: string): KubeObject {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found === undefined) throw new Error(`no ${kind}${name === undefined ? '' : ` named ${name}`} among ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return found;
}

export interface WrapOptions {
  /** Kustomization folders to include (base, overlay, rbac…). */
  resources: string[];
  /** Kustomize components to add. */
  components?: string[];
  /** Namespace every namespaced object (and the Namespace object itself) moves to. */
  namespace: string;
  /** Appended to every name, cluster-scoped ones included, with references kept consistent. */
  nameSuffix: string;
}

/** Registers a clean-up step: `(fn) => t.after(fn)` inside a test, or node:test's `after` in a suite. */
export type Cleanup = (fn: () => void | Promise<void>) => void;

/**
 * A temporary kustomization around the project's own: the same objects under a namespace and name
 * suffix of the test's, so that runs never collide with each other nor with a real `logship`
 * namespace (the stack has no namespace controller: a deleted namespace stays Terminating forever).
 * Returns its folder, removed when the test ends.
 */
export function wrapKustomization(cleanup: Cleanup, options: WrapOptions): string {
  const dir = mkdtempSync(join(tmpdir(), 'logship-kustomize-'));
  cleanup(() => rmSync(dir, { recursive: true, force: true }));
  // kustomize accepts only relative paths to other kustomizations.
  const rel = (path: string): string => relative(dir, path);
  const kustomization = {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    namespace: options.namespace,
    nameSuffix: options.nameSuffix,
    resources: options.resources.map(rel),
    ...(options.components && options.components.length > 0 ? { components: options.components.map(rel) } : {}),
  };
  writeFileSync(join(dir, 'kustomization.yaml'), stringify(kustomization));
  return dir;
}

/** A token of a ServiceAccount from the TokenRequest API (no controller needed), valid `expirationSeconds`. */
export async function serviceAccountToken(namespace: string, name: string, expirationSeconds = 3600): Promise<string> {
  // Empty audiences: the API server's own.
  const response = await testKube().core.createNamespacedServiceAccountToken({ name, namespace, body: { spec: { audiences: [], expirationSeconds } } });
  const token = response.status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
  return token;
}

/**
 * A kubeconfig that authenticates with `token` only (no client certificate, nothing of the admin's):
 * the stack's API server and CA. Mode 0600, removed when the test ends.
 */
export function tokenKubeconfig(cleanup: Cleanup, token: string, caFile = stack().kubernetes.caFile): string {
  const dir = mkdtempSync(join(tmpdir(), 'logship-kubeconfig-'));
  cleanup(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'kubeconfig');
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'stack', cluster: { server: stack().kubernetes.server, 'certificate-authority': caFile } }],
    users: [{ name: 'service-account', user: { token } }],
    contexts: [{ name: 'service-account', context: { cluster: 'stack', user: 'service-account' } }],
    'current-context': 'service-account',
  };
  writeFileSync(file, stringify(config), { mode: 0o600 });
  return file;
}

/** The user name and groups the API server gives a ServiceAccount's token. */
export function serviceAccountUser(namespace: string, name: string): { user: string; groups: string[] } {
  return { user: `system:serviceaccount:${namespace}:${name}`, groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'] };
}

let authorization: AuthorizationV1Api | undefined;

/** Asks the API server (as admin) whether `user` in `groups` may do what `attributes` say. */
export async function subjectAccessReview(subject: { user: string; groups: string[] }, attributes: V1ResourceAttributes): Promise<{ allowed: boolean; reason: string }> {
  authorization ??= testKube().config.makeApiClient(AuthorizationV1Api);
  const review = await authorization.createSubjectAccessReview({ body: { spec: { user: subject.user, groups: subject.groups, resourceAttributes: attributes } } });
  return { allowed: review.status?.allowed === true, reason: review.status?.reason ?? '' };
}

// ---- the built binaries, from a folder laid out like the image ----------------------------------

/** Who a process runs as, like a pod's securityContext: uid, gid and the supplementary groups. */
export interface RunAs {
  uid: number;
  gid: number;
  groups: number[];
}

export interface BuiltProcess {
  child: ChildProcess;
  /** The ops server's URL, from the "ops server listening" log line. */
  opsUrl: Promise<string>;
  logs: () => string;
  exited: Promise<number | null>;
  /** SIGTERM, then the exit code. */
  stop: () => Promise<number | null>;
}

/**
 * Starts `node dist/<binary>/main.js --config <file>` from `appDir` with only `env` (plus PATH), as
 * the image's ENTRYPOINT does. With `runAs` (and a root test runner) the process gets exactly that
 * uid, gid and supplementary groups, every capability dropped and no_new_privs, through setpriv, so
 * that file permissions apply as in the pod.
 */
export function startBuiltBinary(appDir: string, binary: 'agent' | 'aggregator', configFile: string, env: Record<string, string>, runAs?: RunAs): BuiltProcess {
  const node = [process.execPath, join(appDir, `${binary}.mjs`), '--config', configFile];
  const command = runAs === undefined ? node : ['setpriv', `--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, `--groups=${runAs.groups.join(',')}`, '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--', ...node];
  const [file, ...args] = command as [string, ...string[]];
  const child = spawn(file, args, { cwd: appDir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let resolveUrl: (url: string) => void = () => undefined;
  const opsUrl = new Promise<string>((resolve) => (resolveUrl = resolve));
  const onData = (chunk: Buffer): void => {
    output += chunk.toString();
    const match = /"address":"([\d.]+:\d+)".*ops server listening/.exec(output);
    if (match?.[1]) resolveUrl(`http://${match[1]}`);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = exitOf(child, (error) => (output += `\n${String(error)}\n`));
  return {
    child,
    opsUrl,
    logs: () => output,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}


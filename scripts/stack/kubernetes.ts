/**
 * A Kubernetes API server with its etcd, both built from the Go module proxy: a wrapper module
 * (scripts/stack/kube) requires k8s.io/kubernetes and pins every staging module to the matching
 * version, which is what makes `go build k8s.io/kubernetes/cmd/kube-apiserver` possible outside the
 * kubernetes repository. etcd is the embed package of the exact version kube-apiserver depends on.
 * No kubelet, scheduler or controller-manager run: pods are stored (Pending) with `spec.nodeName`.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDir, httpGet, logFile, runLogged, runningPid, SCRIPT_DIR, StackError, startDaemon, stopDaemon, waitUntilReady, writeFileAtomic, type StackPaths } from './context.js';
import { caFile, ensureServerCertificate } from './pki.js';
import { runWithProgress } from './progress.js';
import { HOST, PORTS, VERSIONS } from './versions.js';

export { caFile } from './pki.js';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';

/**
 * The Services' virtual IP range: part of 198.18.0.0/15 (RFC 2544, benchmarking), so that no
 * address the stack hands out (the `kubernetes` Service's 198.18.0.1, which the kubelet puts into
 * every pod's KUBERNETES_SERVICE_HOST) falls in the private ranges 10/8, 172.16/12 or 192.168/16
 * that real networks use. Nothing routes to it: the stack has no kube-proxy.
 */
export const SERVICE_CIDR = '198.18.0.0/16';

export function kubeBinary(paths: StackPaths, name: 'kube-apiserver' | 'kubectl' | 'etcd'): string {
  return join(paths.bin, `${name}-${VERSIONS.kubernetes}`);
}

export function apiServerUrl(): string {
  return `https://${HOST}:${PORTS.kubeApiserver}`;
}

export function etcdUrl(): string {
  return `http://${HOST}:${PORTS.etcdClient}`;
}

export function kubeconfigPath(paths: StackPaths): string {
  return join(paths.run, 'kubernetes', 'admin.kubeconfig');
}

/**
 * A copy of the wrapper Go module (scripts/stack/kube) under the build folder, named `name`: each
 * build gets its own copy so that two can run at once (the Go build cache is shared).
 */
export function wrapperModule(paths: StackPaths, name: string): string {
  const module = ensureDir(join(paths.build, name));
  const source = join(SCRIPT_DIR, 'kube');
  copyFileSync(join(source, 'go.mod.in'), join(module, 'go.mod'));
  copyFileSync(join(source, 'go.sum'), join(module, 'go.sum'));
  copyFileSync(join(source, 'deps.go'), join(module, 'deps.go'));
  cpSync(join(source, 'etcd'), join(module, 'etcd'), { recursive: true });
  return module;
}

/**
 * etcd, kube-apiserver and kubectl in one `go build` (one process schedules every package of the
 * three on all cores and links them side by side); the node's binaries are built after it, from the
 * same Go build cache (scripts/stack/node.ts).
 */
export async function installKubernetes(paths: StackPaths): Promise<boolean> {
  const wanted = (['etcd', 'kube-apiserver', 'kubectl'] as const).filter((b) => !existsSync(kubeBinary(paths, b)));
  if (wanted.length === 0) return false;
  const log = logFile(paths, 'install-kubernetes');
  const module = wrapperModule(paths, 'kube');
  const env = { ...process.env, GOFLAGS: '-buildvcs=false -mod=mod' };
  const targets: Record<(typeof wanted)[number], string> = {
    etcd: './etcd',
    'kube-apiserver': 'k8s.io/kubernetes/cmd/kube-apiserver',
    kubectl: 'k8s.io/kubernetes/cmd/kubectl',
  };
  const out = join(paths.build, 'kube-bin');
  rmSync(out, { recursive: true, force: true });
  ensureDir(out);
  ensureDir(paths.bin);
  const names = wanted.map((b) => `${b} ${b === 'etcd' ? VERSIONS.etcd : VERSIONS.kubernetes}`).join(', ');
  // -v: each compiled package's path goes to the log, and the progress line shows the latest.
  await runWithProgress(`kubernetes: building ${names} from source (one go build; ~8 CPU-minutes on a cold Go cache)`, 'go', ['build', '-v', '-ldflags', versionLdflags(), '-o', `${out}/`, ...wanted.map((b) => targets[b])], log, { cwd: module, env });
  for (const binary of wanted) renameSync(join(out, binary), kubeBinary(paths, binary));
  return true;
}

/** Stamps the version kube-apiserver reports (a plain `go build` would say v0.0.0). */
export function versionLdflags(): string {
  const [major, minor] = VERSIONS.kubernetes.replace(/^v/, '').split('.');
  const pkg = 'k8s.io/component-base/version';
  return [`-X ${pkg}.gitVersion=${VERSIONS.kubernetes}`, `-X ${pkg}.gitMajor=${major ?? ''}`, `-X ${pkg}.gitMinor=${minor ?? ''}`, `-X ${pkg}.gitTreeState=clean`].join(' ');
}

/** API server serving certificate and service-account signing key, made once with openssl. */
async function ensurePki(paths: StackPaths): Promise<void> {
  await ensureServerCertificate(paths, 'apiserver', [`IP:${HOST}`, 'DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default.svc']);
  const pki = paths.pki;
  const log = logFile(paths, 'pki');
  if (!existsSync(join(pki, 'sa.pub'))) {
    await runLogged('openssl', ['genrsa', '-out', 'sa.key', '2048'], log, { cwd: pki });
    await runLogged('openssl', ['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], log, { cwd: pki });
  }
}

function adminToken(paths: StackPaths): string {
  const file = join(paths.pki, 'admin.token');
  if (!existsSync(file)) writeFileAtomic(file, randomBytes(24).toString('hex'), 0o600);
  return readFileSync(file, 'utf8').trim();
}

export function startEtcd(paths: StackPaths): void {
  const dir = ensureDir(join(paths.run, 'etcd'), 0o700);
  startDaemon(paths, {
    name: 'etcd',
    command: kubeBinary(paths, 'etcd'),
    args: ['--data-dir', join(dir, 'data'), '--listen-client-url', etcdUrl(), '--listen-peer-url', `http://${HOST}:${PORTS.etcdPeer}`],
    marker: `--listen-client-url ${etcdUrl()}`,
  });
}

export async function waitForEtcd(paths: StackPaths, timeoutMs: number): Promise<void> {
  await waitUntilReady(paths, 'etcd', async () => {
    const res = await httpGet(`${etcdUrl()}/health`);
    return res.status === 200 && (JSON.parse(res.body) as { health?: string }).health === 'true';
  }, timeoutMs);
}

export async function startApiServer(paths: StackPaths): Promise<void> {
  await ensurePki(paths);
  const dir = ensureDir(join(paths.run, 'kubernetes'), 0o700);
  const tokens = join(paths.pki, 'tokens.csv');
  writeFileAtomic(tokens, `${adminToken(paths)},logship-stack-admin,logship-stack-admin,"system:masters"\n`, 0o600);
  const pki = paths.pki;
  startDaemon(paths, {
    name: 'kube-apiserver',
    command: kubeBinary(paths, 'kube-apiserver'),
    args: [
      `--etcd-servers=${etcdUrl()}`,
      `--bind-address=${HOST}`,
      `--advertise-address=${HOST}`,
      `--secure-port=${PORTS.kubeApiserver}`,
      `--tls-cert-file=${join(pki, 'apiserver.crt')}`,
      `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
      `--client-ca-file=${join(pki, 'ca.crt')}`,
      `--token-auth-file=${tokens}`,
      '--authorization-mode=RBAC',
      `--service-account-issuer=${ISSUER}`,
      `--service-account-key-file=${join(pki, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      // Without a controller-manager (the node's, scripts/stack/node.ts) no "default" ServiceAccount is
      // ever created; the admission plugin that requires it would reject every pod. Tokens still work
      // (TokenRequest API). Once the node is installed, the plugin is on.
      ...(existsSync(join(paths.bin, `kube-controller-manager-${VERSIONS.kubernetes}`)) ? [] : ['--disable-admission-plugins=ServiceAccount']),
      // The "kubernetes" Service endpoint would be the loopback address, which Endpoints reject.
      '--endpoint-reconciler-type=none',
      '--profiling=false',
      `--cert-dir=${join(dir, 'certs')}`,
      '--v=1',
    ],
    marker: `--secure-port=${PORTS.kubeApiserver}`,
  });
}

/** Where the service range the stack's etcd data was made with is recorded. */
function serviceCidrStamp(paths: StackPaths): string {
  return join(paths.run, 'kubernetes', 'service-cidr');
}

/**
 * Brings an existing install to SERVICE_CIDR, once: the range lives in etcd (the default ServiceCIDR
 * object `kubernetes`, the `kubernetes` Service's ClusterIP and the IPAddress objects that hold
 * allocated IPs), and an API server started with another range keeps them. When the stamp does not
 * name SERVICE_CIDR (or an API server with another range runs, started by an older copy of this
 * script), this stops the API server (if it runs), deletes from the stack's etcd the
 * ServiceCIDR `kubernetes` unless it already holds SERVICE_CIDR, every IPAddress outside it and every
 * Service that holds one of those IPs, and leaves the API server stopped: its next start recreates
 * the ServiceCIDR and the `kubernetes` Service in the new range. Other objects are kept. Idempotent.
 * Returns true when it stopped the API server.
 */
export async function migrateServiceCidr(paths: StackPaths, progress: (message: string) => void): Promise<boolean> {
  const stamp = serviceCidrStamp(paths);
  const pid = runningPid(paths, 'kube-apiserver');
  const running = pid === undefined ? undefined : readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').find((a) => a.startsWith('--service-cluster-ip-range='));
  const runsWanted = running === undefined || running === `--service-cluster-ip-range=${SERVICE_CIDR}`;
  if (runsWanted && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === SERVICE_CIDR) return false;
  const removed = await staleServiceRangeKeys(paths);
  if (removed.length === 0 && runsWanted) {
    writeFileAtomic(stamp, `${SERVICE_CIDR}\n`);
    return false;
  }
  progress(
    `kubernetes: moving the Service range to ${SERVICE_CIDR} (${running === undefined ? 'stored' : running.replace('--service-cluster-ip-range=', 'running with ')}): ` +
      `restarting kube-apiserver once and deleting from the stack's own etcd ${removed.length === 0 ? 'nothing' : removed.join(', ')}; the API server recreates the default ServiceCIDR and the kubernetes Service`,
  );
  const stopped = await stopDaemon(paths, 'kube-apiserver');
  // Read again with the API server stopped: nothing allocates meanwhile.
  for (const key of await staleServiceRangeKeys(paths)) await etcdKv('deleterange', { key: b64(key) });
  writeFileAtomic(stamp, `${SERVICE_CIDR}\n`);
  return stopped;
}

/** The etcd keys that tie the stack to a Service range other than SERVICE_CIDR. */
export async function staleServiceRangeKeys(paths: StackPaths): Promise<string[]> {
  if (!existsSync(join(paths.run, 'etcd', 'data'))) return [];
  const keys: string[] = [];
  const cidr = await etcdRange('/registry/servicecidrs/kubernetes');
  for (const { key, value } of cidr) if (!value.includes(Buffer.from(SERVICE_CIDR))) keys.push(key);
  const staleIps = (await etcdRange('/registry/ipaddresses/', true)).map(({ key }) => key).filter((key) => !inServiceCidr(key.slice('/registry/ipaddresses/'.length)));
  keys.push(...staleIps);
  const ips = staleIps.map((key) => key.slice('/registry/ipaddresses/'.length));
  if (ips.length > 0) {
    // A Service holds its ClusterIPs as protobuf strings: a length byte, then the text.
    const needles = ips.map((ip) => Buffer.concat([Buffer.from([ip.length]), Buffer.from(ip)]));
    for (const { key, value } of await etcdRange('/registry/services/specs/', true)) if (needles.some((n) => value.includes(n))) keys.push(key);
  }
  return keys;
}

function inServiceCidr(ip: string): boolean {
  const [base = '', bits = '32'] = SERVICE_CIDR.split('/');
  const toInt = (text: string): number | undefined => {
    const parts = text.split('.').map(Number);
    return parts.length === 4 && parts.every((p) => Number.isInteger(p) && p >= 0 && p <= 255) ? parts.reduce((acc, p) => acc * 256 + p, 0) : undefined;
  };
  const value = toInt(ip);
  const start = toInt(base) ?? 0;
  return value !== undefined && value >= start && value < start + 2 ** (32 - Number(bits));
}

function b64(text: string): string {
  return Buffer.from(text).toString('base64');
}

/** The gRPC gateway of the stack's etcd (JSON over HTTP on its client URL). */
async function etcdKv(op: 'range' | 'deleterange', body: Record<string, unknown>): Promise<{ kvs?: { key: string; value?: string }[] }> {
  const res = await fetch(`${etcdUrl()}/v3/kv/${op}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new StackError(`etcd ${op} answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { kvs?: { key: string; value?: string }[] };
}

/** Keys equal to `key`, or starting with it when `prefix`. */
async function etcdRange(key: string, prefix = false): Promise<{ key: string; value: Buffer }[]> {
  const end = prefix ? Buffer.from(key) : undefined;
  if (end !== undefined) end[end.length - 1] = (end[end.length - 1] ?? 0) + 1;
  const res = await etcdKv('range', { key: b64(key), ...(end === undefined ? {} : { range_end: end.toString('base64') }) });
  return (res.kvs ?? []).map((kv) => ({ key: Buffer.from(kv.key, 'base64').toString(), value: Buffer.from(kv.value ?? '', 'base64') }));
}

export async function waitForApiServer(paths: StackPaths, timeoutMs: number): Promise<void> {
  const token = adminToken(paths);
  const ca = readFileSync(caFile(paths), 'utf8');
  await waitUntilReady(paths, 'kube-apiserver', () => kubeReady(token, ca), timeoutMs);
  writeKubeconfig(paths, token);
}

async function kubeReady(token: string, ca: string): Promise<boolean> {
  // fetch cannot take a CA per request; node:https can.
  const { request } = await import('node:https');
  return new Promise<boolean>((resolve, reject) => {
    const req = request(`${apiServerUrl()}/readyz`, { ca, headers: { authorization: `Bearer ${token}` }, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'ok'));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function writeKubeconfig(paths: StackPaths, token: string): void {
  const file = kubeconfigPath(paths);
  const yaml = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: logship-stack',
    '  cluster:',
    `    server: ${apiServerUrl()}`,
    `    certificate-authority: ${caFile(paths)}`,
    'users:',
    '- name: logship-stack-admin',
    '  user:',
    `    token: ${token}`,
    'contexts:',
    '- name: logship-stack',
    '  context:',
    '    cluster: logship-stack',
    '    user: logship-stack-admin',
    'current-context: logship-stack',
    '',
  ].join('\n');
  writeFileAtomic(file, yaml, 0o600);
}

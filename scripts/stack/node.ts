/**
 * A real Kubernetes node in the stack: containerd and runc from Debian, and kubelet,
 * kube-controller-manager and kube-scheduler built from the stack's Kubernetes version (one
 * `go build` in the same wrapper module as kube-apiserver). The kubelet registers the node
 * `logship-stack-node` with the stack's API server; pods scheduled there run for real and write
 * their logs to /var/log/pods, rotated by the kubelet.
 *
 * Loopback only: the kubelet serves on 127.0.0.1; pods that talk to the stack's servers use
 * hostNetwork; every other pod gets a network namespace holding only its own loopback (the CNI
 * plugin written here reports 127.0.0.1 as the pod's address; no bridge, no route).
 *
 * Needs root (containerd, mounts, cgroups). What the kubelet changes on the machine is undone by
 * `down node`: the sysctls it sets (saved before its first start), the mounts under its root folder
 * and containerd's, the network namespaces of the pods and the `kubepods` cgroups.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureDir, httpGet, logFile, runLogged, runningPid, secondsSince, StackError, startDaemon, stopDaemon, waitUntilReady, writeFileAtomic, type StackPaths } from './context.js';
import { apiServerUrl, kubeBinary, kubeconfigPath, migrateServiceCidr, startApiServer, versionLdflags, waitForApiServer, wrapperModule } from './kubernetes.js';
import type { StackEndpoints } from './endpoints.js';
import { caFile, ensureCa } from './pki.js';
import { stackLog } from './progress.js';
import { HOST, PORTS, VERSIONS } from './versions.js';

export const NODE_NAME = 'logship-stack-node';

/** The node's processes, in the order `down` stops them. */
export const NODE_SERVERS = ['kubelet', 'kube-scheduler', 'kube-controller-manager', 'containerd'] as const;
type NodeServer = (typeof NODE_SERVERS)[number];

/** Debian packages the node needs: the runtime, the CNI loopback plugin, and the image tools of scripts/images.ts. */
const DEBIAN_PACKAGES = ['containerd', 'runc', 'containernetworking-plugins', 'umoci', 'skopeo', 'busybox-static'] as const;

/** Built from the wrapper module, in one `go build`. */
const NODE_BINARIES = ['kubelet', 'kube-controller-manager', 'kube-scheduler'] as const;

/**
 * The controllers the node needs, and no more: ServiceAccounts and the root CA ConfigMap (so the
 * ServiceAccount admission plugin and projected tokens work), DaemonSets, Deployments, ReplicaSets,
 * namespace deletion, garbage collection and node health. Not podgc: other tests store pods bound to
 * nodes that do not exist, which it would delete.
 */
const CONTROLLERS = ['serviceaccount', 'root-ca-cert-publisher', 'daemonset', 'deployment', 'replicaset', 'namespace', 'garbagecollector', 'nodelifecycle'];

/** The kubelet sets these (protectKernelDefaults is off); their values before its first start are restored by `down`. */
const KUBELET_SYSCTLS = ['vm/overcommit_memory', 'kernel/panic', 'kernel/panic_on_oops'] as const;

/** The image the CRI plugin runs each pod's sandbox from (scripts/images.ts assembles and imports it). */
export const PAUSE_IMAGE = 'docker.io/logship/pause:1.0';

export interface NodePaths {
  dir: string;
  containerdConfig: string;
  containerdRoot: string;
  containerdState: string;
  containerdSocket: string;
  kubeletRoot: string;
  kubeletConfig: string;
  cniConfDir: string;
  cniBinDir: string;
  sysctlsFile: string;
}

export function nodePaths(paths: StackPaths): NodePaths {
  const dir = join(paths.run, 'node');
  return {
    dir,
    containerdConfig: join(dir, 'containerd.toml'),
    containerdRoot: join(dir, 'containerd', 'root'),
    containerdState: join(dir, 'containerd', 'state'),
    containerdSocket: join(dir, 'containerd', 'containerd.sock'),
    kubeletRoot: join(dir, 'kubelet'),
    kubeletConfig: join(dir, 'kubelet-config.yaml'),
    cniConfDir: join(dir, 'cni', 'net.d'),
    cniBinDir: join(dir, 'cni', 'bin'),
    sysctlsFile: join(dir, 'sysctls-before.json'),
  };
}

/** `ctr` against the node's containerd, in the CRI plugin's namespace. */
export function ctrArgs(paths: StackPaths, ...args: string[]): string[] {
  return ['--address', nodePaths(paths).containerdSocket, '--namespace', 'k8s.io', ...args];
}

function progress(message: string): void {
  stackLog(`node: ${message}`);
}

// ---- install ----------------------------------------------------------------------------------------

/**
 * `beforeBuild` settles when kube-apiserver's build (if one runs in the same `stack up`) is done: the
 * node's Go build then compiles only what kube-apiserver, kubectl and etcd do not share with it,
 * instead of compiling the same packages a second time at the same moment on the same cores.
 */
export async function installNode(paths: StackPaths, beforeBuild: () => Promise<void> = () => Promise.resolve()): Promise<boolean> {
  if (process.getuid?.() !== 0) throw new StackError('the node needs root (containerd, mounts, cgroups): run `stack up node` as root');
  const packages = await installDebianPackages(paths);
  if (NODE_BINARIES.some((b) => !existsSync(nodeBinary(paths, b)))) await beforeBuild();
  const built = await buildNodeBinaries(paths);
  return packages || built;
}

async function installDebianPackages(paths: StackPaths): Promise<boolean> {
  const missing = DEBIAN_PACKAGES.filter((pkg) => !debianPackageInstalled(pkg));
  if (missing.length === 0) return false;
  const log = logFile(paths, 'install-node');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const t0 = Date.now();
  progress(`apt-get install ${missing.join(' ')}`);
  try {
    await runLogged('apt-get', ['install', '-y', '--no-install-recommends', ...missing], log, { env });
  } catch {
    // A fresh machine has no package lists yet.
    progress('apt-get update');
    await runLogged('apt-get', ['update'], log, { env });
    await runLogged('apt-get', ['install', '-y', '--no-install-recommends', ...missing], log, { env });
  }
  progress(`Debian packages installed in ${secondsSince(t0)}s`);
  return true;
}

function debianPackageInstalled(pkg: string): boolean {
  try {
    const status = readFileSync('/var/lib/dpkg/status', 'utf8');
    const entry = status.split('\n\n').find((block) => block.startsWith(`Package: ${pkg}\n`));
    return entry !== undefined && /^Status: install ok installed$/m.test(entry);
  } catch {
    return false;
  }
}

export function nodeBinary(paths: StackPaths, name: (typeof NODE_BINARIES)[number]): string {
  return join(paths.bin, `${name}-${VERSIONS.kubernetes}`);
}

/**
 * kubelet, kube-controller-manager and kube-scheduler in one `go build` (they share most packages),
 * in a copy of the wrapper module of its own, after kube-apiserver's build when both are needed (the
 * Go build cache is shared). Prints how many packages it compiled every 30 s.
 */
async function buildNodeBinaries(paths: StackPaths): Promise<boolean> {
  const wanted = NODE_BINARIES.filter((b) => !existsSync(nodeBinary(paths, b)));
  if (wanted.length === 0) return false;
  const log = logFile(paths, 'install-node');
  const module = wrapperModule(paths, 'kube-node');
  const out = join(paths.build, 'node-bin');
  rmSync(out, { recursive: true, force: true });
  ensureDir(out);
  const t0 = Date.now();
  progress(`building ${wanted.join(', ')} ${VERSIONS.kubernetes} (one go build; ~2.5 CPU-minutes after kube-apiserver's build, ~9 on a cold Go cache)`);
  let packages = 0;
  const timer = setInterval(() => progress(`still building: ${packages} packages compiled, ${secondsSince(t0)}s`), 30_000);
  try {
    const fd = openSync(log, 'a');
    writeFileSync(fd, `\n$ go build -v -o ${out}/ ${wanted.join(' ')}\n`);
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('go', ['build', '-v', '-ldflags', versionLdflags(), '-o', `${out}/`, ...wanted.map((b) => `k8s.io/kubernetes/cmd/${b}`)], {
        cwd: module,
        env: { ...process.env, GOFLAGS: '-buildvcs=false -mod=mod' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      child.stderr.on('data', (chunk: Buffer) => {
        writeFileSync(fd, chunk);
        for (const line of chunk.toString().split('\n')) if (line !== '' && !line.startsWith('go: ')) packages += 1;
      });
      child.once('error', reject);
      child.once('exit', resolve);
    });
    closeSync(fd);
    if (code !== 0) throw new StackError(`go build of ${wanted.join(', ')} exited with ${String(code)}`, log);
  } finally {
    clearInterval(timer);
  }
  ensureDir(paths.bin);
  for (const binary of wanted) renameSync(join(out, binary), nodeBinary(paths, binary));
  progress(`built ${wanted.join(', ')} in ${secondsSince(t0)}s`);
  return true;
}

// ---- certificates and kubeconfigs -------------------------------------------------------------------

/** A client certificate signed by the stack's CA: the API server maps CN to the user and O to its groups. */
async function ensureClientCertificate(paths: StackPaths, name: string, user: string, group?: string): Promise<{ cert: string; key: string }> {
  await ensureCa(paths);
  const cert = join(paths.pki, `${name}.crt`);
  const key = join(paths.pki, `${name}.key`);
  if (!existsSync(cert)) {
    const log = logFile(paths, 'pki');
    const openssl = (...args: string[]): Promise<void> => runLogged('openssl', args, log, { cwd: paths.pki });
    writeFileAtomic(join(paths.pki, `${name}.ext`), ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=clientAuth', ''].join('\n'));
    await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${user}${group === undefined ? '' : `/O=${group}`}`);
    await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '3650', '-extfile', `${name}.ext`);
  }
  return { cert, key };
}

async function clientKubeconfig(paths: StackPaths, name: string, user: string, group?: string): Promise<string> {
  const { cert, key } = await ensureClientCertificate(paths, name, user, group);
  const file = join(nodePaths(paths).dir, `${name}.kubeconfig`);
  writeFileAtomic(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: logship-stack',
      '  cluster:',
      `    server: ${apiServerUrl()}`,
      `    certificate-authority: ${caFile(paths)}`,
      'users:',
      `- name: ${user}`,
      '  user:',
      `    client-certificate: ${cert}`,
      `    client-key: ${key}`,
      'contexts:',
      '- name: logship-stack',
      '  context:',
      '    cluster: logship-stack',
      `    user: ${user}`,
      'current-context: logship-stack',
      '',
    ].join('\n'),
    0o600,
  );
  return file;
}

// ---- start ------------------------------------------------------------------------------------------

/**
 * Starts what is not running: containerd, the controller-manager, the scheduler and the kubelet, and
 * waits until the node is Ready. The API server must be up; it is restarted once if it still runs
 * without the ServiceAccount admission plugin (started before the controller-manager was installed).
 */
export async function startNode(paths: StackPaths, timeoutMs = 180_000): Promise<void> {
  const node = nodePaths(paths);
  ensureDir(node.dir, 0o700);
  await ensureApiServerAdmitsServiceAccounts(paths);
  await bindNodeRole(paths);
  await ensureContainerd(paths);
  if (runningPid(paths, 'kube-controller-manager') === undefined) await startControllerManager(paths);
  if (runningPid(paths, 'kube-scheduler') === undefined) await startScheduler(paths);
  // A node object left Ready by a kubelet stopped moments ago says nothing: after a start, the status
  // must be newer than the start (a kubelet that keeps running reports only changes, or every 5 min).
  let since: number | undefined;
  if (runningPid(paths, 'kubelet') === undefined) {
    since = Date.now() - 1_000;
    await startKubelet(paths);
  }
  await waitUntilReady(
    paths,
    'kubelet',
    async () => (await httpGet(`http://${HOST}:${PORTS.kubeletHealthz}/healthz`)).status === 200 && (await nodeReady(paths, since)) === 'True',
    timeoutMs,
  );
  for (const name of ['kube-controller-manager', 'kube-scheduler'] as const) {
    const port = name === 'kube-controller-manager' ? PORTS.kubeControllerManager : PORTS.kubeScheduler;
    await waitUntilReady(paths, name, async () => (await httpsGet(`https://${HOST}:${port}/healthz`)).status === 200, 60_000);
  }
}

/** containerd running and answering, with the pod sandbox image imported. */
export async function ensureContainerd(paths: StackPaths): Promise<void> {
  if (runningPid(paths, 'containerd') === undefined) startContainerd(paths);
  await waitForContainerd(paths, 60_000);
  // The pod sandbox image, assembled here (scripts/images.ts) since no registry is reachable.
  const { ensurePauseImage } = await import('../images.js');
  ensurePauseImage(paths, progress);
}

async function ensureApiServerAdmitsServiceAccounts(paths: StackPaths): Promise<void> {
  const pid = runningPid(paths, 'kube-apiserver');
  if (pid === undefined) throw new StackError('the node needs the API server: `stack up kubernetes` first');
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  if (!cmdline.includes('--disable-admission-plugins=ServiceAccount')) return;
  progress('restarting kube-apiserver with the ServiceAccount admission plugin (the controller-manager now creates ServiceAccounts)');
  await stopDaemon(paths, 'kube-apiserver');
  await migrateServiceCidr(paths, progress);
  await startApiServer(paths);
  await waitForApiServer(paths, 120_000);
}

/**
 * The API server authorizes with RBAC alone (no Node authorizer): the kubelet's user gets the
 * built-in `system:node` role through a binding of its own.
 */
async function bindNodeRole(paths: StackPaths): Promise<void> {
  const binding = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: `logship-stack:node:${NODE_NAME}` },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:node' },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: `system:node:${NODE_NAME}` }],
  };
  const file = join(nodePaths(paths).dir, 'node-rolebinding.json');
  writeFileAtomic(file, JSON.stringify(binding));
  await runLogged(kubeBinary(paths, 'kubectl'), ['--kubeconfig', kubeconfigPath(paths), 'apply', '-f', file], logFile(paths, 'node-setup'));
}

function containerdConfig(paths: StackPaths): string {
  const node = nodePaths(paths);
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return [
    'version = 2',
    `root = "${node.containerdRoot}"`,
    `state = "${node.containerdState}"`,
    // Storage drivers this machine has no use for (they only log errors at start).
    'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    '[grpc]',
    `  address = "${node.containerdSocket}"`,
    '[ttrpc]',
    `  address = "${node.containerdSocket}.ttrpc"`,
    `[${cri}]`,
    `  sandbox_image = "${PAUSE_IMAGE}"`,
    // The machine withholds CAP_SYS_RESOURCE: runc may only raise a container's oom_score_adj.
    '  restrict_oom_score_adj = true',
    '  stream_server_address = "127.0.0.1"',
    '  enable_selinux = false',
    `[${cri}.containerd]`,
    '  snapshotter = "overlayfs"',
    '  default_runtime_name = "runc"',
    `[${cri}.containerd.runtimes.runc]`,
    '  runtime_type = "io.containerd.runc.v2"',
    `[${cri}.containerd.runtimes.runc.options]`,
    '  SystemdCgroup = false',
    `[${cri}.cni]`,
    `  bin_dir = "${node.cniBinDir}"`,
    `  conf_dir = "${node.cniConfDir}"`,
    '  max_conf_num = 1',
    '',
  ].join('\n');
}

/**
 * A CNI plugin that gives a pod nothing but its own loopback. containerd's CRI plugin brings `lo` up
 * itself (Debian's `loopback` plugin) and then wants an address for the pod's `eth0`; this reports the
 * pod's loopback address, so no interface, bridge or route is created and no pod can reach another
 * or the host.
 */
const LOOPBACK_CNI_PLUGIN = `#!/bin/sh
# logship-loopback: a CNI plugin for pods that only print (see scripts/stack/node.ts).
case "$CNI_COMMAND" in
  ADD)
    cat >/dev/null
    printf '{"cniVersion":"0.4.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"version":"4","address":"127.0.0.1/8","interface":0}]}\\n' "$CNI_IFNAME" "$CNI_NETNS"
    ;;
  VERSION)
    printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}\\n'
    ;;
  *)
    cat >/dev/null
    ;;
esac
`;

function writeCniConfig(paths: StackPaths): void {
  const node = nodePaths(paths);
  ensureDir(node.cniBinDir);
  ensureDir(node.cniConfDir);
  writeFileAtomic(join(node.cniBinDir, 'logship-loopback'), LOOPBACK_CNI_PLUGIN, 0o755);
  const loopback = join(node.cniBinDir, 'loopback');
  if (!existsSync(loopback)) symlinkSync('/usr/lib/cni/loopback', loopback);
  writeFileAtomic(join(node.cniConfDir, '10-logship-loopback.conflist'), `${JSON.stringify({ cniVersion: '0.4.0', name: 'logship-loopback', plugins: [{ type: 'logship-loopback' }] }, null, 2)}\n`);
}

function startContainerd(paths: StackPaths): void {
  const node = nodePaths(paths);
  ensureDir(node.containerdRoot, 0o700);
  ensureDir(node.containerdState, 0o700);
  writeCniConfig(paths);
  writeFileAtomic(node.containerdConfig, containerdConfig(paths));
  startDaemon(paths, { name: 'containerd', command: 'containerd', args: ['--config', node.containerdConfig], marker: `--config ${node.containerdConfig}` });
}

async function waitForContainerd(paths: StackPaths, timeoutMs: number): Promise<void> {
  await waitUntilReady(
    paths,
    'containerd',
    async () => {
      if (!existsSync(nodePaths(paths).containerdSocket)) return false;
      return (await runQuiet('ctr', ctrArgs(paths, 'version'))) === 0;
    },
    timeoutMs,
  );
}

async function startControllerManager(paths: StackPaths): Promise<void> {
  const kubeconfig = await clientKubeconfig(paths, 'kube-controller-manager', 'system:kube-controller-manager');
  startDaemon(paths, {
    name: 'kube-controller-manager',
    command: nodeBinary(paths, 'kube-controller-manager'),
    args: [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      `--bind-address=${HOST}`,
      `--secure-port=${PORTS.kubeControllerManager}`,
      '--leader-elect=false',
      `--controllers=${CONTROLLERS.join(',')}`,
      // Each controller acts as its own ServiceAccount with the built-in system:controller:* roles.
      '--use-service-account-credentials=true',
      `--root-ca-file=${caFile(paths)}`,
      `--cert-dir=${join(nodePaths(paths).dir, 'kube-controller-manager')}`,
      '--cluster-name=logship-stack',
      '--v=1',
    ],
    marker: `--secure-port=${PORTS.kubeControllerManager}`,
  });
}

async function startScheduler(paths: StackPaths): Promise<void> {
  const kubeconfig = await clientKubeconfig(paths, 'kube-scheduler', 'system:kube-scheduler');
  startDaemon(paths, {
    name: 'kube-scheduler',
    command: nodeBinary(paths, 'kube-scheduler'),
    args: [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      `--bind-address=${HOST}`,
      `--secure-port=${PORTS.kubeScheduler}`,
      '--leader-elect=false',
      `--cert-dir=${join(nodePaths(paths).dir, 'kube-scheduler')}`,
      '--v=1',
    ],
    marker: `--secure-port=${PORTS.kubeScheduler}`,
  });
}

/** What the kubelet's container logs are bounded to: rotation is real (rename + reopen, older files gzipped). */
export const CONTAINER_LOG_MAX_SIZE = '1Mi';
export const CONTAINER_LOG_MAX_FILES = 3;

function kubeletConfig(paths: StackPaths): string {
  const node = nodePaths(paths);
  const config = {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: HOST,
    port: PORTS.kubelet,
    readOnlyPort: 0,
    healthzBindAddress: HOST,
    healthzPort: PORTS.kubeletHealthz,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: caFile(paths) } },
    authorization: { mode: 'Webhook' },
    containerRuntimeEndpoint: `unix://${node.containerdSocket}`,
    // cgroup v1 hierarchies and no systemd on this machine kind. Kubernetes 1.35 drops cgroup v1.
    cgroupDriver: 'cgroupfs',
    failCgroupV1: false,
    failSwapOn: false,
    podLogsDir: '/var/log/pods',
    containerLogMaxSize: CONTAINER_LOG_MAX_SIZE,
    containerLogMaxFiles: CONTAINER_LOG_MAX_FILES,
    containerLogMonitorInterval: '3s',
    // A development machine's disk is shared with everything else: never collect images or evict for disk.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
    resolvConf: '/etc/resolv.conf',
    clusterDomain: 'cluster.local',
    volumePluginDir: join(node.kubeletRoot, 'volume-plugins'),
    // So that the API server and others' tests never place their pods here by accident: only pods that
    // tolerate the taint (the node test overlay's) or DaemonSets that tolerate everything run here.
    registerWithTaints: [{ key: NODE_TAINT_KEY, value: 'true', effect: 'NoSchedule' }],
    serializeImagePulls: false,
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** The node's taint: workloads meant for it tolerate `logship.dev/stack-node`. */
export const NODE_TAINT_KEY = 'logship.dev/stack-node';

async function startKubelet(paths: StackPaths): Promise<void> {
  const node = nodePaths(paths);
  saveSysctls(paths);
  ensureDir(node.kubeletRoot, 0o700);
  writeFileAtomic(node.kubeletConfig, kubeletConfig(paths));
  const kubeconfig = await clientKubeconfig(paths, 'kubelet', `system:node:${NODE_NAME}`, 'system:nodes');
  startDaemon(paths, {
    name: 'kubelet',
    command: nodeBinary(paths, 'kubelet'),
    args: [
      `--config=${node.kubeletConfig}`,
      `--kubeconfig=${kubeconfig}`,
      `--hostname-override=${NODE_NAME}`,
      `--root-dir=${node.kubeletRoot}`,
      `--cert-dir=${join(node.kubeletRoot, 'pki')}`,
      '--v=1',
    ],
    marker: `--hostname-override=${NODE_NAME}`,
  });
}

/**
 * The node's Ready condition status ("True", "False", "Unknown"), or undefined when it is not
 * registered (or, with `sinceMs`, when the kubelet has not reported it since then).
 */
export async function nodeReady(paths: StackPaths, sinceMs?: number): Promise<string | undefined> {
  const res = await apiGet(paths, `/api/v1/nodes/${NODE_NAME}`);
  if (res.status !== 200) return undefined;
  const node = JSON.parse(res.body) as { status?: { conditions?: { type: string; status: string; lastHeartbeatTime?: string }[] } };
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
  if (sinceMs !== undefined && Date.parse(ready?.lastHeartbeatTime ?? '') < sinceMs) return undefined;
  return ready?.status;
}

function adminToken(paths: StackPaths): string {
  return readFileSync(join(paths.pki, 'admin.token'), 'utf8').trim();
}

function apiGet(paths: StackPaths, path: string): Promise<{ status: number; body: string }> {
  return httpsGet(`${apiServerUrl()}${path}`, { ca: readFileSync(caFile(paths), 'utf8'), token: adminToken(paths) });
}

/** GET over TLS: with the stack's CA, or (for the components' self-signed health endpoints) without verification. */
function httpsGet(url: string, options: { ca?: string; token?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { ca: options.ca, rejectUnauthorized: options.ca !== undefined, headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }, timeout: 3_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

// ---- sysctls ----------------------------------------------------------------------------------------

function readSysctl(name: string): string {
  return readFileSync(`/proc/sys/${name}`, 'utf8').trim();
}

/** Before the kubelet's first start (and not again until `down` restored them): the values it will change. */
function saveSysctls(paths: StackPaths): void {
  const file = nodePaths(paths).sysctlsFile;
  if (existsSync(file)) return;
  writeFileAtomic(file, `${JSON.stringify(Object.fromEntries(KUBELET_SYSCTLS.map((name) => [name, readSysctl(name)])), null, 2)}\n`);
}

function restoreSysctls(paths: StackPaths): string[] {
  const file = nodePaths(paths).sysctlsFile;
  if (!existsSync(file)) return [];
  const saved = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
  const restored: string[] = [];
  for (const [name, value] of Object.entries(saved)) {
    if (readSysctl(name) !== value) {
      writeFileSync(`/proc/sys/${name}`, value);
      restored.push(`${name.replace('/', '.')}=${value}`);
    }
  }
  rmSync(file);
  return restored;
}

// ---- stop -------------------------------------------------------------------------------------------

/**
 * Stops the node: the kubelet first (so it restarts nothing), every container and pod sandbox through
 * containerd, the scheduler and controller-manager, containerd; then unmounts what the kubelet and
 * containerd mounted, removes the pods' network namespaces and the `kubepods` cgroups, and restores
 * the sysctls the kubelet changed. The pods stay in the API server, bound to the node: the kubelet
 * starts them again on the next `up node`.
 */
export async function stopNode(paths: StackPaths, log: (message: string) => void): Promise<void> {
  const stopped = async (name: NodeServer): Promise<void> => log(`${name}: ${(await stopDaemon(paths, name)) ? 'stopped' : 'not running'}`);
  await stopped('kubelet');
  if (runningPid(paths, 'containerd') !== undefined) {
    const killed = await killAllTasks(paths);
    log(`containerd: ${killed} containers stopped`);
  }
  await stopped('kube-scheduler');
  await stopped('kube-controller-manager');
  await stopped('containerd');
  const unmounted = unmountUnder(paths);
  if (unmounted > 0) log(`${unmounted} mounts of the kubelet and containerd unmounted`);
  const cgroups = removeKubepodsCgroups();
  if (cgroups > 0) log(`${cgroups} kubepods cgroups removed`);
  const sysctls = restoreSysctls(paths);
  if (sysctls.length > 0) log(`sysctls restored: ${sysctls.join(' ')}`);
}

/** SIGKILLs every task (containers and pause sandboxes) in the CRI namespace and deletes it. */
async function killAllTasks(paths: StackPaths): Promise<number> {
  const list = async (): Promise<string[]> => (await runCapture('ctr', ctrArgs(paths, 'tasks', 'ls', '-q'))).split('\n').filter((id) => id !== '');
  const ids = await list();
  for (const id of ids) await runQuiet('ctr', ctrArgs(paths, 'tasks', 'kill', '--all', '--signal', 'SIGKILL', id));
  // Deleting a sandbox's task ends its shim and the pod's containers with it: list again until none is left.
  const deadline = Date.now() + 30_000;
  for (let left = ids; left.length > 0 && Date.now() < deadline; left = await list()) {
    for (const id of left) await runQuiet('ctr', ctrArgs(paths, 'tasks', 'delete', '--force', id));
    await sleep(100);
  }
  return ids.length;
}

/** Unmounts, deepest first, every mount under the node's folder and every pod network namespace (`/run/netns/cni-*`, made by the CRI plugin). */
function unmountUnder(paths: StackPaths): number {
  const node = nodePaths(paths);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((point): point is string => point !== undefined && (point.startsWith(`${node.dir}/`) || /^\/run\/netns\/cni-/.test(point)))
    .sort((a, b) => b.length - a.length);
  let count = 0;
  for (const point of new Set(mounts)) {
    const result = spawnSyncQuiet('umount', [point]);
    if (result !== 0) spawnSyncQuiet('umount', ['-l', point]);
    count += 1;
    if (point.startsWith('/run/netns/cni-')) rmSync(point, { force: true });
  }
  return count;
}

/** Removes `kubepods` (the kubelet's cgroupfs tree: QoS classes, pods, containers) from every cgroup v1 hierarchy, leaves first. */
function removeKubepodsCgroups(): number {
  let removed = 0;
  const root = '/sys/fs/cgroup';
  const hierarchies = existsSync(root) ? readdirSync(root) : [];
  const removeTree = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) removeTree(join(dir, entry.name));
    try {
      rmdirSync(dir);
      removed += 1;
    } catch {
      // A cgroup that still holds a process stays; the next `down` tries again.
    }
  };
  for (const hierarchy of hierarchies) {
    const dir = join(root, hierarchy, 'kubepods');
    if (statSync(dir, { throwIfNoEntry: false })?.isDirectory()) removeTree(dir);
  }
  return removed;
}

function runQuiet(command: string, args: string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: 'ignore' });
    child.once('error', () => resolve(null));
    child.once('exit', resolve);
  });
}

function runCapture(command: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('error', () => resolve(''));
    child.once('exit', () => resolve(out));
  });
}

function spawnSyncQuiet(command: string, args: string[]): number | null {
  return spawnSync(command, args, { stdio: 'ignore' }).status;
}

/** How tests and demos reach the node (part of the stack's endpoints). */
export function nodeEndpoint(paths: StackPaths): StackEndpoints['node'] {
  return {
    name: NODE_NAME,
    taint: `${NODE_TAINT_KEY}=true:NoSchedule`,
    containerdSocket: nodePaths(paths).containerdSocket,
    podLogsDir: '/var/log/pods',
    containerLogMaxSize: CONTAINER_LOG_MAX_SIZE,
    containerLogMaxFiles: CONTAINER_LOG_MAX_FILES,
  };
}

/** What `status` reports about the node. */
export async function nodeStatus(paths: StackPaths): Promise<{ name: string; ready: string | null; containerdSocket: string; podLogsDir: string }> {
  let ready: string | null = null;
  try {
    ready = (await nodeReady(paths)) ?? null;
  } catch {
    ready = null;
  }
  return { name: NODE_NAME, ready, containerdSocket: nodePaths(paths).containerdSocket, podLogsDir: '/var/log/pods' };
}


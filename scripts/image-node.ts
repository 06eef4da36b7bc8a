/**
 * The Node.js the images run (the Dockerfile's NODE_IMAGE), for running code on it on a machine that
 * has another node: the benchmarks run the binaries under it, and `npm test` runs every test under
 * it too. It comes from the npm registry's `node-<platform>-<arch>` package of that version, unpacked
 * once into the stack's cache (`<stack home>/node/<version>/bin/node`) and reused.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT, stackHome } from './stack/context.js';

/** The Node.js version of the images: the Dockerfile's `ARG NODE_IMAGE=node:<version>-…`. */
export function imageNodeVersion(): string {
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const version = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)/m.exec(dockerfile)?.[1];
  if (version === undefined) throw new Error('Dockerfile: no `ARG NODE_IMAGE=node:<x.y.z>…` line');
  return version;
}

/** `<stack home>/node/<version>/bin/node`, unpacked from the npm registry's package when missing. */
export function imageNode(version: string, log: (message: string) => void): string {
  const home = join(stackHome(), 'node', version);
  const node = join(home, 'bin', 'node');
  if (existsSync(node)) return node;
  const pkg = `node-${process.platform}-${process.arch}@${version}`;
  log(`fetching Node.js ${version}, the images' runtime (npm package ${pkg})…`);
  mkdirSync(dirname(home), { recursive: true });
  const staging = mkdtempSync(join(dirname(home), `.${version}-`));
  try {
    const tarball = execFileSync('npm', ['pack', pkg, '--silent', '--pack-destination', staging], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop() ?? '';
    execFileSync('tar', ['-xzf', join(staging, tarball), '-C', staging, '--strip-components=1']);
    rmSync(join(staging, tarball));
    // mkdtemp's 0700 would keep the binary from the other users tests run it as.
    chmodSync(staging, 0o755);
    renameSync(staging, home);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    // Another process unpacked the same version meanwhile.
    if (existsSync(node)) return node;
    throw error;
  }
  return node;
}

/**
 * The images scripts/images.ts assembles for the stack's node agree with the Dockerfile on what they
 * ship: Node.js of the Dockerfile's version, the user 65532, the bundle's files in /app and nothing of
 * npm, and the config (ENV, WORKDIR, USER, EXPOSE, ENTRYPOINT, CMD) of the Dockerfile's stage. The
 * image is unpacked and its node started in it (chroot) as the image's user.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { before, describe, it } from 'node:test';
import { bundleBinaries } from '../../scripts/bundle.js';
import { imageNodeVersion } from '../../scripts/image-node.js';
import { assembleNodeImages, dockerfileImageConfig, ociReference, type NodeImages } from '../../scripts/images.js';
import { stackPaths } from '../../scripts/stack/context.js';
import { ctrArgs } from '../../scripts/stack/node.js';

interface OciConfig {
  config: { User?: string; Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; WorkingDir?: string; ExposedPorts?: Record<string, object> };
}

/** The image config of a tag in the OCI layout the images were copied from. */
function ociConfig(reference: string): OciConfig {
  const separator = reference.lastIndexOf(':');
  const layout = reference.slice(0, separator);
  const tag = reference.slice(separator + 1);
  const blob = (digest: string): string => readFileSync(join(layout, 'blobs', ...digest.split(':')), 'utf8');
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.ok(entry, `${tag} in ${layout}`);
  const manifest = JSON.parse(blob(entry.digest)) as { config: { digest: string } };
  return JSON.parse(blob(manifest.config.digest)) as OciConfig;
}

function fileHashes(root: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(root, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name))
      .map((file) => [relative(root, file), createHash('sha256').update(readFileSync(file)).digest('hex')] as const)
      .sort(([a], [b]) => a.localeCompare(b)),
  );
}

describe('node images (assembled without Docker)', { timeout: 10 * 60_000 }, () => {
  let images: NodeImages;

  before(async () => {
    images = await assembleNodeImages();
  });

  it('containerd holds the four images', () => {
    const refs = execFileSync('ctr', ctrArgs(stackPaths(), 'images', 'ls', '-q'), { encoding: 'utf8' }).split('\n');
    for (const ref of Object.values(images) as string[]) assert.ok(refs.includes(ref), `${ref} imported`);
  });

  for (const target of ['agent', 'aggregator'] as const) {
    it(`${target}: the Dockerfile's config, Node.js version, user and files`, async (t) => {
      const wanted = dockerfileImageConfig(target);
      const { config } = ociConfig(ociReference(images[target]));
      assert.equal(config.User, wanted.user);
      assert.equal(config.User, '65532:65532');
      assert.deepEqual(config.Entrypoint, wanted.entrypoint);
      assert.deepEqual(config.Cmd, wanted.cmd);
      assert.equal(config.WorkingDir, wanted.workingDir);
      assert.deepEqual(Object.keys(config.ExposedPorts ?? {}), wanted.exposedPorts);
      for (const [key, value] of Object.entries(wanted.env)) assert.ok(config.Env?.includes(`${key}=${value}`), `ENV ${key}=${value}`);

      const work = mkdtempSync(join(tmpdir(), 'logship-image-'));
      t.after(() => rmSync(work, { recursive: true, force: true }));
      execFileSync('umoci', ['unpack', '--image', ociReference(images[target]), join(work, 'bundle')]);
      const rootfs = join(work, 'bundle', 'rootfs');
      // The image's user runs the image's node: the Dockerfile's Node.js version.
      const version = execFileSync('chroot', ['--userspec=65532:65532', rootfs, '/usr/local/bin/node', '--version'], { encoding: 'utf8' }).trim();
      assert.equal(version, `v${imageNodeVersion()}`);
      assert.match(readFileSync(join(rootfs, 'etc', 'passwd'), 'utf8'), /^logship:x:65532:65532:/m);
      assert.match(readFileSync(join(rootfs, 'etc', 'group'), 'utf8'), /^logship:x:65532:/m);
      // No npm, corepack or yarn (the Dockerfile removes them from the node image).
      for (const gone of ['usr/local/bin/npm', 'usr/local/bin/npx', 'usr/local/lib/node_modules/npm', 'usr/local/bin/corepack']) assert.equal(existsSync(join(rootfs, gone)), false, gone);
      // /app is exactly the bundle `npm run build` makes (the Dockerfile's COPY --from=build /src/dist/bundle).
      // (Beside the image's own: chunk names hash the relative path from the output folder to the sources.)
      const bundle = join(stackPaths().build, 'images', `bundle-check-${process.pid}`);
      t.after(() => rmSync(bundle, { recursive: true, force: true }));
      await bundleBinaries(bundle);
      assert.deepEqual(fileHashes(join(rootfs, 'app')), fileHashes(bundle));
      // The entrypoint's file is there and the bundle starts in the image: it rejects a missing config.
      const entry = (config.Entrypoint ?? []).slice(1);
      const started = (() => {
        try {
          execFileSync('chroot', ['--userspec=65532:65532', rootfs, '/usr/local/bin/node', ...entry, '--config', '/nonexistent.yaml'], { encoding: 'utf8', stdio: 'pipe', cwd: '/' });
          return { code: 0, output: '' };
        } catch (error) {
          const e = error as { status?: number; stdout?: string; stderr?: string };
          return { code: e.status ?? -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
        }
      })();
      assert.notEqual(started.code, 0);
      assert.match(started.output, /nonexistent\.yaml/, 'the binary ran and reported the missing config file');
    });
  }
});

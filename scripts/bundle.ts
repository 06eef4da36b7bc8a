/**
 * Bundles the two binaries as the images ship them: `<outdir>/agent.mjs` and `<outdir>/aggregator.mjs`,
 * plus the chunks they load on demand (a sink's client library, the Kubernetes client, koffi) in
 * `<outdir>/chunks/`, and koffi's native module in `<outdir>/node_modules/@koromix/`. Nothing else is
 * needed at run time: no other node_modules.
 *
 * Why bundle: a library's JavaScript source stays in memory once loaded, and only the parts a binary
 * names are kept here. @kubernetes/client-node alone is 21 MB of source (every generated API of
 * Kubernetes); loaded whole it added ~70 MiB to the agent's resident memory, bundled ~15 MiB
 * (bench/agent.ts measures the bundle). Minified, with names kept for stack traces; a source map
 * sits next to each file. koffi's prebuilt native module is copied next to the bundle (see
 * copyNativePackages). `BUNDLE_MINIFY=0` leaves the code unminified, so that a CPU profile
 * of a benchmark run (BENCH_CPU_PROF_DIR) names the functions as the source does.
 *
 * Usage: tsx scripts/bundle.ts [--outdir dist/bundle] (part of `npm run build`).
 */
import { cpSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type Metafile, type Plugin } from 'esbuild';

/** Self-contained (the Dockerfile's build stage copies this file alone): the repository is its parent folder. */
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

export const BUNDLE_DIR = join(REPO_ROOT, 'dist', 'bundle');

/**
 * CommonJS libraries inside an ES module bundle call `require` for Node's built-in modules; each
 * output file gets one of its own.
 */
const REQUIRE_SHIM = "import { createRequire as __logshipCreateRequire } from 'node:module'; const require = __logshipCreateRequire(import.meta.url);";

/**
 * node-fetch 2 (under the Kubernetes client) imports whatwg-url for its `URL` only where Node has none
 * (`Url.URL || whatwgUrl.URL`); Node always has one. Bundled, whatwg-url's tr46 evaluated a 254 KB
 * Unicode table into the agent's heap at start-up and `require`d Node's deprecated `punycode`, which
 * printed a DEP0040 warning in the agent's log on Node 22. Replaced by Node's own `URL`.
 */
const nodeFetchUrlPlugin: Plugin = {
  name: 'node-fetch-url',
  setup(build) {
    build.onResolve({ filter: /^whatwg-url$/ }, (args) => (/[\\/]node-fetch[\\/]/.test(args.importer) ? { path: 'whatwg-url', namespace: 'node-url' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'node-url' }, () => ({ contents: 'export const URL = globalThis.URL; export default { URL };', loader: 'js' }));
  },
};

/** Writes the bundle; returns esbuild's account of it (every output file and what it imports). */
export async function bundleBinaries(outdir: string = BUNDLE_DIR): Promise<Metafile> {
  rmSync(outdir, { recursive: true, force: true });
  const result = await build({
    absWorkingDir: REPO_ROOT,
    entryPoints: { agent: 'agent/main.ts', aggregator: 'aggregator/main.ts' },
    outdir,
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20.19',
    minify: process.env.BUNDLE_MINIFY !== '0',
    keepNames: true,
    sourcemap: 'linked',
    legalComments: 'linked',
    banner: { js: REQUIRE_SHIM },
    logLevel: 'warning',
    metafile: true,
    plugins: [nodeFetchUrlPlugin],
  });
  copyNativePackages(outdir);
  const outputs = Object.entries(result.metafile.outputs).filter(([file]) => file.endsWith('.mjs'));
  const total = outputs.reduce((sum, [, output]) => sum + output.bytes, 0);
  process.stderr.write(`bundle: ${String(outputs.length)} files, ${(total / 2 ** 20).toFixed(1)} MiB in ${relative(REPO_ROOT, outdir) || '.'}\n`);
  return result.metafile;
}

/**
 * The one native part: koffi's prebuilt module for this platform (the agent's idle page-out, see
 * shared/resident-memory.ts). koffi's JavaScript is in the bundle; at run time it `require`s its
 * platform's package (`@koromix/koffi-linux-x64` here, with its glibc and musl builds), which is
 * copied to `<outdir>/node_modules` where that `require` finds it. `npm ci` installs the package of
 * the machine it runs on, so an image built on arm64 ships arm64's.
 */
export const NATIVE_PACKAGES_DIR = join('node_modules', '@koromix');

function copyNativePackages(outdir: string): void {
  const from = join(REPO_ROOT, NATIVE_PACKAGES_DIR);
  const packages = existsSync(from) ? readdirSync(from).filter((name) => name.startsWith('koffi-')) : [];
  if (packages.length === 0) process.stderr.write(`bundle: no koffi native package in ${from}: the agent's idle page-out will be off\n`);
  for (const name of packages) {
    const to = join(outdir, NATIVE_PACKAGES_DIR, name);
    cpSync(join(from, name), to, { recursive: true });
    // The native package carries no licence text of its own: koffi's (MIT) goes with the binary.
    cpSync(join(REPO_ROOT, 'node_modules', 'koffi', 'LICENSE.txt'), join(to, 'LICENSE.txt'));
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
  await bundleBinaries(values.outdir === undefined ? BUNDLE_DIR : join(process.cwd(), values.outdir));
}

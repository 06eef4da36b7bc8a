/**
 * A binary's runtime settings exactly as deployed: the literal `NODE_OPTIONS` and `MALLOC_*` entries of
 * a container's env in a k8s/base manifest (the images' ENTRYPOINT is plain `node /app/dist/<binary>/main.js`),
 * so that a benchmark measures what runs in the cluster. BENCH_NODE_OPTIONS and BENCH_MALLOC_MMAP_THRESHOLD
 * replace them for experiments ('' for none); `asDeployed` says whether anything was replaced.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { REPO_ROOT } from '../scripts/stack/context.js';

export interface DeployedEnv {
  readonly env: Record<string, string>;
  readonly asDeployed: boolean;
}

export function deployedEnv(manifest: string, containerName: string): DeployedEnv {
  const file = join('k8s', 'base', manifest);
  const parsed = parseYaml(readFileSync(join(REPO_ROOT, file), 'utf8')) as {
    spec: { template: { spec: { containers: { name: string; env?: { name: string; value?: string }[] }[] } } };
  };
  const container = parsed.spec.template.spec.containers.find((c) => c.name === containerName);
  if (!container) throw new Error(`${file}: no container ${containerName}`);
  const deployed: Record<string, string> = {};
  for (const entry of container.env ?? []) {
    if (entry.value !== undefined && (entry.name === 'NODE_OPTIONS' || entry.name.startsWith('MALLOC_'))) deployed[entry.name] = entry.value;
  }
  const env = { ...deployed };
  if (process.env.BENCH_NODE_OPTIONS !== undefined) env.NODE_OPTIONS = process.env.BENCH_NODE_OPTIONS;
  if (process.env.BENCH_MALLOC_MMAP_THRESHOLD !== undefined) env.MALLOC_MMAP_THRESHOLD_ = process.env.BENCH_MALLOC_MMAP_THRESHOLD;
  return { env, asDeployed: JSON.stringify(env) === JSON.stringify(deployed) };
}

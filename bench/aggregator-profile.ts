/** Summary of `node --cpu-prof` profiles by file and function (BENCH_CPU_PROF_DIR). */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { log } from './aggregator-util.js';

// ---- profile summary ------------------------------------------------------------------------------

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time by function and by file (packages of node_modules as one file each) of every profile in the folder. */
export function summarizeProfiles(dir: string): void {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
    const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
    const byFunction = new Map<string, number>();
    const byFile = new Map<string, number>();
    let total = 0;
    profile.samples.forEach((id, i) => {
      const us = profile.timeDeltas[i] ?? 0;
      const frame = byId.get(id);
      if (frame === undefined) return;
      total += us;
      const where = shortUrl(frame.url);
      const fn = `${frame.functionName || '(anonymous)'} ${where}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
      byFile.set(where || frame.functionName, (byFile.get(where || frame.functionName) ?? 0) + us);
    });
    const top = (map: Map<string, number>, count: number): string =>
      [...map]
        .sort((a, b) => b[1] - a[1])
        .slice(0, count)
        .map(([k, us]) => `  ${(us / 1e6).toFixed(2).padStart(7)} s ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`)
        .join('\n');
    log(`profile ${file}: ${(total / 1e6).toFixed(2)} s sampled on the main thread\nby file:\n${top(byFile, 25)}\nby function:\n${top(byFunction, 40)}`);
  }
}

export function shortUrl(url: string): string {
  const modules = url.lastIndexOf('node_modules/');
  if (modules !== -1) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/');
    return (rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? '')) + (rest.includes('dist-cjs') || rest.includes('src') ? `/${rest[rest.length - 1] ?? ''}` : '');
  }
  const dist = url.indexOf('/dist/');
  if (dist !== -1) return url.slice(dist + '/dist/'.length);
  return url.replace(/^file:\/\//, '');
}

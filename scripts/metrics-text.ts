/**
 * Reading the Prometheus text format our ops servers export (`/metrics`): one place for the demo, the
 * tests and the benchmarks.
 */

/** Sum of a metric's samples over the label sets that carry every pair in `labels`. */
export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** `sumMetric` over what an ops server at `opsUrl` exports now. */
export async function fetchMetricSum(opsUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return sumMetric(await (await fetch(`${opsUrl}/metrics`)).text(), name, labels);
}

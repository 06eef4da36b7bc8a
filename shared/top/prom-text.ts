/**
 * The Prometheus text format (what `/metrics` serves), read into samples: enough of it for `top`
 * (names, label sets, values, histogram buckets); comments and timestamps are skipped.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

function parseValue(text: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  return Number(text);
}

/** One scrape: its samples by metric name. Lines that are not samples are skipped. */
export class Scrape {
  private readonly byName = new Map<string, Sample[]>();

  constructor(
    text: string,
    /** When it was taken (ms since the epoch). */
    readonly atMs: number,
  ) {
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const match = SAMPLE.exec(line);
      if (match === null) continue;
      const [, name = '', labelText = '', valueText = ''] = match;
      const labels: Record<string, string> = {};
      for (const [, key = '', value = ''] of labelText.matchAll(LABEL)) labels[key] = unescapeLabel(value);
      const value = parseValue(valueText);
      if (Number.isNaN(value)) continue;
      const list = this.byName.get(name);
      if (list === undefined) this.byName.set(name, [{ name, labels, value }]);
      else list.push({ name, labels, value });
    }
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  samples(name: string, labels: Record<string, string> = {}): Sample[] {
    return (this.byName.get(name) ?? []).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** Sum over the label sets that carry every pair of `labels`; undefined when the metric is absent. */
  sum(name: string, labels: Record<string, string> = {}): number | undefined {
    const samples = this.samples(name, labels);
    return samples.length === 0 ? undefined : samples.reduce((n, s) => n + s.value, 0);
  }

  max(name: string): Sample | undefined {
    let best: Sample | undefined;
    for (const s of this.samples(name)) if (best === undefined || s.value > best.value) best = s;
    return best;
  }

  /** The distinct values of one label over a metric's samples, in first-seen order. */
  labelValues(name: string, label: string): string[] {
    return [...new Set(this.samples(name).flatMap((s) => (s.labels[label] === undefined ? [] : [s.labels[label]])))];
  }
}

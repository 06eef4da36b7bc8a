/**
 * What `top` shows, computed from two scrapes of a component's `/metrics` one interval apart: rates
 * per second from counters, current values from gauges, the end-to-end delay of the interval from its
 * histogram buckets. Pure: lines of text, none wider than WIDTH.
 */
import type { Scrape } from './prom-text.js';

export const WIDTH = 80;

export type Component = 'agent' | 'aggregator';

/** The component whose metrics a scrape holds (the view follows what is there, not the binary asked). */
export function componentOf(scrape: Scrape): Component | undefined {
  if (scrape.has('logship_agent_lines_read_total')) return 'agent';
  if (scrape.has('logship_aggregator_records_in_total')) return 'aggregator';
  return undefined;
}

// ---- formatting -----------------------------------------------------------------------------------

const UNITS = ['', 'k', 'M', 'G', 'T'];
const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** `950`, `12.3k`, `1.23M`. */
export function formatCount(value: number): string {
  if (!Number.isFinite(value)) return '–';
  let v = Math.abs(value);
  let i = 0;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  const text = i === 0 ? (Number.isInteger(v) ? String(v) : v < 10 ? v.toFixed(1) : v.toFixed(0)) : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  return `${value < 0 ? '-' : ''}${text}${UNITS[i] ?? ''}`;
}

/** `512 B`, `3.2 MiB`. */
export function formatBytes(value: number): string {
  if (!Number.isFinite(value)) return '–';
  let v = Math.abs(value);
  let i = 0;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const text = i === 0 ? v.toFixed(0) : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  return `${value < 0 ? '-' : ''}${text} ${BYTE_UNITS[i] ?? ''}`;
}

/** `850ms`, `2.1s`, `4m05s`, `1h02m`. */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '–';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function cut(line: string, width: number): string {
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}

// ---- two scrapes ----------------------------------------------------------------------------------

/** Counters and gauges read over one interval: `prev` may be absent (the first frame shows no rates). */
export class MetricWindow {
  constructor(
    readonly cur: Scrape,
    readonly prev?: Scrape,
  ) {}

  get seconds(): number {
    return this.prev === undefined ? 0 : (this.cur.atMs - this.prev.atMs) / 1000;
  }

  total(name: string, labels: Record<string, string> = {}): number {
    return this.cur.sum(name, labels) ?? 0;
  }

  /** Increase per second over the interval; undefined on the first frame. A reset counts from 0. */
  rate(name: string, labels: Record<string, string> = {}): number | undefined {
    if (this.prev === undefined || this.seconds <= 0) return undefined;
    const now = this.cur.sum(name, labels) ?? 0;
    const before = this.prev.sum(name, labels) ?? 0;
    return (now >= before ? now - before : now) / this.seconds;
  }

  /**
   * A quantile of a histogram's observations during the interval (linear within the bucket, as
   * Prometheus' histogram_quantile does); undefined when nothing was observed.
   */
  quantile(name: string, q: number, labels: Record<string, string> = {}): number | undefined {
    if (this.prev === undefined) return undefined;
    const buckets = new Map<number, number>();
    for (const s of this.cur.samples(`${name}_bucket`, labels)) {
      const le = Number(s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : s.labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + s.value);
    }
    for (const s of this.prev.samples(`${name}_bucket`, labels)) {
      const le = Number(s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : s.labels.le);
      if (buckets.has(le)) buckets.set(le, (buckets.get(le) ?? 0) - s.value);
    }
    const sorted = [...buckets].sort(([a], [b]) => a - b);
    const count = sorted.at(-1)?.[1] ?? 0;
    if (count <= 0) return undefined;
    const rank = q * count;
    let lowerBound = 0;
    let lowerCount = 0;
    for (const [le, cumulative] of sorted) {
      if (cumulative >= rank) {
        if (!Number.isFinite(le)) return lowerBound;
        const inBucket = cumulative - lowerCount;
        return inBucket <= 0 ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / inBucket;
      }
      lowerBound = le;
      lowerCount = cumulative;
    }
    return lowerBound;
  }
}

function rateText(rate: number | undefined, format: (v: number) => string = formatCount): string {
  return rate === undefined ? '…' : `${format(rate)}/s`;
}

/** `  label ............ 12.3k/s       1.23M` */
function flowRow(label: string, rate: number | undefined, total: number, format: (v: number) => string = formatCount): string {
  return `  ${label.padEnd(26)}${rateText(rate, format).padStart(14)}${format(total).padStart(14)}`;
}

function header(component: Component, url: string, w: MetricWindow, nowMs: number): string[] {
  const started = w.cur.sum('process_start_time_seconds');
  const up = started === undefined ? '' : ` · up ${formatSeconds(nowMs / 1000 - started)}`;
  const clock = new Date(nowMs).toISOString().slice(11, 19);
  const left = `logship-${component} · ${url}${up} · ${clock}`;
  const right = 'q: quit';
  return [cut(`${left}${' '.repeat(Math.max(1, WIDTH - left.length - right.length))}${right}`, WIDTH), `${''.padEnd(28)}${'per second'.padStart(14)}${'total'.padStart(14)}`];
}

/** `reason 3 (+0.5/s) · other 1`, or `none`. */
function byLabel(w: MetricWindow, name: string, label: string, format: (v: number) => string = formatCount): string {
  const parts = w.cur
    .labelValues(name, label)
    .map((value) => ({ value, total: w.total(name, { [label]: value }), rate: w.rate(name, { [label]: value }) }))
    .filter((p) => p.total > 0)
    .sort((a, b) => b.total - a.total)
    .map((p) => `${p.value === '' ? '-' : p.value} ${format(p.total)}${p.rate !== undefined && p.rate > 0 ? ` (+${format(p.rate)}/s)` : ''}`);
  return parts.length === 0 ? 'none' : parts.join(' · ');
}

function processRow(w: MetricWindow): string {
  const rss = w.cur.sum('process_resident_memory_bytes');
  const heap = w.cur.sum('nodejs_heap_size_used_bytes');
  const cpu = w.rate('process_cpu_seconds_total');
  return `  ${'process'.padEnd(17)}RSS ${rss === undefined ? '–' : formatBytes(rss)} · heap ${heap === undefined ? '–' : formatBytes(heap)} · CPU ${cpu === undefined ? '…' : `${(cpu * 100).toFixed(1)}%`}`;
}

function labelled(label: string, text: string): string {
  return cut(`  ${label.padEnd(17)}${text}`, WIDTH);
}

// ---- the views ------------------------------------------------------------------------------------

/** `0`, or `2: logs.prod.a (unknown_topic), logs.prod.b (not_authorized)`. */
function stalledTopics(w: MetricWindow): string {
  const count = w.total('logship_agent_stalled_topics');
  if (count === 0) return '0';
  const topics = w.cur.samples('logship_agent_topic_stalled').map((s) => `${s.labels.topic ?? '?'} (${s.labels.reason ?? '?'})`);
  return `${formatCount(count)}${topics.length > 0 ? `: ${topics.join(', ')}` : ''}`;
}

export function agentView(w: MetricWindow, url: string, nowMs: number): string[] {
  const tracked = w.total('logship_agent_files_tracked');
  const open = w.total('logship_agent_files_open');
  // Counted by agents that have it (logship_agent_lost_bytes_total{reason}); 0 where it is absent.
  const lost = w.total('logship_agent_lost_bytes_total');
  return [
    ...header('agent', url, w, nowMs),
    flowRow('lines read', w.rate('logship_agent_lines_read_total'), w.total('logship_agent_lines_read_total')),
    flowRow('bytes read', w.rate('logship_agent_bytes_read_total'), w.total('logship_agent_bytes_read_total'), formatBytes),
    flowRow('records produced', w.rate('logship_agent_records_produced_total'), w.total('logship_agent_records_produced_total')),
    flowRow('records excluded', w.rate('logship_agent_records_excluded_total'), w.total('logship_agent_records_excluded_total')),
    flowRow('Kafka messages acked', w.rate('logship_agent_kafka_messages_acked_total'), w.total('logship_agent_kafka_messages_acked_total')),
    flowRow('Kafka bytes acked', w.rate('logship_agent_kafka_bytes_acked_total'), w.total('logship_agent_kafka_bytes_acked_total'), formatBytes),
    '',
    labelled('files tracked', `${formatCount(tracked)} (${formatCount(open)} open)`),
    labelled('backlog', `${formatBytes(w.total('logship_agent_unshipped_bytes'))} unshipped · ${formatBytes(w.total('logship_agent_producer_buffered_bytes'))} buffered for Kafka`),
    labelled('lost bytes', lost === 0 ? '0' : byLabel(w, 'logship_agent_lost_bytes_total', 'reason', formatBytes)),
    labelled('errors', byLabel(w, 'logship_agent_errors_total', 'reason')),
    // Exported by agents that hold back the topics the brokers refuse (docs/kafka-topics.md).
    ...(w.cur.has('logship_agent_kafka_send_errors_total') ? [labelled('Kafka errors', byLabel(w, 'logship_agent_kafka_send_errors_total', 'reason'))] : []),
    ...(w.cur.has('logship_agent_stalled_topics') ? [labelled('stalled topics', stalledTopics(w))] : []),
    labelled('checkpoint age', formatSeconds(w.total('logship_agent_checkpoint_age_seconds'))),
    processRow(w),
  ];
}

export function aggregatorView(w: MetricWindow, url: string, nowMs: number): string[] {
  const sinks = w.cur.labelValues('logship_aggregator_sink_records_total', 'sink');
  const lagSamples = w.cur.samples('logship_aggregator_consumer_lag');
  const lag = lagSamples.reduce((n, s) => n + s.value, 0);
  const worst = w.cur.max('logship_aggregator_consumer_lag');
  const pausedShare = w.rate('logship_aggregator_fetch_paused_seconds_total');
  const replays = w.cur.has('logship_aggregator_replays_dropped_total') ? [labelled('replays dropped', byLabel(w, 'logship_aggregator_replays_dropped_total', 'sink'))] : [];
  const delay = (sink: string): string => {
    const p50 = w.quantile('logship_aggregator_end_to_end_delay_seconds', 0.5, { sink });
    const p99 = w.quantile('logship_aggregator_end_to_end_delay_seconds', 0.99, { sink });
    return p50 === undefined || p99 === undefined ? '–' : `${formatSeconds(p50)}/${formatSeconds(p99)}`;
  };
  return [
    ...header('aggregator', url, w, nowMs),
    flowRow('Kafka messages in', w.rate('logship_aggregator_messages_in_total'), w.total('logship_aggregator_messages_in_total')),
    flowRow('records in', w.rate('logship_aggregator_records_in_total'), w.total('logship_aggregator_records_in_total')),
    flowRow('bytes in', w.rate('logship_aggregator_bytes_in_total'), w.total('logship_aggregator_bytes_in_total'), formatBytes),
    '',
    `  ${'sink'.padEnd(12)}${'records/s'.padStart(10)}${'bytes/s'.padStart(12)}${'records'.padStart(9)}${'retries'.padStart(9)}${'errors'.padStart(8)}${'delay p50/p99'.padStart(16)}`,
    ...sinks.map((sink) =>
      cut(
        `  ${cut(sink, 12).padEnd(12)}${rateText(w.rate('logship_aggregator_sink_records_total', { sink })).padStart(10)}${rateText(w.rate('logship_aggregator_sink_bytes_total', { sink }), formatBytes).padStart(12)}${formatCount(w.total('logship_aggregator_sink_records_total', { sink })).padStart(9)}${formatCount(w.total('logship_aggregator_sink_retries_total', { sink })).padStart(9)}${formatCount(w.total('logship_aggregator_sink_errors_total', { sink })).padStart(8)}${delay(sink).padStart(16)}`,
        WIDTH,
      ),
    ),
    '',
    labelled('consumer lag', `${formatCount(lag)} messages · ${formatCount(w.total('logship_aggregator_assigned_partitions'))} partitions${worst !== undefined && worst.value > 0 ? ` · worst ${worst.labels.topic ?? '?'}/${worst.labels.partition ?? '?'}: ${formatCount(worst.value)}` : ''}`),
    labelled('held', `${formatBytes(w.total('logship_aggregator_held_bytes'))}${pausedShare === undefined ? '' : ` · fetch paused ${(Math.min(1, pausedShare) * 100).toFixed(0)}% of the time`}`),
    labelled('dead letters', byLabel(w, 'logship_aggregator_dead_letters_total', 'reason')),
    ...replays,
    labelled('commits', `${rateText(w.rate('logship_aggregator_commits_total'))} · ${formatCount(w.total('logship_aggregator_commit_failures_total'))} failed · ${formatCount(w.total('logship_aggregator_rebalances_total'))} rebalances`),
    processRow(w),
  ];
}

export function render(w: MetricWindow, url: string, nowMs: number): string[] {
  const component = componentOf(w.cur);
  if (component === 'agent') return agentView(w, url, nowMs);
  if (component === 'aggregator') return aggregatorView(w, url, nowMs);
  return [cut(`${url}/metrics has no logship agent or aggregator metrics`, WIDTH)];
}

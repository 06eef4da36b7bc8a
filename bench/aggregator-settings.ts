/** The aggregator benchmark's settings: environment knobs (see bench/aggregator.ts) and fixed sizes. */
import { benchNode, deployedEnv, type BenchNode } from './runtime.js';
import { log } from './aggregator-util.js';

export const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
/**
 * The same backlog as the S3 run by default: with a smaller one the aggregator's start-up, group join and
 * first batch (~4-5 s) weigh on the whole-drain rate (250,000 records measured 0.61 of the plain loop
 * whole, 0.89 from its first commit on; 1,000,000 measured 0.87 and 1.00).
 */
export const ES_RECORDS = Math.min(RECORDS, Number(process.env.BENCH_ES_RECORDS ?? RECORDS));
export const CPU = process.env.BENCH_CPU ?? '1';
export const RUNS = new Set((process.env.BENCH_RUNS ?? 's3,es,bulk').split(',').map((s) => s.trim()));
export const NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
let aggregatorNode: BenchNode | undefined;
/** The node the aggregator runs under (benchNode: the images' Node.js unless BENCH_NODE says otherwise). */
export function nodeOfAggregator(): BenchNode {
  aggregatorNode ??= benchNode(log);
  return aggregatorNode;
}
/** NODE_OPTIONS and MALLOC_* of the aggregator Deployment: the benchmark runs what is deployed. */
export const AGGREGATOR_ENV = deployedEnv('aggregator-deployment.yaml', 'aggregator');
export const PROFILE_DIR = process.env.BENCH_CPU_PROF_DIR;
/** JSON deep-merged into the aggregator's config (e.g. `{"kafka":{"maxBytesPerPartition":8388608}}`) and into each sink's entry. */
export const EXTRA_CONFIG = jsonEnv('BENCH_CONFIG');
export const EXTRA_S3_SINK = jsonEnv('BENCH_S3_SINK');
export const EXTRA_ES_SINK = jsonEnv('BENCH_ES_SINK');
export const RUN_TIMEOUT_MS = Number(process.env.BENCH_RUN_TIMEOUT_MS ?? 10 * 60_000);
/** Where the aggregator's output goes (kept); by default a temporary folder removed at the end. */
export const LOG_DIR = process.env.BENCH_LOG_DIR;
/** Iterating: BENCH_KEEP_TOPICS=1 keeps the pre-loaded topics (their name prefix is printed); BENCH_REUSE_TOPICS=<prefix> drains them again instead of producing. */
export const KEEP_TOPICS = process.env.BENCH_KEEP_TOPICS === '1';
export const REUSE_TOPICS = process.env.BENCH_REUSE_TOPICS;

export const TOPICS = 5;
export const PARTITIONS = 3;
/** Records per Kafka message: 256 as the agent groups them by default; BENCH_RECORDS_PER_MESSAGE=1 for one record per message (the agent's `maxRecordsPerMessage: 1`, or another producer). */
export const PER_MESSAGE = Number(process.env.BENCH_RECORDS_PER_MESSAGE ?? 256);
/** Raw bytes of messages per produce request while pre-loading. */
export const PRODUCE_REQUEST_BYTES = 8 * 2 ** 20;
export const PRODUCE_TIMEOUT_MS = 5 * 60_000;
export const POLL_MS = 100;
export const PROGRESS_INTERVAL_MS = 5_000;
/** The records' timestamps spread over this window (so S3 objects fall into a few hour partitions). */
export const BASE_TIME_MS = Date.UTC(2026, 10, 22, 3, 30);
export const SPAN_MS = 90 * 60_000;
/** The Elasticsearch sink's defaults (aggregator/config.ts, aggregator/sinks/elasticsearch.ts) the plain loop matches. */
export const ES_RUNNER_CONCURRENCY = 4;
export const ES_SINK_CONCURRENCY = 2;
export const ES_REQUEST_BYTES = 5 * 2 ** 20;
export const ES_REFRESH_INTERVAL_MS = 30_000;
export const PLAIN_BULK_TIMEOUT_MS = 120_000;
/** Bulk requests in flight in the plain loop: the runner's partitions in flight × the sink's requests per batch. */
export const PLAIN_BULK_CONCURRENCY = Number(process.env.BENCH_BULK_CONCURRENCY ?? ES_RUNNER_CONCURRENCY * ES_SINK_CONCURRENCY);
export const S3_BATCH_MAX_AGE_MS = 5_000;
/** After the drain, the aggregator waits with nothing to consume this long before its RSS is read (`*_idle_rss_mib`). */
export const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 45_000);

// ---- helpers --------------------------------------------------------------------------------------

export function jsonEnv(name: string): Record<string, unknown> {
  const text = process.env[name];
  if (text === undefined || text === '') return {};
  const value = JSON.parse(text) as unknown;
  if (!isObject(value)) throw new Error(`${name} must be a JSON object`);
  return value;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function merge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const current = out[key];
    out[key] = isObject(current) && isObject(value) ? merge(current, value) : value;
  }
  return out;
}

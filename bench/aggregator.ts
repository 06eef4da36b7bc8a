/**
 * `npm run bench:aggregator`: how fast the real aggregator drains a Kafka backlog into the real S3
 * (gzip NDJSON) and the real Elasticsearch on one core, and how the Elasticsearch sink compares with a
 * plain `_bulk` loop over the same documents.
 *
 * 1. Produces BENCH_RECORDS records (~460 bytes, as the agent writes them: 256 NDJSON lines per Kafka
 *    message, gzip) into 5 topics × 3 partitions.
 * 2. S3 run: starts the bundled aggregator (bundleBinary) with only an S3 sink, pinned to one CPU
 *    with taskset, and times from its start until the group's committed offsets reach the end of every
 *    partition (`drain_seconds`, and `s3_drain_records_per_sec` over it). `s3_records_per_sec` is the
 *    sustained rate: records committed between the polls that saw 10% and 90% of them committed
 *    (sustainedRate). Then every object is read back and its lines counted. The sink's batch max age
 *    is 5 s instead of 60 s: with the default, the backlog's last partial batches would wait a minute
 *    after the rest.
 * 3. Elasticsearch run: the same with only an Elasticsearch sink (replicas 0, refresh 30 s), over
 *    the same backlog (or one of its own of BENCH_ES_RECORDS); then the documents counted.
 * 4. Plain bulk loop, before and after the sink run (the machine's load drifts; the mean is the
 *    baseline): the same documents into fresh indices with the same template, `_bulk` requests of the
 *    sink's request size with the sink's concurrency, `_id` = event_id, from a child process pinned to
 *    the same CPU; the bodies are built before the clock starts.
 *
 * CPU comes from /proc (all threads, the main thread alone, and the time spent waiting for the core;
 * also the stack's servers' over each drain),
 * counted from /readyz on; peak RSS is VmHWM over the drain, idle RSS is VmRSS once the drained aggregator
 * has waited BENCH_IDLE_MS (45 s) with nothing to consume. The last output line is one JSON object, also written to
 * bench/results/aggregator.json. Everything else the aggregator is configured with is its default, and
 * it runs with the NODE_OPTIONS and MALLOC_* of the aggregator Deployment (bench/runtime.ts).
 *
 * Environment: BENCH_RECORDS (1,000,000), BENCH_RECORDS_PER_MESSAGE (256; 1 for a backlog of one record per Kafka message), BENCH_ES_RECORDS (BENCH_RECORDS), BENCH_CPU (1), BENCH_RUNS
 * (s3,es,bulk), BENCH_NODE (see bench/runtime.ts: the images' Node.js by default), BENCH_NODE_FLAGS, BENCH_NODE_OPTIONS / BENCH_MALLOC_MMAP_THRESHOLD (replace the
 * Deployment's), BENCH_CONFIG / BENCH_S3_SINK / BENCH_ES_SINK (JSON deep-merged into
 * the config file and the sink's entry, to try other settings), BENCH_BULK_CONCURRENCY,
 * BENCH_IDLE_MS, BENCH_CPU_PROF_DIR (`node --cpu-prof` of each run, summarised by file and function; with
 * BUNDLE_MINIFY=0 the functions keep their source names), BENCH_LOG_DIR
 * (keep the aggregator's output), BENCH_KEEP_TOPICS=1 / BENCH_REUSE_TOPICS=<prefix> (iterate without
 * producing again), BENCH_RUN_TIMEOUT_MS, BENCH_RESERVE_CPU=1 (the stack's servers move off the aggregator's CPU).
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';
import { CompressionTypes, type Admin } from 'kafkajs';
import { stringify } from 'yaml';
import { indexTemplateBody, DEFAULT_TEMPLATE_PRIORITY } from '../aggregator/elasticsearch-template.js';
import { createElasticsearchClient } from '../shared/elasticsearch.js';
import { createKafka, setGzipLevel } from '../shared/kafka.js';
import { Field, KubernetesField, type LogRecord } from '../shared/record.js';
import { createS3Client } from '../shared/s3.js';
import { benchNode, bundleBinary, deployedEnv, machineReferenceMs, type BenchNode, procStat, progressBySecond, RESERVE_CPU, reserveCpu, rssEverySecond, serverCpuDelta, serverCpuSeconds, sustainedRate, type Progress } from './runtime.js';
import { fetchMetricSum } from '../scripts/metrics-text.js';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { deleteTopics } from '../scripts/stack/topics.js';
import { logRecord } from '../test/helpers/aggregator.js';
import { elasticsearchConfig, kafkaConfig, s3Config, stack, testLogger, uniqueName } from '../test/helpers/stack.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
/**
 * The same backlog as the S3 run by default: with a smaller one the aggregator's start-up, group join and
 * first batch (~4-5 s) weigh on the whole-drain rate (250,000 records measured 0.61 of the plain loop
 * whole, 0.89 from its first commit on; 1,000,000 measured 0.87 and 1.00).
 */
const ES_RECORDS = Math.min(RECORDS, Number(process.env.BENCH_ES_RECORDS ?? RECORDS));
const CPU = process.env.BENCH_CPU ?? '1';
const RUNS = new Set((process.env.BENCH_RUNS ?? 's3,es,bulk').split(',').map((s) => s.trim()));
const NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
let aggregatorNode: BenchNode | undefined;
/** The node the aggregator runs under (benchNode: the images' Node.js unless BENCH_NODE says otherwise). */
function nodeOfAggregator(): BenchNode {
  aggregatorNode ??= benchNode(log);
  return aggregatorNode;
}
/** NODE_OPTIONS and MALLOC_* of the aggregator Deployment: the benchmark runs what is deployed. */
const AGGREGATOR_ENV = deployedEnv('aggregator-deployment.yaml', 'aggregator');
const PROFILE_DIR = process.env.BENCH_CPU_PROF_DIR;
/** JSON deep-merged into the aggregator's config (e.g. `{"kafka":{"maxBytesPerPartition":8388608}}`) and into each sink's entry. */
const EXTRA_CONFIG = jsonEnv('BENCH_CONFIG');
const EXTRA_S3_SINK = jsonEnv('BENCH_S3_SINK');
const EXTRA_ES_SINK = jsonEnv('BENCH_ES_SINK');
const RUN_TIMEOUT_MS = Number(process.env.BENCH_RUN_TIMEOUT_MS ?? 10 * 60_000);
/** Where the aggregator's output goes (kept); by default a temporary folder removed at the end. */
const LOG_DIR = process.env.BENCH_LOG_DIR;
/** Iterating: BENCH_KEEP_TOPICS=1 keeps the pre-loaded topics (their name prefix is printed); BENCH_REUSE_TOPICS=<prefix> drains them again instead of producing. */
const KEEP_TOPICS = process.env.BENCH_KEEP_TOPICS === '1';
const REUSE_TOPICS = process.env.BENCH_REUSE_TOPICS;

const TOPICS = 5;
const PARTITIONS = 3;
/** Records per Kafka message: 256 as the agent groups them by default; BENCH_RECORDS_PER_MESSAGE=1 for one record per message (the agent's `maxRecordsPerMessage: 1`, or another producer). */
const PER_MESSAGE = Number(process.env.BENCH_RECORDS_PER_MESSAGE ?? 256);
/** Raw bytes of messages per produce request while pre-loading. */
const PRODUCE_REQUEST_BYTES = 8 * 2 ** 20;
const PRODUCE_TIMEOUT_MS = 5 * 60_000;
const POLL_MS = 100;
const PROGRESS_INTERVAL_MS = 5_000;
/** The records' timestamps spread over this window (so S3 objects fall into a few hour partitions). */
const BASE_TIME_MS = Date.UTC(2026, 10, 22, 3, 30);
const SPAN_MS = 90 * 60_000;
/** The Elasticsearch sink's defaults (aggregator/config.ts, aggregator/sinks/elasticsearch.ts) the plain loop matches. */
const ES_RUNNER_CONCURRENCY = 4;
const ES_SINK_CONCURRENCY = 2;
const ES_REQUEST_BYTES = 5 * 2 ** 20;
const ES_REFRESH_INTERVAL_MS = 30_000;
const PLAIN_BULK_TIMEOUT_MS = 120_000;
/** Bulk requests in flight in the plain loop: the runner's partitions in flight × the sink's requests per batch. */
const PLAIN_BULK_CONCURRENCY = Number(process.env.BENCH_BULK_CONCURRENCY ?? ES_RUNNER_CONCURRENCY * ES_SINK_CONCURRENCY);
const S3_BATCH_MAX_AGE_MS = 5_000;
/** After the drain, the aggregator waits with nothing to consume this long before its RSS is read (`*_idle_rss_mib`). */
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 45_000);

// ---- the records ----------------------------------------------------------------------------------

/** A record as the agent writes it, with a realistic event_id and an access-log message. */
function benchRecord(n: number, total: number): string {
  const topic = Math.floor(n / PER_MESSAGE) % TOPICS;
  const pod = `api-${n % 12}`;
  const record: LogRecord = logRecord(n, namespaceOf(topic), BASE_TIME_MS + Math.floor((n * SPAN_MS) / total), { pod });
  record[Field.MESSAGE] = `10.0.${n % 256}.${n % 199} "GET /api/v1/orders?id=${n} HTTP/1.1" 200 ${512 + (n % 4096)} rt=0.0${n % 97}`;
  // One file per pod (12 origins per partition for replay detection), byte offsets growing with n.
  record[Field.EVENT_ID] = `9f86d081884c7d659a${(n % 12).toString(16).padStart(2, '0')}${n.toString(16).padStart(12, '0')}`;
  return JSON.stringify(record);
}

function namespaceOf(topic: number): string {
  return `bench-ns-${topic}`;
}

/** Message `m` holds records `[m·256, m·256+256)`; it goes to topic `m mod 5`, partitions round-robin. */
function messagePlacement(m: number): { topic: number; partition: number } {
  return { topic: m % TOPICS, partition: Math.floor(m / TOPICS) % PARTITIONS };
}

function messageCount(records: number): number {
  return Math.ceil(records / PER_MESSAGE);
}

function messageRecords(m: number, total: number): number {
  return Math.min(PER_MESSAGE, total - m * PER_MESSAGE);
}

function messageValue(m: number, total: number): Buffer {
  const lines: string[] = [];
  for (let n = m * PER_MESSAGE; n < m * PER_MESSAGE + messageRecords(m, total); n++) lines.push(`${benchRecord(n, total)}\n`);
  return Buffer.from(lines.join(''));
}

/** Per topic-partition (`t/p`), the message numbers in offset order (messages are produced in order, one request at a time). */
function partitionMessages(topicNames: readonly string[], total: number): Map<string, number[]> {
  const byPartition = new Map<string, number[]>();
  for (let m = 0; m < messageCount(total); m++) {
    const { topic, partition } = messagePlacement(m);
    const key = `${topicNames[topic] ?? ''}/${partition}`;
    let list = byPartition.get(key);
    if (list === undefined) byPartition.set(key, (list = []));
    list.push(m);
  }
  return byPartition;
}

// ---- /proc ----------------------------------------------------------------------------------------


// ---- helpers --------------------------------------------------------------------------------------

function jsonEnv(name: string): Record<string, unknown> {
  const text = process.env[name];
  if (text === undefined || text === '') return {};
  const value = JSON.parse(text) as unknown;
  if (!isObject(value)) throw new Error(`${name} must be a JSON object`);
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function merge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const current = out[key];
    out[key] = isObject(current) && isObject(value) ? merge(current, value) : value;
  }
  return out;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

function roundValues(values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([key, n]) => [key, round(n)]));
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

function run(command: string, args: string[]): void {
  execFileSync(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}

// ---- pre-loading Kafka ----------------------------------------------------------------------------

async function createTopics(admin: Admin, topics: readonly string[]): Promise<void> {
  await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: PARTITIONS })), waitForLeaders: true });
}

/** Produces every message in order, one request at a time (so offsets follow message numbers). Returns the record bytes. */
async function produceBacklog(topicNames: readonly string[], total: number): Promise<number> {
  setGzipLevel(1);
  const kafka = createKafka(kafkaConfig({ clientId: 'logship-bench-producer' }), testLogger());
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const deadline = Date.now() + PRODUCE_TIMEOUT_MS;
  let recordBytes = 0;
  try {
    const messages = messageCount(total);
    for (let m = 0; m < messages; ) {
      if (Date.now() > deadline) throw new Error(`pre-loading Kafka took longer than ${PRODUCE_TIMEOUT_MS} ms`);
      const byTopic = new Map<string, { key: string; value: Buffer; partition: number }[]>();
      let requestBytes = 0;
      for (; m < messages && requestBytes < PRODUCE_REQUEST_BYTES; m++) {
        const value = messageValue(m, total);
        const { topic, partition } = messagePlacement(m);
        const name = topicNames[topic] ?? '';
        let list = byTopic.get(name);
        if (list === undefined) byTopic.set(name, (list = []));
        list.push({ key: `uid-pod-${m % 12}`, value, partition });
        requestBytes += value.length;
      }
      // Each message's record bytes without the newlines, as the sinks count them.
      recordBytes += requestBytes;
      await producer.sendBatch({ topicMessages: [...byTopic].map(([topic, list]) => ({ topic, messages: list })), acks: -1, compression: CompressionTypes.GZIP });
    }
  } finally {
    await producer.disconnect();
  }
  return recordBytes - total;
}

async function endOffsets(admin: Admin, topics: readonly string[]): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const topic of topics) for (const p of await admin.fetchTopicOffsets(topic)) result.set(`${topic}/${p.partition}`, Number(p.high));
  return result;
}

async function committed(admin: Admin, groupId: string, topics: readonly string[]): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const t of await admin.fetchOffsets({ groupId, topics: [...topics] })) {
    for (const p of t.partitions) result.set(`${t.topic}/${p.partition}`, Number(p.offset));
  }
  return result;
}

// ---- one aggregator run ---------------------------------------------------------------------------

/** Pre-loaded topics: `total` records in messages of up to 256, 5 topics × 3 partitions. */
interface Backlog {
  readonly total: number;
  readonly topics: readonly string[];
  readonly recordBytes: number;
  /** Records in the messages before each offset, per `topic/partition` (index = offset; the last entry is the partition's total). */
  readonly recordsBefore: ReadonlyMap<string, readonly number[]>;
}

/** Creates (noting them in `created`) and fills the topics `<prefix>.<namespace>`, or checks the ones a previous run kept (BENCH_REUSE_TOPICS). */
async function backlog(admin: Admin, prefix: string, total: number, created: string[]): Promise<Backlog> {
  const topics = Array.from({ length: TOPICS }, (_, t) => `${prefix}.${namespaceOf(t)}`);
  const t0 = performance.now();
  const existing = new Set(await admin.listTopics());
  const reuse = REUSE_TOPICS !== undefined && topics.every((t) => existing.has(t));
  let recordBytes = 0;
  if (reuse) {
    for (let m = 0; m < messageCount(total); m++) recordBytes += messageValue(m, total).length - messageRecords(m, total);
  } else {
    await createTopics(admin, topics);
    created.push(...topics);
    recordBytes = await produceBacklog(topics, total);
  }
  const end = await endOffsets(admin, topics);
  const recordsBefore = new Map<string, number[]>();
  for (const [key, list] of partitionMessages(topics, total)) {
    if (end.get(key) !== list.length) throw new Error(`${key}: ${String(end.get(key))} messages in Kafka, ${list.length} expected (not a fresh topic?)`);
    const before = [0];
    for (const m of list) before.push((before[before.length - 1] ?? 0) + messageRecords(m, total));
    recordsBefore.set(key, before);
  }
  log(
    `${reuse ? 'reusing' : 'pre-loaded'} ${total} records (${(recordBytes / 2 ** 20).toFixed(0)} MiB, ${Math.round(recordBytes / total)} bytes each) in ${messageCount(total)} messages into ${prefix}.* (${TOPICS}×${PARTITIONS} partitions) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return { total, topics, recordBytes, recordsBefore };
}

interface DrainResult {
  records: number;
  drainSeconds: number;
  firstCommitSeconds: number;
  /** Records over the whole drain, start-up and the last batches' wait for their max age included. */
  drainRecordsPerSec: number;
  /** Records per second while the pipeline is saturated (see sustainedRate). */
  recordsPerSec: number;
  /** Seconds after the start between which `recordsPerSec` was measured. */
  sustainedWindow: number[];
  cpuSeconds: number;
  /** Seconds from the start until /readyz answered 200 (consumer running, sink healthy). */
  readySeconds: number;
  /** CPU seconds from /readyz on (start-up excluded). */
  cpuSecondsAfterReady: number;
  mainThreadCpuSeconds: number;
  /** CPU seconds per thread name over the whole run (the main thread, libuv's pool, V8's helpers). */
  threadCpuSeconds: Record<string, number>;
  runQueueSeconds: number;
  /** Kernel CPU seconds and minor page faults of the whole run (start-up included). */
  systemCpuSeconds: number;
  minorFaults: number;
  /** CPU seconds of the stack's servers (Kafka, and Elasticsearch or MinIO) over the drain. */
  serverCpuSeconds: Record<string, number>;
  peakRssBytes: number;
  /** RSS after IDLE_MS with the backlog drained and nothing new to consume. */
  idleRssBytes: number;
  deadLetters: number;
  batches: number;
  fetchPausedSeconds: number;
}

/** Records before the given offsets (committed offsets; -1 = none). */
function recordsIn(plan: Backlog, offsets: ReadonlyMap<string, number>): number {
  let total = 0;
  for (const [key, before] of plan.recordsBefore) total += before[Math.max(0, Math.min(offsets.get(key) ?? 0, before.length - 1))] ?? 0;
  return total;
}

/** Drains `plan` with the bundled aggregator at `binary` (bundleBinary) and one sink. */
async function drain(name: string, binary: string, admin: Admin, work: string, groupId: string, plan: Backlog, sink: Record<string, unknown>): Promise<DrainResult> {
  const port = await freePort();
  const deadLetterTopic = `${groupId}.deadletter`;
  const config = merge(
    {
      logLevel: 'warn',
      ops: { host: '127.0.0.1', port },
      kafka: { brokers: stack().kafka.brokers, clientId: 'logship-bench-aggregator', groupId, topics: [...plan.topics] },
      deadLetter: { topic: deadLetterTopic },
      sinks: [sink],
    },
    EXTRA_CONFIG,
  );
  const configFile = join(work, `${name}.yaml`);
  writeFileSync(configFile, stringify(config));
  const flags = [...NODE_FLAGS];
  if (PROFILE_DIR !== undefined) flags.push('--cpu-prof', `--cpu-prof-dir=${join(PROFILE_DIR, name)}`);
  const logFile = join(LOG_DIR ?? work, `${name}.log`);
  const out = openSync(logFile, 'w');
  const startedAt = performance.now();
  const serversAtStart = serverCpuSeconds();
  const child = spawn('taskset', ['-c', CPU, nodeOfAggregator().path, ...flags, binary, '--config', configFile], {
    stdio: ['ignore', out, out],
    cwd: REPO_ROOT,
    env: { ...process.env, ...AGGREGATOR_ENV.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  closeSync(out);
  const pid = child.pid ?? 0;
  const exited = once(child, 'exit');
  let exitCode: number | null | undefined;
  void exited.then(([code]) => (exitCode = code as number | null));
  const failure = (why: string): Error => new Error(`${name} run: ${why}\n${readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n')}`);

  try {
    const total = plan.total;
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    /** (time, records committed) at every poll that saw the count move; the first is the first commit. */
    const progress: Progress[] = [];
    let readyAt = 0;
    let cpuAtReady = 0;
    let doneAt = 0;
    let lastProgressAt = startedAt;
    while (Date.now() < deadline) {
      if (exitCode !== undefined) throw failure(`the aggregator exited early (${String(exitCode)})`);
      let offsets: Map<string, number>;
      try {
        offsets = await committed(admin, groupId, plan.topics);
      } catch (error) {
        // Another test may restart Kafka: keep polling until the deadline.
        log(`${name}: reading committed offsets failed (${String(error)}); retrying`);
        await sleep(1_000);
        continue;
      }
      const now = performance.now();
      const done = recordsIn(plan, offsets);
      if (done !== (progress[progress.length - 1]?.done ?? 0)) progress.push({ atMs: now - startedAt, done });
      if (readyAt === 0 && (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false))) {
        readyAt = performance.now();
        cpuAtReady = procStat(pid).cpuSeconds;
      }
      if (done >= total) {
        doneAt = now;
        break;
      }
      if (now - lastProgressAt >= PROGRESS_INTERVAL_MS) {
        lastProgressAt = now;
        const stat = procStat(pid);
        const url = `http://127.0.0.1:${port}`;
        const [heap, external] = await Promise.all([fetchMetricSum(url, 'nodejs_heap_size_used_bytes'), fetchMetricSum(url, 'nodejs_external_memory_bytes')]).catch(() => [0, 0]);
        const mib = (n: number): string => (n / 2 ** 20).toFixed(0);
        log(`${name}: ${((now - startedAt) / 1000).toFixed(1)} s: ${done} records committed, ${stat.cpuSeconds.toFixed(1)} CPU s, RSS ${mib(stat.rssBytes)} MiB (heap used ${mib(heap)}, external ${mib(external)})`);
      }
      await sleep(POLL_MS);
    }
    if (doneAt === 0) throw failure(`committed offsets did not reach the end within ${RUN_TIMEOUT_MS} ms`);
    const stat = procStat(pid);
    const servers = serverCpuDelta(serversAtStart, serverCpuSeconds());
    const url = `http://127.0.0.1:${port}`;
    const [deadLetters, batches, fetchPausedSeconds] = await Promise.all([
      fetchMetricSum(url, 'logship_aggregator_dead_letters_total'),
      fetchMetricSum(url, 'logship_aggregator_sink_batch_records_count'),
      fetchMetricSum(url, 'logship_aggregator_fetch_paused_seconds_total'),
    ]);
    const drainSeconds = (doneAt - startedAt) / 1000;
    const sustained = sustainedRate(progress, total);
    log(`${name}: committed records by second: ${progressBySecond(progress)}`);
    const idleRss = await rssEverySecond(pid, IDLE_MS);
    const idleRssBytes = procStat(pid).rssBytes;
    log(`${name}: RSS MiB by second after the drain: ${idleRss.map((mib) => mib.toFixed(0)).join(' ')}`);
    return {
      records: total,
      drainSeconds,
      firstCommitSeconds: (progress[0]?.atMs ?? Number.NaN) / 1000,
      drainRecordsPerSec: total / drainSeconds,
      recordsPerSec: sustained.perSec,
      sustainedWindow: sustained.windowSeconds.map(round),
      cpuSeconds: stat.cpuSeconds,
      readySeconds: readyAt === 0 ? Number.NaN : (readyAt - startedAt) / 1000,
      cpuSecondsAfterReady: stat.cpuSeconds - cpuAtReady,
      mainThreadCpuSeconds: stat.mainThreadCpuSeconds,
      threadCpuSeconds: roundValues(stat.threadCpuSeconds),
      runQueueSeconds: stat.runQueueSeconds,
      systemCpuSeconds: stat.systemCpuSeconds,
      minorFaults: stat.minorFaults,
      serverCpuSeconds: servers,
      peakRssBytes: stat.hwmBytes,
      idleRssBytes,
      deadLetters,
      batches,
      fetchPausedSeconds,
    };
  } finally {
    if (exitCode === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    await admin.deleteGroups([groupId]).catch(() => undefined);
    await deleteTopics(admin, { names: [deadLetterTopic] }).catch((error: unknown) => log(`cleanup of ${deadLetterTopic} failed: ${String(error)}`));
  }
}

// ---- reading back ---------------------------------------------------------------------------------

async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<{ key: string; size: number }[]> {
  const keys: { key: string; size: number }[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push({ key: o.Key, size: o.Size ?? 0 });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

/** Every data object under the prefix is read and its lines counted. */
async function countS3Lines(client: S3Client, bucket: string, prefix: string): Promise<{ lines: number; objects: number; compressedBytes: number }> {
  const objects = (await listKeys(client, bucket, prefix)).filter((o) => o.key.endsWith('.ndjson.gz'));
  let lines = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let o = objects[next++]; o !== undefined; o = objects[next++]) {
      const body = await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.key }));
      const text = gunzipSync(await (body.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
      for (let i = text.indexOf(0x0a); i !== -1; i = text.indexOf(0x0a, i + 1)) lines++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { lines, objects: objects.length, compressedBytes: objects.reduce((sum, o) => sum + o.size, 0) };
}

async function deleteS3Prefix(client: S3Client, bucket: string, prefix: string): Promise<void> {
  for (let pass = 0; pass < 1_000; pass++) {
    const keys = await listKeys(client, bucket, prefix);
    if (keys.length === 0) return;
    for (let i = 0; i < keys.length; i += 1_000) {
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1_000).map((k) => ({ Key: k.key })) } }));
    }
  }
}

async function countDocuments(client: Client, pattern: string): Promise<number> {
  await client.indices.refresh({ index: pattern, ignore_unavailable: true, allow_no_indices: true });
  return (await client.count({ index: pattern, ignore_unavailable: true, allow_no_indices: true })).count;
}

async function deleteIndices(client: Client, prefix: string): Promise<void> {
  await client.indices.delete({ index: `${prefix}-*`, ignore_unavailable: true, allow_no_indices: true }).catch(() => undefined);
  await client.indices.deleteIndexTemplate({ name: prefix }).catch(() => undefined);
}

// ---- the plain bulk loop (child process) ----------------------------------------------------------

interface PlainBulkSpec {
  indexPrefix: string;
  /** Records of the backlog the Elasticsearch sink drained: the loop sends the same ones. */
  total: number;
  requestBytes: number;
  concurrency: number;
}

/** Child mode: builds the bodies, then times `_bulk` requests, `concurrency` in flight. Prints one JSON line. */
async function plainBulk(specFile: string): Promise<void> {
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as PlainBulkSpec;
  const bodies: Buffer[] = [];
  let chunks: Buffer[] = [];
  let bytes = 0;
  let records = 0;
  const flush = (): void => {
    if (chunks.length > 0) bodies.push(Buffer.concat(chunks, bytes));
    chunks = [];
    bytes = 0;
  };
  for (let m = 0; m < messageCount(spec.total); m++) {
    for (let n = m * PER_MESSAGE; n < m * PER_MESSAGE + messageRecords(m, spec.total); n++) {
      const line = Buffer.from(`${benchRecord(n, spec.total)}\n`);
      const parsed = JSON.parse(line.toString()) as LogRecord;
      const day = parsed[Field.TIMESTAMP].slice(0, 10).replaceAll('-', '.');
      const action = Buffer.from(`{"index":{"_index":"${spec.indexPrefix}-${parsed[Field.KUBERNETES][KubernetesField.NAMESPACE]}-${day}","_id":"${parsed[Field.EVENT_ID]}"}}\n`);
      if (bytes + action.length + line.length > spec.requestBytes) flush();
      chunks.push(action, line);
      bytes += action.length + line.length;
      records++;
    }
  }
  flush();
  // A freshly started node on a loaded machine can take longer than the default 30 s for 5 MiB: this loop has no retries.
  const client = createElasticsearchClient({ ...elasticsearchConfig(), requestTimeoutMs: PLAIN_BULK_TIMEOUT_MS });
  let next = 0;
  let failed = 0;
  const startedAt = performance.now();
  const cpuBefore = process.cpuUsage();
  const worker = async (): Promise<void> => {
    for (let body = bodies[next++]; body !== undefined; body = bodies[next++]) {
      const response = await client.transport.request<{ errors?: boolean; items?: Record<string, { status?: number }>[] }>({
        method: 'POST',
        path: '/_bulk',
        querystring: { filter_path: 'errors,items.*.status' },
        bulkBody: body,
      });
      if (response.errors === true) failed++;
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, worker));
  const seconds = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  await client.close();
  process.stdout.write(`${JSON.stringify({ records, requests: bodies.length, failedRequests: failed, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
}

interface PlainBulkResult {
  records: number;
  requests: number;
  failedRequests: number;
  seconds: number;
  cpuSeconds: number;
}

async function runPlainBulk(work: string, spec: PlainBulkSpec): Promise<PlainBulkResult> {
  const specFile = join(work, 'plain-bulk.json');
  writeFileSync(specFile, JSON.stringify(spec));
  const child = spawn('taskset', ['-c', CPU, process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), '--plain-bulk', specFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  if (code !== 0) throw new Error(`plain bulk loop exited with ${String(code)}`);
  const last = output.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as PlainBulkResult;
}

/** One plain bulk loop into fresh indices (`<prefix>-<namespace>-<day>`) with the sink's template; the indices are deleted after. */
async function plainBulkRun(es: Client, work: string, prefix: string, total: number): Promise<PlainBulkResult> {
  await es.indices.putIndexTemplate({
    name: prefix,
    ...indexTemplateBody({
      indexPatterns: [`${prefix}-*`],
      priority: DEFAULT_TEMPLATE_PRIORITY,
      numberOfShards: 1,
      numberOfReplicas: 0,
      refreshIntervalMs: ES_REFRESH_INTERVAL_MS,
      messageFieldType: 'text',
    }),
  });
  try {
    const r = await runPlainBulk(work, { indexPrefix: prefix, total, requestBytes: ES_REQUEST_BYTES, concurrency: PLAIN_BULK_CONCURRENCY });
    const documents = await countDocuments(es, `${prefix}-*`);
    log(`plain bulk: ${r.records} records in ${r.seconds.toFixed(2)} s (${r.requests} requests, ${PLAIN_BULK_CONCURRENCY} in flight); ${documents} documents`);
    if (r.failedRequests > 0 || documents !== r.records) log(`plain bulk: WARNING: ${r.failedRequests} requests with item errors, ${documents} documents for ${r.records} records`);
    return r;
  } finally {
    await deleteIndices(es, prefix);
  }
}

// ---- profile summary ------------------------------------------------------------------------------

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time by function and by file (packages of node_modules as one file each) of every profile in the folder. */
function summarizeProfiles(dir: string): void {
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

function shortUrl(url: string): string {
  const modules = url.lastIndexOf('node_modules/');
  if (modules !== -1) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/');
    return (rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? '')) + (rest.includes('dist-cjs') || rest.includes('src') ? `/${rest[rest.length - 1] ?? ''}` : '');
  }
  const dist = url.indexOf('/dist/');
  if (dist !== -1) return url.slice(dist + '/dist/'.length);
  return url.replace(/^file:\/\//, '');
}

// ---- main -----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  try {
    run(process.execPath, ['--import', 'tsx', 'scripts/stack/cli.ts', 'up', 'kafka', 'minio', 'elasticsearch']);
  } catch {
    // Servers already running that fail a readiness step of `up` (other work shares the stack) are still usable.
    log('`stack up` failed; going on with the servers that run (see above)');
  }
  const work = mkdtempSync(join(tmpdir(), 'logship-bench-aggregator-'));
  const binary = await bundleBinary(work, 'aggregator');
  const name = uniqueName('bench-agg');
  const topicPrefix = REUSE_TOPICS ?? name;
  const s3Prefix = name;
  const esPrefix = `${name}-es`;
  const bulkPrefix = `${name}-bulk`;
  const s3 = s3Config();
  const s3Client = createS3Client(s3);
  const es = createElasticsearchClient(elasticsearchConfig());
  const admin = createKafka(kafkaConfig({ clientId: 'logship-bench-admin' }), testLogger()).admin();
  await admin.connect();
  const result: Record<string, unknown> = { bench: 'aggregator', at: new Date().toISOString(), records: RECORDS };
  const peaks: number[] = [];
  /** Topics this run created (deleted at the end unless BENCH_KEEP_TOPICS). */
  const createdTopics: string[] = [];
  let releaseCpu = (): void => undefined;
  try {
    const main = await backlog(admin, topicPrefix, RECORDS, createdTopics);
    releaseCpu = reserveCpu(CPU, log);
    Object.assign(result, { record_bytes_avg: Math.round(main.recordBytes / RECORDS), input_mib: round(main.recordBytes / 2 ** 20), messages: messageCount(RECORDS), topics: TOPICS, partitions: TOPICS * PARTITIONS });

    if (RUNS.has('s3')) {
      const sink = merge(
        {
          name: 'archive',
          type: 's3',
          // The default (60 s) would leave the backlog's last partial batches waiting a minute after the rest.
          batch: { maxAgeMs: S3_BATCH_MAX_AGE_MS },
          s3: {
            bucket: s3.bucket,
            prefix: s3Prefix,
            connection: { endpoint: stack().s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyId: stack().s3.accessKeyId, secretAccessKey: { file: stack().s3.secretAccessKeyFile } },
          },
        },
        EXTRA_S3_SINK,
      );
      const referenceBefore = machineReferenceMs(CPU);
      const r = await drain('s3', binary, admin, work, `${name}-s3`, main, sink);
      const referenceAfter = machineReferenceMs(CPU);
      peaks.push(r.peakRssBytes);
      const t0 = performance.now();
      const written = await countS3Lines(s3Client, s3.bucket, s3Prefix);
      log(`s3: ${r.records} records in ${r.drainSeconds.toFixed(2)} s; read back ${written.lines} lines from ${written.objects} objects in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      if (written.lines !== r.records) log(`s3: WARNING: ${written.lines} lines in S3 for ${r.records} records`);
      if (PROFILE_DIR !== undefined) summarizeProfiles(join(PROFILE_DIR, 's3'));
      Object.assign(result, {
        s3_records_per_sec: Math.round(r.recordsPerSec),
        s3_sustained_window_seconds: r.sustainedWindow,
        s3_drain_records_per_sec: Math.round(r.drainRecordsPerSec),
        drain_seconds: round(r.drainSeconds),
        s3_first_commit_seconds: round(r.firstCommitSeconds),
        s3_cpu_seconds: round(r.cpuSeconds),
        s3_ready_seconds: round(r.readySeconds),
        s3_cpu_s_per_million_records: round(r.cpuSecondsAfterReady / (r.records / 1e6)),
        // What one core would do if the aggregator had it to itself (the machine is shared; see run_queue_wait).
        s3_records_per_cpu_second: Math.round(r.records / r.cpuSecondsAfterReady),
        s3_main_thread_cpu_seconds: round(r.mainThreadCpuSeconds),
        s3_thread_cpu_seconds: r.threadCpuSeconds,
        s3_run_queue_wait_seconds: round(r.runQueueSeconds),
        s3_system_cpu_seconds: round(r.systemCpuSeconds),
        s3_minor_page_faults: r.minorFaults,
        s3_server_cpu_seconds: r.serverCpuSeconds,
        s3_peak_rss_mib: round(r.peakRssBytes / 2 ** 20),
        s3_idle_rss_mib: round(r.idleRssBytes / 2 ** 20),
        s3_rows: written.lines,
        s3_rows_checked: 'all objects read, lines counted',
        s3_objects: written.objects,
        s3_batches: r.batches,
        s3_compressed_mib: round(written.compressedBytes / 2 ** 20),
        s3_fetch_paused_seconds: round(r.fetchPausedSeconds),
        s3_dead_letters: r.deadLetters,
        // The machine's speed before and after the run (bench/runtime.ts): CPU ms of a fixed job, lower is faster.
        s3_machine_reference_ms: [referenceBefore, referenceAfter],
      });
      await deleteS3Prefix(s3Client, s3.bucket, s3Prefix);
    }

    // Elasticsearch (sharing the machine) may get a smaller backlog of its own.
    let esBacklog = main;
    if ((RUNS.has('es') || RUNS.has('bulk')) && ES_RECORDS !== RECORDS) {
      esBacklog = await backlog(admin, `${topicPrefix}-es`, ES_RECORDS, createdTopics);
    }

    // The plain loop runs before and after the sink (when both are asked for): the machine's load drifts.
    const plainRates: number[] = [];
    const plain = async (pass: number): Promise<void> => {
      const r = await plainBulkRun(es, work, `${bulkPrefix}${pass}`, esBacklog.total);
      plainRates.push(r.records / r.seconds);
      Object.assign(result, {
        [`es_plain_bulk_${pass}_records_per_sec`]: Math.round(r.records / r.seconds),
        [`es_plain_bulk_${pass}_cpu_seconds`]: round(r.cpuSeconds),
      });
    };
    if (RUNS.has('bulk')) await plain(1);

    if (RUNS.has('es')) {
      const sink = merge(
        {
          name: 'search',
          type: 'elasticsearch',
          elasticsearch: {
            connection: { nodes: [stack().elasticsearch.url] },
            index: `${esPrefix}-{namespace}-{yyyy.MM.dd}`,
            templateName: esPrefix,
            numberOfReplicas: 0,
            refreshIntervalMs: ES_REFRESH_INTERVAL_MS,
          },
        },
        EXTRA_ES_SINK,
      );
      const referenceBefore = machineReferenceMs(CPU);
      const r = await drain('es', binary, admin, work, `${name}-es`, esBacklog, sink);
      const referenceAfter = machineReferenceMs(CPU);
      peaks.push(r.peakRssBytes);
      if (PROFILE_DIR !== undefined) summarizeProfiles(join(PROFILE_DIR, 'es'));
      const documents = await countDocuments(es, `${esPrefix}-*`);
      log(`es: ${r.records} records in ${r.drainSeconds.toFixed(2)} s; ${documents} documents`);
      if (documents !== r.records) log(`es: WARNING: ${documents} documents for ${r.records} records`);
      Object.assign(result, {
        es_records: r.records,
        es_records_per_sec: Math.round(r.recordsPerSec),
        es_sustained_window_seconds: r.sustainedWindow,
        es_drain_records_per_sec: Math.round(r.drainRecordsPerSec),
        es_drain_seconds: round(r.drainSeconds),
        es_first_commit_seconds: round(r.firstCommitSeconds),
        es_cpu_seconds: round(r.cpuSeconds),
        es_ready_seconds: round(r.readySeconds),
        es_cpu_s_per_million_records: round(r.cpuSecondsAfterReady / (r.records / 1e6)),
        es_main_thread_cpu_seconds: round(r.mainThreadCpuSeconds),
        es_thread_cpu_seconds: r.threadCpuSeconds,
        es_run_queue_wait_seconds: round(r.runQueueSeconds),
        es_system_cpu_seconds: round(r.systemCpuSeconds),
        es_minor_page_faults: r.minorFaults,
        es_server_cpu_seconds: r.serverCpuSeconds,
        es_peak_rss_mib: round(r.peakRssBytes / 2 ** 20),
        es_idle_rss_mib: round(r.idleRssBytes / 2 ** 20),
        es_documents: documents,
        es_batches: r.batches,
        es_dead_letters: r.deadLetters,
        es_machine_reference_ms: [referenceBefore, referenceAfter],
      });
      await deleteIndices(es, esPrefix);
    }

    if (RUNS.has('bulk')) {
      if (RUNS.has('es')) await plain(2);
      const rate = plainRates.reduce((a, b) => a + b, 0) / plainRates.length;
      Object.assign(result, {
        es_plain_bulk_records_per_sec: Math.round(rate),
        es_plain_bulk_concurrency: PLAIN_BULK_CONCURRENCY,
        es_plain_bulk_request_bytes: ES_REQUEST_BYTES,
      });
      if (typeof result.es_records_per_sec === 'number') result.es_vs_plain_bulk = round(result.es_records_per_sec / rate);
      if (typeof result.es_drain_records_per_sec === 'number') result.es_drain_vs_plain_bulk = round(result.es_drain_records_per_sec / rate);
    }
  } finally {
    releaseCpu();
    // Each step on its own: a server another test stopped must not leave the rest behind.
    const cleanup = async (what: string, step: () => Promise<unknown>): Promise<void> => {
      await step().catch((error: unknown) => log(`cleanup of ${what} failed: ${String(error)}`));
    };
    await cleanup(`s3://${s3.bucket}/${s3Prefix}`, () => deleteS3Prefix(s3Client, s3.bucket, s3Prefix));
    for (const prefix of [esPrefix, `${bulkPrefix}1`, `${bulkPrefix}2`]) await cleanup(`indices ${prefix}-*`, () => deleteIndices(es, prefix));
    if (KEEP_TOPICS) log(`kept the topics: BENCH_REUSE_TOPICS=${topicPrefix}`);
    else if (createdTopics.length > 0) await cleanup(`topics ${topicPrefix}*`, () => deleteTopics(admin, { names: createdTopics }));
    await cleanup('the Kafka admin client', () => admin.disconnect());
    await cleanup('the Elasticsearch client', () => es.close());
    s3Client.destroy();
    rmSync(work, { recursive: true, force: true });
  }

  Object.assign(result, {
    peak_rss_mib: round(Math.max(0, ...peaks) / 2 ** 20),
    s3_batch_max_age_ms: S3_BATCH_MAX_AGE_MS,
    records_per_message: PER_MESSAGE,
    config_overrides: { BENCH_CONFIG: EXTRA_CONFIG, BENCH_S3_SINK: EXTRA_S3_SINK, BENCH_ES_SINK: EXTRA_ES_SINK, BENCH_NODE_FLAGS: NODE_FLAGS.join(' ') },
    aggregator_env: AGGREGATOR_ENV.env,
    as_deployed: AGGREGATOR_ENV.asDeployed && NODE_FLAGS.length === 0 && nodeOfAggregator().asImage && Object.keys({ ...EXTRA_CONFIG, ...EXTRA_S3_SINK, ...EXTRA_ES_SINK }).length === 0,
    cpu: CPU,
    cpu_reserved: RESERVE_CPU,
    node: nodeOfAggregator().version,
    harness_node: process.version,
  });
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  const resultFile = PER_MESSAGE === 1 ? 'aggregator-one-record-per-message.json' : 'aggregator.json';
  writeFileSync(join(REPO_ROOT, 'bench', 'results', resultFile), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

const entry = process.argv[2] === '--plain-bulk' ? plainBulk(process.argv[3] ?? '') : main();
entry.catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

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
 *
 * The pieces: aggregator-settings.ts (these knobs and fixed sizes), aggregator-records.ts (the records
 * and where each message goes), aggregator-backlog.ts (pre-loading Kafka), aggregator-drain.ts (one
 * aggregator run), aggregator-readback.ts (counting and cleaning up what a run wrote),
 * aggregator-plain-bulk.ts (the `_bulk` baseline, run as `aggregator.ts --plain-bulk <spec>`),
 * aggregator-profile.ts (CPU profile summary), aggregator-util.ts; this file runs them in order.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createElasticsearchClient } from '../shared/elasticsearch.js';
import { createKafka } from '../shared/kafka.js';
import { createS3Client } from '../shared/s3.js';
import { bundleBinary, machineReferenceMs, RESERVE_CPU, reserveCpu } from './runtime.js';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { deleteTopics } from '../scripts/stack/topics.js';
import { elasticsearchConfig, kafkaConfig, s3Config, stack, testLogger, uniqueName } from '../test/helpers/stack.js';
import { backlog } from './aggregator-backlog.js';
import { drain } from './aggregator-drain.js';
import { plainBulk, plainBulkRun } from './aggregator-plain-bulk.js';
import { summarizeProfiles } from './aggregator-profile.js';
import { countDocuments, countS3Lines, deleteIndices, deleteS3Prefix } from './aggregator-readback.js';
import { messageCount } from './aggregator-records.js';
import { AGGREGATOR_ENV, CPU, ES_RECORDS, ES_REFRESH_INTERVAL_MS, ES_REQUEST_BYTES, EXTRA_CONFIG, EXTRA_ES_SINK, EXTRA_S3_SINK, KEEP_TOPICS, NODE_FLAGS, PARTITIONS, PER_MESSAGE, PLAIN_BULK_CONCURRENCY, PROFILE_DIR, RECORDS, REUSE_TOPICS, RUNS, S3_BATCH_MAX_AGE_MS, TOPICS, merge, nodeOfAggregator } from './aggregator-settings.js';
import { log, round, run } from './aggregator-util.js';

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

/** One demo run on a stack that is up: create, start, write, watch it land, check, report. */
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { elasticsearchConnectionSchema } from '../../shared/elasticsearch-connection.js';
import { createKafka, kafkaConnectionSchema } from '../../shared/kafka.js';
import { createKubeClients } from '../../shared/kube.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { createS3Client } from '../../shared/s3.js';
import { s3ConnectionSchema } from '../../shared/s3-connection.js';
import { fetchMetricSum } from '../metrics-text.js';
import type { StackEndpoints } from '../stack/endpoints.js';
import { agentDiagnosis, Binary } from './binary.js';
import type { Cleanup } from './cleanup.js';
import { writeConfigs } from './configs.js';
import { createKubeObjects } from './kube-objects.js';
import { countDocuments, deleteGroups, KafkaCounter, S3Rows, settledLag, topicMessages } from './landed.js';
import { planLogs, ROUNDS, writeLogs, type WriteStats } from './log-writer.js';
import { elapsed, out, SECOND_MS } from './output.js';
import { elasticsearchExample, sqlExample } from './queries.js';
import { printSummary } from './report.js';
import type { RunNames } from './run-names.js';
import { checkRows, findProblems, type DemoSummary, type LiveCounts } from './checks.js';
import { mulberry32, QUERY_APP } from './workload.js';

/** How long after the first line was written everything must have landed. */
const LANDING_TIMEOUT_MS = 5 * 60_000;
/** Progress is probed this often. */
const PROBE_INTERVAL_MS = 1_000;

export async function run(endpoints: StackEndpoints, names: RunNames, keep: boolean, signal: AbortSignal, cleanup: Cleanup, startedMs: number, live: LiveCounts): Promise<DemoSummary> {
  const rnd = mulberry32(0x10c5);
  const logDir = join(names.dir, 'logs');
  const logRoot = join(names.dir, 'var-log-pods');
  mkdirSync(logDir, { recursive: true });
  mkdirSync(logRoot, { recursive: true });
  const logger: Logger = createLogger({ name: 'logship-demo', level: 'warn', destination: createWriteStream(join(logDir, 'demo.log')) });

  // Clients of the demo itself, through the project's own wrappers.
  const kafka = createKafka(kafkaConnectionSchema.parse({ brokers: endpoints.kafka.brokers, clientId: 'logship-demo' }), logger);
  const admin = kafka.admin();
  await admin.connect();
  cleanup.add('Kafka admin client', false, () => admin.disconnect());
  const s3Connection = {
    endpoint: endpoints.s3.endpoint,
    region: endpoints.s3.region,
    forcePathStyle: true,
    accessKeyId: endpoints.s3.accessKeyId,
    secretAccessKey: { file: endpoints.s3.secretAccessKeyFile },
  };
  const s3 = createS3Client(s3ConnectionSchema.parse(s3Connection));
  cleanup.add('S3 client', false, async () => s3.destroy());
  const s3Rows = new S3Rows(s3, endpoints.s3.bucket, names.s3Prefix);
  const es = createElasticsearchClient(elasticsearchConnectionSchema.parse({ nodes: [endpoints.elasticsearch.url] }));
  cleanup.add('Elasticsearch client', false, () => es.close());
  const kube = createKubeClients({ kubeconfig: endpoints.kubernetes.kubeconfig });

  // Kubernetes: namespaces and pods bound to the demo's node, as the scheduler would leave them.
  const containers = await createKubeObjects(kube, names, rnd, cleanup);
  const podCount = new Set(containers.map((c) => c.uid)).size;
  out.line(`Kubernetes: namespaces ${Object.values(names.namespaces).join(', ')} and ${podCount} pods on node ${names.nodeName}:`);
  for (const c of containers) out.line(`  ${c.namespace}/${c.podName}  container ${c.plan.name}  labels ${JSON.stringify(c.pod.labels)}`);

  // Kafka: the topics the agent's template yields (3 partitions each), and the dead-letter topic.
  await admin.createTopics({ topics: [...names.topics, names.deadLetterTopic].map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true });
  cleanup.add(`Kafka topics ${[...names.topics, names.deadLetterTopic].join(', ')}`, true, () => admin.deleteTopics({ topics: [...names.topics, names.deadLetterTopic] }));
  cleanup.add(`consumer groups ${names.groupId}, ${names.counterGroupId}`, true, () => deleteGroups(admin, [names.groupId, names.counterGroupId]));
  cleanup.add(`S3 objects under s3://${endpoints.s3.bucket}/${names.s3Prefix}/`, true, () => s3Rows.deleteAll());
  cleanup.add(`Elasticsearch indices ${names.indexPrefix}-* and template ${names.indexPrefix}`, true, async () => {
    await es.indices.delete({ index: `${names.indexPrefix}-*`, ignore_unavailable: true, allow_no_indices: true });
    await es.indices.deleteIndexTemplate({ name: names.indexPrefix });
  });
  out.line(`Kafka: topics ${names.topics.join(', ')} (pattern ${names.topicPattern}), dead letters to ${names.deadLetterTopic}`);

  // The binaries, from source, with generated config files.
  const { agentConfig, aggregatorConfig } = writeConfigs(endpoints, names, logRoot, s3Connection);
  const binaries = [
    new Binary('agent', 'agent', agentConfig, join(logDir, 'agent.log')),
    new Binary('aggregator-1', 'aggregator', aggregatorConfig, join(logDir, 'aggregator-1.log')),
    new Binary('aggregator-2', 'aggregator', aggregatorConfig, join(logDir, 'aggregator-2.log')),
  ];
  const exitCodes: Record<string, number | null> = {};
  const stopAll = async (): Promise<void> => {
    // The agent first (it flushes to Kafka), then the aggregators (they flush to the sinks and commit).
    for (const binary of binaries) exitCodes[binary.name] ??= await binary.stop(30_000);
  };
  cleanup.add('agent and aggregators', false, stopAll);
  // An aggregator is ready for the demo once its consumer runs; a failing sink health check is shown, not fatal.
  const [agent, ...aggregators] = await Promise.all(binaries.map((b, i) => b.ready(90_000, signal, i === 0 ? undefined : ['consumer'])));
  const aggregatorUrls = aggregators.map((a) => a.url);
  out.line(`[${elapsed(startedMs)}] Started from source (configs in ${names.dir}): agent ${agent?.url ?? ''}, aggregators ${aggregatorUrls.join(' and ')} (/metrics, /healthz, /readyz)`);
  for (const [i, a] of aggregators.entries()) {
    if (a.failing.length > 0) out.line(`  note: aggregator-${i + 1} /readyz reports ${a.failing.join(', ')} unhealthy (see its log); the demo goes on and checks what lands`);
  }

  const counter = new KafkaCounter(kafka.consumer({ groupId: names.counterGroupId, maxWaitTimeInMs: 200 }));
  cleanup.add('Kafka counting consumer', false, () => counter.stop());
  await counter.start(names.topics);

  // Write the logs while everything runs, and watch them land.
  const logs = planLogs(containers, logRoot, rnd);
  const expectedLines = logs.reduce((n, l) => n + l.events.length, 0);
  out.line(`[${elapsed(startedMs)}] Writing ${expectedLines} log lines into ${logRoot} (CRI format, ${ROUNDS} rounds, one rotation)…`);
  const written: WriteStats = { lines: 0, physicalLines: 0, partialChains: 0, interleaved: 0, stderr: 0, messages: new Set(), stderrByApp: new Map() };
  const writer: { done: boolean; error?: Error } = { done: false };
  const agentState = { shipped: (uid: string) => counter.shipped(uid), diagnose: () => agentDiagnosis(agent?.url ?? '') };
  const writing: Promise<Error | undefined> = writeLogs(logs, written, agentState, signal).then(
    () => {
      writer.done = true;
      return undefined;
    },
    (error: unknown) => (writer.error = error instanceof Error ? error : new Error(String(error))),
  );
  let esDocs = 0;
  const status = (): string => {
    Object.assign(live, { lines_written: written.lines, kafka_records: counter.records, s3_objects: s3Rows.objectCount, s3_rows: s3Rows.rowCount, es_docs: esDocs });
    return `[${elapsed(startedMs)}] written ${written.lines}/${expectedLines} lines · Kafka ${counter.records} records · S3 ${s3Rows.rowCount} rows in ${s3Rows.objectCount} objects · Elasticsearch ${esDocs} docs`;
  };
  const landedBy = Date.now() + LANDING_TIMEOUT_MS;
  let landed = false;
  for (;;) {
    signal.throwIfAborted();
    if (writer.error !== undefined) throw writer.error;
    try {
      await s3Rows.refresh();
      esDocs = await countDocuments(es, `${names.indexPrefix}-*`);
    } catch (error) {
      logger.warn({ err: error }, 'progress probe failed');
    }
    landed = writer.done && counter.records >= expectedLines && s3Rows.rowCount >= expectedLines && esDocs >= expectedLines;
    if (landed || Date.now() > landedBy) break;
    out.progress(status());
    await sleep(PROBE_INTERVAL_MS, undefined, { signal });
  }
  const writeFailure = await writing;
  if (writeFailure !== undefined) throw writeFailure;
  esDocs = await countDocuments(es, `${names.indexPrefix}-*`, true);
  out.progress(status(), true);
  out.line(
    landed
      ? `Everything landed ${elapsed(startedMs)} after the start.`
      : `Not everything landed within ${LANDING_TIMEOUT_MS / SECOND_MS} s.`,
  );

  // Lag: the aggregators commit every 500 ms once both sinks wrote; give them a moment.
  const lag = await settledLag(admin, names, signal);
  const deadLetters = await topicMessages(admin, names.deadLetterTopic);
  let deadLetterMetric = 0;
  for (const url of aggregatorUrls) deadLetterMetric += await fetchMetricSum(url, 'logship_aggregator_dead_letters_total');
  out.line();

  // What landed, checked against what was written.
  const rows = checkRows(s3Rows.records(), written.messages);
  const s3RowCount = s3Rows.rowCount;

  if (landed) await elasticsearchExample(es, names, written.stderrByApp.get(QUERY_APP) ?? 0);
  const sqlTotal = s3RowCount > 0 ? await sqlExample(s3Rows, names, endpoints.s3.bucket) : null;

  await stopAll();

  const summary: DemoSummary = {
    ok: false,
    run_id: names.id,
    lines_written: written.lines,
    kafka_records: counter.records,
    s3_objects: s3Rows.objectCount,
    s3_rows: s3RowCount,
    es_docs: esDocs,
    dead_letters: Math.max(deadLetters, deadLetterMetric),
    lag,
    enriched: s3RowCount === 0 ? 0 : Number((rows.enriched / s3RowCount).toFixed(4)),
    messages_intact: rows.intact === written.lines && s3RowCount === written.lines,
    sql_rows_total: sqlTotal,
    exit_codes: exitCodes,
    seconds: 0,
    kept: keep,
  };
  const problems = findProblems(summary, rows.distinctEventIds);
  summary.ok = problems.length === 0;

  printSummary({ summary, problems, written, rows, deadLetters, deadLetterMetric, names, bucket: endpoints.s3.bucket, logRoot, binaries });
  return summary;
}

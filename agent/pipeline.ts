/**
 * Wires the agent: discover → tail → parse → enrich → produce, with checkpoints behind the producer's
 * acknowledgements, metrics, health, and an ordered shutdown. Components never reach into each other;
 * this file is the only place that knows them all.
 */
import picomatch from 'picomatch';
import { describeError } from '../shared/errors.js';
import { createKafka, releaseKafkaMemory, setGzipLevel } from '../shared/kafka.js';
import { createKubeClients, loadKubeLibrary } from '../shared/kube.js';
import { RateLimitedLog, type Logger } from '../shared/logger.js';
import { createMetricsRegistry, startOpsServer } from '../shared/ops-server.js';
import { ResidentMemory } from '../shared/resident-memory.js';
import { ShutdownCoordinator } from '../shared/shutdown.js';
import { CheckpointStore } from './checkpoint-store.js';
import { IdleReclaimer } from './idle-reclaimer.js';
import type { AgentConfig } from './config.js';
import { AgentProducer } from './kafka-producer.js';
import { MessageBuilder } from './message-builder.js';
import { AgentMetrics } from './metrics.js';
import { MULTILINE_PRESETS, type MultilineOptions, type MultilinePreset } from './multiline.js';
import { ContainerLinkIndex } from './container-links.js';
import { ANNOTATION_MULTILINE, PodMetadataCache, PodMetadataStore, type MetadataLookup } from './pod-metadata.js';
import type { PodLogPath } from './pod-path.js';
import { TailManager } from './tail-manager.js';
import { newTailCounters, type TailEnvironment } from './tailed-file.js';

export interface RunningAgent {
  opsUrl: string;
  shutdown: ShutdownCoordinator;
}

/** How long an error reason is logged at most once. */
const ERROR_LOG_INTERVAL_MS = 30_000;
/** Time of the shutdown deadline kept for the final checkpoints when the flush cannot finish (at most a quarter). */
const SHUTDOWN_RESERVE_MS = 5_000;
export async function startAgent(config: AgentConfig, logger: Logger, shutdown: ShutdownCoordinator): Promise<RunningAgent> {
  const registry = createMetricsRegistry();
  const counters = newTailCounters();
  const errorLog = new RateLimitedLog(logger, ERROR_LOG_INTERVAL_MS);

  setGzipLevel(config.kafka.compressionLevel);
  const kafka = createKafka(config.kafka, logger);
  const producer = new AgentProducer(kafka, config.kafka, logger.child({ component: 'producer' }));

  let podStore: PodMetadataStore | undefined;
  let lookupMetadata: (path: PodLogPath) => MetadataLookup;
  let annotation: (podUid: string, key: string) => string | undefined;
  let metadataSynced: () => boolean = () => false;
  if (config.kubernetes.enabled) {
    await loadKubeLibrary();
    podStore = new PodMetadataStore(createKubeClients(config.kubernetes), {
      nodeName: config.nodeName,
      cluster: config.cluster,
      deletedPodGraceMs: config.kubernetes.deletedPodGraceMs,
      logger: logger.child({ component: 'pod-metadata' }),
      containerLinks:
        config.files.containerLinksRoot === ''
          ? undefined
          : new ContainerLinkIndex({ dir: config.files.containerLinksRoot, logger: logger.child({ component: 'container-links' }) }),
    });
    const store = podStore;
    lookupMetadata = (path) => store.lookup(path);
    annotation = (uid, key) => store.annotation(uid, key);
    metadataSynced = () => store.synced;
  } else {
    const pathOnly = new PodMetadataCache({ nodeName: config.nodeName, cluster: config.cluster, deletedPodGraceMs: 0 });
    lookupMetadata = (path) => pathOnly.lookup(path);
    annotation = () => undefined;
  }

  const messages = new MessageBuilder({
    maxMessageBytes: config.kafka.maxMessageBytes,
    maxRecordsPerMessage: config.kafka.maxRecordsPerMessage,
    slabBytes: config.kafka.maxBatchBytes,
    maxFreeBytes: config.kafka.maxBufferedBytes,
  });
  const env: TailEnvironment = {
    settings: {
      cluster: config.cluster,
      node: config.nodeName,
      format: config.parse.format,
      maxLineBytes: config.parse.maxLineBytes,
      maxMessageBytes: config.kafka.maxMessageBytes,
      maxRecordsPerMessage: config.kafka.maxRecordsPerMessage,
      rotateWaitMs: config.files.rotateWaitMs,
      partialTimeoutMs: config.parse.partialTimeoutMs,
    },
    producer,
    messages,
    logger,
    lookupMetadata,
    metadataSynced,
    topicFor: topicRenderer(config.kafka.topicTemplate, config.cluster),
    multilineFor: multilineResolver(config, annotation),
    counters,
  };

  // Metric sources are read at scrape time, after everything below exists.
  const metrics = new AgentMetrics(registry, {
    counters,
    trackedFiles: () => tails.trackedFiles,
    openFiles: () => tails.openFiles,
    unshippedBytes: () => tails.unshippedBytes(),
    bufferedBytes: () => producer.bufferedBytes,
    lastCheckpointMs: () => checkpoints.lastWrittenAtMs,
    producer: () => producer.stats,
    stalledTopics: () => producer.stalledTopics(),
    checkpointRegressions: () => checkpoints.regressions,
  });
  const checkpoints = await CheckpointStore.open(config.checkpoints.dir, logger.child({ component: 'checkpoints' }));
  const tails = new TailManager(
    env,
    checkpoints,
    {
      root: config.files.root,
      include: config.files.include,
      exclude: config.files.exclude,
      namespaces: config.files.namespaces,
      startAt: config.files.startAt,
      readBufferBytes: config.files.readBufferBytes,
      maxOpenFiles: config.files.maxOpenFiles,
      pollIntervalMs: config.files.pollIntervalMs,
      rescanIntervalMs: config.files.rescanIntervalMs,
      checkpointIntervalMs: config.checkpoints.intervalMs,
      orphanCheckpointTtlMs: config.checkpoints.orphanTtlMs,
    },
    {
      onError: (reason, error, context) => {
        metrics.errors.inc({ reason });
        errorLog.warn(reason, { ...context, err: error }, `agent error: ${reason}`);
      },
      onBackpressure: (waitedMs: number) => metrics.backpressureSeconds.inc(waitedMs / 1000),
      onLost: (reason, bytes, context) => {
        metrics.lostBytes.inc({ reason }, bytes);
        logger.warn({ reason, bytes, ...context }, 'lost bytes');
      },
    },
    logger.child({ component: 'tail' }),
  );
  // Shutdown order: stop reading → checkpoints (acknowledged offsets: always safe) → flush the
  // producer, within a share of the time that leaves room for → final checkpoints → the rest. With
  // Kafka unreachable the flush is given up and the checkpoints are still written.
  const shutdownReserveMs = Math.min(SHUTDOWN_RESERVE_MS, Math.floor(config.shutdown.timeoutMs / 4));
  shutdown
    .register('stop reading', async () => {
      const stopped = tails.stopReading();
      producer.stopWaiting();
      await stopped;
    })
    .register('write checkpoints', () => tails.writeCheckpoints())
    .register('flush producer', (signal) => producer.close(signal), { reserveMs: shutdownReserveMs })
    .register('write final checkpoints', () => tails.close())
    .register('stop pod watcher', () => podStore?.close());

  const ops = await startOpsServer({
    host: config.ops.host,
    port: config.ops.port,
    registry,
    logger,
    readiness: {
      kafka: () => producer.isConnected,
      firstScan: () => tails.firstScanDone,
    },
    readinessDetails: () => ({ stalledTopics: producer.stalledTopics().map(({ topic, reason, bytes, sinceMs }) => ({ topic, reason, bytes, since: new Date(sinceMs).toISOString() })) }),
  });
  shutdown.register('stop ops server', () => ops.close());
  podStore?.start();
  await producer.connect();
  await tails.start();
  const reclaimer = new IdleReclaimer({
    activity: () => counters.bytesRead + producer.stats.messagesAcked,
    busy: () => producer.bufferedBytes > 0,
    release: () => {
      messages.releasePooled();
      releaseKafkaMemory();
      metrics.idleSteps.inc({ step: 'release' });
    },
    quietMs: config.idle.reclaimAfterMs,
    later: config.idle.pageOutAfterMs > 0 ? { quietMs: config.idle.pageOutAfterMs, repeatMs: config.idle.pageOutRepeatMs, ...pageOutStep(metrics, logger) } : undefined,
  });
  reclaimer.start();
  shutdown.register('stop idle reclaimer', () => reclaimer.stop());
  logger.info({ root: config.files.root, files: tails.trackedFiles, node: config.nodeName, cluster: config.cluster }, 'agent started');
  return { opsUrl: ops.url, shutdown };
}

/**
 * The idle page-out (shared/resident-memory.ts): loads its library on first use; when that or the
 * kernel's advice fails, logs why once, counts it, and stays off.
 */
function pageOutStep(metrics: AgentMetrics, logger: Logger): { run: () => void; resume: () => void } {
  let memory: Promise<ResidentMemory | undefined> | undefined;
  const fail = (error: unknown): undefined => {
    metrics.idleSteps.inc({ step: 'page_out_failed' });
    logger.warn({ err: describeError(error) }, 'idle page-out unavailable, turned off');
    memory = Promise.resolve(undefined);
    return undefined;
  };
  const withMemory = (use: (loaded: ResidentMemory) => void): void => {
    memory ??= ResidentMemory.load().catch(fail);
    void memory.then((loaded) => {
      if (!loaded) return;
      try {
        use(loaded);
      } catch (error) {
        fail(error);
      }
    });
  };
  return {
    run: () => {
      withMemory((loaded) => {
        const result = loaded.pageOut();
        metrics.idleSteps.inc({ step: 'page_out' });
        metrics.pagedOutBytes.inc(Math.max(0, result.before.total - result.after.total));
        const mib = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;
        logger.debug({ rssMiB: mib(result.before.total), rssAfterMiB: mib(result.after.total), fileMiB: mib(result.after.file), mappings: result.mappings, ms: Math.round(result.durationMs) }, 'idle page-out');
      });
    },
    resume: () => withMemory((loaded) => loaded.resume()),
  };
}

/** `logs.{cluster}.{namespace}` → a function of the file's pod, memoised per namespace. */
export function topicRenderer(template: string, cluster: string): (path: PodLogPath) => string {
  const cache = new Map<string, string>();
  return (path) => {
    let topic = cache.get(path.namespace);
    if (topic === undefined) {
      topic = template.replaceAll('{cluster}', cluster).replaceAll('{namespace}', path.namespace);
      cache.set(path.namespace, topic);
    }
    return topic;
  };
}

/** Multiline rules: the config's per-container globs first, then the pod's annotation. */
function multilineResolver(config: AgentConfig, annotation: (podUid: string, key: string) => string | undefined): (path: PodLogPath) => MultilineOptions | undefined {
  const { maxLines, maxBytes, timeoutMs, containers } = config.parse.multiline;
  const rules = Object.entries(containers).map(([glob, rule]) => ({ match: picomatch(glob), rule }));
  return (path) => {
    const key = `${path.namespace}/${path.pod}/${path.container}`;
    const rule = rules.find((r) => r.match(key))?.rule;
    let startPattern: RegExp | undefined;
    if (rule?.startPattern !== undefined) startPattern = new RegExp(rule.startPattern);
    else if (rule?.preset !== undefined) startPattern = MULTILINE_PRESETS[rule.preset].startPattern;
    else {
      const preset = annotation(path.podUid, ANNOTATION_MULTILINE);
      if (preset !== undefined && preset in MULTILINE_PRESETS) startPattern = MULTILINE_PRESETS[preset as MultilinePreset].startPattern;
    }
    return startPattern ? { startPattern, maxLines, maxBytes, timeoutMs } : undefined;
  };
}

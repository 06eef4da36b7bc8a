/**
 * Wires the aggregator: consume → decode → batch per sink → sinks[], with one offset tracker
 * committing the contiguous prefix every sink acknowledged, backpressure on the bytes held, dead
 * letters, metrics, health and an ordered shutdown. The only file that knows every component.
 */
import type { Registry } from 'prom-client';
import { createKafka, useGzipDecompression } from '../shared/kafka.js';
import { describeError } from '../shared/errors.js';
import { RateLimitedLog, type Logger } from '../shared/logger.js';
import { createMetricsRegistry, startOpsServer } from '../shared/ops-server.js';
import type { ShutdownCoordinator } from '../shared/shutdown.js';
import { abortableSleep } from '../shared/retry.js';
import { BATCH_DEFAULTS, type AggregatorConfig, type SinkConfig } from './config.js';
import { LogConsumer, type FetchedBatch } from './consumer.js';
import { DeadLetterQueue, type DeadLetterFallback } from './dead-letter.js';
import { AggregatorMetrics } from './metrics.js';
import { OffsetTracker, partitionKey } from './offset-tracker.js';
import { decodeMessage, type PoisonRecord } from './record-decoder.js';
import { recordFilter } from './routing.js';
import type { Sink, SinkRecord } from './sink.js';
import { SinkRunner } from './sink-runner.js';
import type { ReplayLimits } from './replay-filter.js';
import { TopicIds } from './topic-ids.js';

/** The S3 prefix dead letters go to when Kafka refuses them for good: under the first S3 sink's prefix. */
async function deadLetterFallback(config: AggregatorConfig): Promise<DeadLetterFallback | undefined> {
  const s3 = config.deadLetter.fallbackToS3 ? config.sinks.find((s) => s.s3 !== undefined) : undefined;
  if (s3?.s3 === undefined) return undefined;
  return (await import('./dead-letter-s3.js')).createS3DeadLetterFallback(s3.s3, `sinks.${s3.name}.s3.connection`);
}

/** What every sink may use besides its own settings. */
interface SharedSinkDeps {
  readonly replays?: ReplayLimits;
  readonly membershipConfirmed: () => boolean;
  readonly topicId: (topic: string, signal: AbortSignal) => Promise<string | undefined>;
  readonly countObjectConflict: (sink: string, resolution: string) => void;
}

export interface RunningAggregator {
  readonly opsUrl: string;
  readonly registry: Registry;
}

/** Messages decoded and handed on per step; between steps, memory and rebalances are checked. */
const CHUNK_MESSAGES = 256;
const PAUSE_POLL_MS = 50;
/**
 * Memory a fetched message costs besides its value: kafkajs' decoded message (offset and timestamp
 * strings, key, headers) and the pipeline's own objects. Counted in the held bytes: draining a backlog
 * of one record per message peaked at 347 MiB RSS without it, 315 MiB at 512 and 309 MiB at 1 KiB.
 */
const MESSAGE_OVERHEAD_BYTES = 1024;
const ERROR_LOG_INTERVAL_MS = 30_000;

/**
 * The sink registry: one line per sink type. A sink's module (and its client library: the AWS SDK,
 * +21 MiB RSS; the Elasticsearch client, +30 MiB) is loaded only when a sink of its type is configured.
 */
async function createSink(config: SinkConfig, logger: Logger, shared: SharedSinkDeps): Promise<Sink> {
  const deps = { logger: logger.child({ sink: config.name }), ...shared };
  if (config.type === 's3' && config.s3) return (await import('./sinks/s3-ndjson.js')).createS3NdjsonSink(config.name, config.s3, deps);
  if (config.type === 'elasticsearch' && config.elasticsearch) {
    return (await import('./sinks/elasticsearch.js')).createElasticsearchSink(config.name, config.elasticsearch, deps);
  }
  throw new Error(`sink ${config.name}: no settings for type ${config.type}`);
}

export async function startAggregator(config: AggregatorConfig, logger: Logger, shutdown: ShutdownCoordinator): Promise<RunningAggregator> {
  const registry = createMetricsRegistry();
  useGzipDecompression();
  const kafka = createKafka(config.kafka, logger);
  const tracker = new OffsetTracker(config.sinks.map((s) => s.name));
  const metrics = new AggregatorMetrics(registry, {
    progress: () => tracker.progress(),
    heldBytes: () => tracker.heldBytes,
    generation: () => consumer.generation,
    sinkNames: config.sinks.map((s) => s.name),
  });
  const errorLog = new RateLimitedLog(logger, ERROR_LOG_INTERVAL_MS);
  const deadLetters = new DeadLetterQueue(
    kafka,
    {
      topic: config.deadLetter.topic,
      maxRecordBytes: config.deadLetter.maxRecordBytes,
      maxRequestBytes: config.deadLetter.maxRequestBytes,
      retryInitialDelayMs: 200,
      retryMaxDelayMs: 10_000,
    },
    logger.child({ component: 'dead-letter' }),
    { fallback: await deadLetterFallback(config), onFallback: (letters) => metrics.deadLetterFallbacks.inc(letters) },
  );

  // Topic IDs (incarnations) are asked once per topic and generation: a topic deleted and created
  // again between two rebalances shows its new ID after the next one.
  const topicIds = new TopicIds(kafka);
  let topicIdCache = new Map<string, Promise<string | undefined>>();
  const topicId = (topic: string): Promise<string | undefined> => {
    let id = topicIdCache.get(topic);
    if (id === undefined) {
      const cache = topicIdCache;
      id = topicIds.fetch([topic]).then((ids) => ids.get(topic));
      id.catch(() => cache.delete(topic)); // asked again at the next send
      cache.set(topic, id);
    }
    return id;
  };
  const replays = config.replayDetection.enabled
    ? { forgetAfterMs: config.replayDetection.forgetAfterMs, maxOriginsPerPartition: config.replayDetection.maxOriginsPerPartition }
    : undefined;
  // A write is allowed while the group confirmed this member within the session timeout less two
  // heartbeats: a member paused past it (and so possibly replaced) writes nothing once it resumes.
  const membershipWindowMs = Math.max(config.kafka.heartbeatIntervalMs, config.kafka.sessionTimeoutMs - 2 * config.kafka.heartbeatIntervalMs);
  const membershipConfirmed = (): boolean => consumer.confirmedWithin(membershipWindowMs);
  const countObjectConflict = (sink: string, resolution: string): void => metrics.s3ObjectConflicts.inc({ sink, resolution });
  const sinks = await Promise.all(config.sinks.map((c) => createSink(c, logger, { topicId, membershipConfirmed, countObjectConflict, ...(replays ? { replays } : {}) })));
  const runners = config.sinks.map((c, i) => {
    const defaults = BATCH_DEFAULTS[c.type];
    const sink = sinks[i];
    if (sink === undefined) throw new Error('sink list out of step');
    return new SinkRunner(
      sink,
      {
        maxBatchBytes: c.batch.maxBytes ?? defaults.maxBytes,
        maxBatchRecords: c.batch.maxRecords ?? defaults.maxRecords,
        maxBatchAgeMs: c.batch.maxAgeMs ?? defaults.maxAgeMs,
        concurrency: c.concurrency ?? defaults.concurrency,
        retryInitialDelayMs: c.retry.initialDelayMs,
        retryMaxDelayMs: c.retry.maxDelayMs,
        filter: recordFilter(c.routing),
      },
      {
        deadLetters,
        metrics,
        logger: logger.child({ sink: c.name }),
        onAck: (topic, partition, endOffset) => {
          tracker.ack(c.name, topic, partition, endOffset);
          commits.maybeCommitEarly();
        },
      },
    );
  });

  // ---- state per consumer-group generation ------------------------------------------------------
  let generation = 0;
  /** Settles when the previous generation's in-flight sends have stopped. */
  let settled: Promise<unknown> = Promise.resolve();
  /** Aborts the dead-letter writes of the current generation's poison. */
  let generationAbort = new AbortController();
  /** Set from the start of a rebalance until the assignment: the runners' sends stopping. */
  let rebalancing: Promise<void> | undefined;

  /** Fetching stops handing on, and writes of the current generation stop. */
  function newGeneration(): void {
    generation++;
    // Offsets every sink already wrote are committed first when the group still accepts them (it
    // does while it prepares a rebalance).
    void commits.commitNow(tracker.pendingCommits());
    generationAbort.abort();
    generationAbort = new AbortController();
    topicIdCache = new Map();
  }

  /**
   * A rebalance starts: nothing is written until the new assignment is known (a partition may move,
   * and its next owner starts from the committed offset). Batches are kept: those of the partitions
   * the member keeps are sent after the assignment.
   */
  function rebalanceStart(reason: string): Promise<void> {
    if (rebalancing !== undefined) return rebalancing;
    newGeneration();
    const stopped = Promise.all(runners.map((r) => r.suspend())).then(() => undefined);
    rebalancing = stopped;
    settled = Promise.all([settled, stopped]);
    logger.info({ reason }, 'rebalance started; writes stop until the new assignment');
    return stopped;
  }

  /** Everything not committed is dropped and re-read (the member lost its membership, or crashed). */
  function reset(reason: string): void {
    newGeneration();
    rebalancing = undefined;
    tracker.clear();
    // Always reset, even with nothing held: sinks drop what they cached about partitions that may
    // now belong to another member.
    settled = Promise.all([settled, ...runners.map((r) => r.reset())]);
    logger.info({ reason, generation: consumer.generation }, 'pipeline state reset; uncommitted records will be re-read');
  }

  /**
   * The new assignment. When the member kept its membership (`continuing`) and stopped writing for
   * the rebalance, partitions it keeps keep their batches and fetching resumes after what it holds;
   * only the partitions that moved are dropped. Otherwise everything restarts from the committed offsets.
   */
  function assign(assignment: Record<string, number[]>, continuing: boolean): void {
    assigned = Object.values(assignment).reduce((n, partitions) => n + partitions.length, 0);
    metrics.rebalances.inc();
    if (!continuing || rebalancing === undefined) {
      reset(continuing ? 'assignment without a rebalance start' : 'joined as a new member or generation');
      return;
    }
    const owned = new Set(Object.entries(assignment).flatMap(([topic, partitions]) => partitions.map((p) => partitionKey(topic, p))));
    const keep = (topic: string, partition: number): boolean => owned.has(partitionKey(topic, partition));
    const dropped = tracker.retain(keep);
    // Fetching resumes after what the pipeline holds (kafkajs would start from the committed offset).
    const kept = tracker.progress();
    for (const p of kept) consumer.seek(p.topic, p.partition, p.ingestedEnd);
    rebalancing = undefined;
    settled = settled.then(() => {
      for (const runner of runners) {
        runner.retain(keep);
        runner.resume();
      }
    });
    metrics.partitionsKept.inc(kept.length);
    metrics.partitionsRevoked.inc(dropped);
    logger.info({ generation: consumer.generation, kept: kept.length, revoked: dropped }, 'rebalance done; batches of the partitions kept are kept');
  }

  const commits = new CommitLoop(config.kafka.commitIntervalMs, config.kafka.commitThreshold, tracker, metrics, logger, (offsets) => consumer.commit(offsets));

  async function waitForRoom(batch: FetchedBatch, startGeneration: number): Promise<boolean> {
    if (tracker.heldBytes < config.records.maxInFlightBytes) return true;
    const started = performance.now();
    try {
      while (tracker.heldBytes >= config.records.maxInFlightBytes) {
        if (!batch.isActive() || generation !== startGeneration || stopping) return false;
        // Open batches hold bytes too: send the largest ones now instead of waiting for their age.
        for (const runner of runners) runner.sealLargest();
        await abortableSleep(PAUSE_POLL_MS);
        await batch.heartbeat();
      }
      return true;
    } finally {
      metrics.fetchPausedSeconds.inc((performance.now() - started) / 1000);
    }
  }

  async function handleBatch(batch: FetchedBatch): Promise<void> {
    await settled;
    const startGeneration = generation;
    const superseded = (): boolean => generation !== startGeneration || stopping;
    const { topic, partition } = batch;
    // A partition kept over a rebalance continues after what the pipeline holds (the consumer seeks
    // there); a fetch from before that point hands on only what is new.
    const next = tracker.nextOffset(topic, partition);
    const messages = next === undefined || (batch.messages[0]?.offset ?? next) >= next ? batch.messages : batch.messages.filter((m) => m.offset >= next);
    if (messages.length === 0) {
      const last = batch.messages[batch.messages.length - 1];
      if (last !== undefined) batch.resolveOffset(last.offset);
      return;
    }
    for (let i = 0; i < messages.length; i += CHUNK_MESSAGES) {
      if (!(await waitForRoom(batch, startGeneration))) return;
      if (!batch.isActive() || superseded()) return;
      const chunk = messages.slice(i, i + CHUNK_MESSAGES);
      const first = chunk[0];
      const last = chunk[chunk.length - 1];
      if (first === undefined || last === undefined) continue;
      const records: SinkRecord[] = [];
      const poison: PoisonRecord[] = [];
      let bytes = 0;
      for (const message of chunk) {
        bytes += message.value?.length ?? 0;
        const decoded = decodeMessage(topic, partition, message.offset, message.value, config.records);
        for (const r of decoded.records) records.push(r);
        for (const p of decoded.poison) poison.push(p);
      }
      if (poison.length > 0) {
        // Written before the offsets are handed on: acknowledged offsets never hide a lost record.
        // Heartbeats go on while it writes (retries included): the member keeps its partitions.
        const heartbeats = setInterval(() => {
          batch.heartbeat().catch(() => undefined);
        }, config.kafka.heartbeatIntervalMs);
        try {
          await deadLetters.send(poison, generationAbort.signal);
        } catch (error) {
          if (superseded()) return;
          throw error;
        } finally {
          clearInterval(heartbeats);
        }
        for (const p of poison) metrics.deadLetters.inc({ reason: p.reason, sink: '' });
        errorLog.warn(`poison:${poison[0]?.reason ?? ''}`, { topic, partition, offset: poison[0]?.offset, count: poison.length, detail: poison[0]?.detail }, 'records that cannot be delivered sent to the dead letter');
      }
      if (superseded()) return;
      const endOffset = last.offset + 1;
      metrics.messagesIn.inc(chunk.length);
      metrics.recordsIn.inc(records.length);
      metrics.bytesIn.inc(bytes);
      // Held bytes count what a message costs in memory besides its value (kafkajs' message object,
      // ours): with one record per message that doubles it, and fetching must pause sooner.
      tracker.ingest(topic, partition, first.offset, endOffset, bytes + chunk.length * MESSAGE_OVERHEAD_BYTES, batch.highWatermark);
      for (const runner of runners) runner.append(topic, partition, first.offset, endOffset, records, batch.highWatermark);
      batch.resolveOffset(last.offset);
    }
    tracker.noteHighWatermark(topic, partition, batch.highWatermark);
  }

  let stopping = false;
  const consumer = new LogConsumer(
    kafka,
    {
      groupId: config.kafka.groupId,
      topics: config.kafka.topics,
      topicPattern: config.kafka.topicPattern === undefined ? undefined : new RegExp(config.kafka.topicPattern),
      excludeTopics: [config.deadLetter.topic],
      topicRefreshIntervalMs: config.kafka.topicRefreshIntervalMs,
      fromBeginning: config.kafka.fromBeginning,
      sessionTimeoutMs: config.kafka.sessionTimeoutMs,
      rebalanceTimeoutMs: config.kafka.rebalanceTimeoutMs,
      heartbeatIntervalMs: config.kafka.heartbeatIntervalMs,
      maxBytesPerPartition: config.kafka.maxBytesPerPartition,
      maxBytes: config.kafka.maxFetchBytes,
      maxWaitTimeMs: config.kafka.maxWaitTimeMs,
    },
    {
      onBatch: handleBatch,
      onRebalanceStart: rebalanceStart,
      onAssignment: assign,
      onReset: reset,
    },
    logger.child({ component: 'consumer' }),
  );
  let assigned = 0;
  let started = false;

  // Shutdown: stop fetching → flush every sink → commit → leave the group → close the rest.
  shutdown
    .register('stop fetching', () => {
      stopping = true;
      consumer.pauseAll();
    })
    .register('flush sinks', async (signal) => {
      const aborted = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      for (const runner of runners) runner.sealAll();
      await Promise.race([Promise.all(runners.map((r) => r.drained())), aborted]);
    })
    .register('commit', async () => {
      commits.stop();
      await commits.commitNow(tracker.pendingCommits());
    })
    .register('leave group', () => consumer.close())
    .register('close sinks', async () => {
      await Promise.all(runners.map((r) => r.close()));
      await Promise.all(sinks.map((s) => s.close()));
      await deadLetters.close();
      await topicIds.close();
    });

  const ops = await startOpsServer({
    host: config.ops.host,
    port: config.ops.port,
    registry,
    logger,
    readiness: {
      consumer: () => started && !stopping,
      ...Object.fromEntries(
        sinks.map((sink) => [
          `sink:${sink.name}`,
          async () => {
            try {
              await sink.healthcheck(AbortSignal.timeout(5_000));
              return true;
            } catch (error) {
              errorLog.warn(`health:${sink.name}`, { sink: sink.name, err: error }, `sink ${sink.name} health check failed: ${describeError(error)}`);
              return false;
            }
          },
        ]),
      ),
    },
  });
  shutdown.register('stop ops server', () => ops.close());

  const startSignal = AbortSignal.timeout(60_000);
  await Promise.all(sinks.map((s) => s.start(startSignal)));
  await deadLetters.connect();
  await consumer.start();
  commits.start();
  started = true;
  logger.info({ groupId: config.kafka.groupId, topics: consumer.topics, sinks: config.sinks.map((s) => `${s.name}:${s.type}`), assigned }, 'aggregator started');
  return { opsUrl: ops.url, registry };
}

/** Commits acknowledged offsets every `intervalMs`, and early once `threshold` messages wait. One commit at a time. */
class CommitLoop {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private committing = false;

  constructor(
    private readonly intervalMs: number,
    private readonly threshold: number,
    private readonly tracker: OffsetTracker,
    private readonly metrics: AggregatorMetrics,
    private readonly logger: Logger,
    private readonly commit: (offsets: { topic: string; partition: number; offset: number }[]) => Promise<void>,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      void this.commitNow(this.tracker.pendingCommits());
    }, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  maybeCommitEarly(): void {
    if (this.threshold > 0 && !this.committing && this.tracker.uncommittedMessages() >= this.threshold) void this.commitNow(this.tracker.pendingCommits());
  }

  /** Commits the given offsets after any commit in flight; failures are logged and counted, never thrown. */
  commitNow(offsets: { topic: string; partition: number; offset: number }[]): Promise<void> {
    if (offsets.length === 0) return this.inFlight;
    this.inFlight = this.inFlight.then(async () => {
      this.committing = true;
      try {
        await this.commit(offsets);
        for (const o of offsets) this.tracker.markCommitted(o.topic, o.partition, o.offset);
        this.metrics.commits.inc();
      } catch (error) {
        // A rebalance or an unavailable coordinator: the offsets are committed later or re-read.
        this.metrics.commitFailures.inc();
        this.logger.warn({ err: error, partitions: offsets.length }, `offset commit failed: ${describeError(error)}`);
      } finally {
        this.committing = false;
      }
    });
    return this.inFlight;
  }
}

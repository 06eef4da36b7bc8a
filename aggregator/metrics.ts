/**
 * The aggregator's Prometheus metrics. Label values come from fixed sets (sink names from the config,
 * dead-letter reasons, sink outcomes); the only open-ended labels are topic and partition on the lag
 * gauge, removed when the partition is no longer owned.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { PartitionProgress } from './offset-tracker.js';
import { DeadLetterReason } from './sink.js';

export interface AggregatorMetricSources {
  progress: () => PartitionProgress[];
  heldBytes: () => number;
  /** The consumer group generation this member last joined (undefined before it joined). */
  generation?: () => number | undefined;
  /** Configured sink names: their series start at 0, so the first event shows in rate() and increase(). */
  sinkNames: readonly string[];
}

export class AggregatorMetrics {
  readonly messagesIn: Counter;
  readonly recordsIn: Counter;
  readonly bytesIn: Counter;
  readonly recordsOut: Counter<'sink'>;
  readonly bytesOut: Counter<'sink'>;
  readonly batchRecords: Histogram<'sink'>;
  readonly batchBytes: Histogram<'sink'>;
  readonly flushSeconds: Histogram<'sink'>;
  readonly retries: Counter<'sink'>;
  readonly replaysDropped: Counter<'sink'>;
  readonly s3ObjectConflicts: Counter<'sink' | 'resolution'>;
  readonly deadLetterFallbacks: Counter;
  readonly sinkErrors: Counter<'sink' | 'result'>;
  readonly deadLetters: Counter<'reason' | 'sink'>;
  readonly endToEndDelay: Histogram<'sink'>;
  readonly commits: Counter;
  readonly commitFailures: Counter;
  readonly rebalances: Counter;
  readonly partitionsKept: { inc(value?: number): void };
  readonly partitionsRevoked: { inc(value?: number): void };
  readonly fetchPausedSeconds: Counter;

  constructor(registry: Registry, sources: AggregatorMetricSources) {
    const registers = [registry];
    this.messagesIn = new Counter({ name: 'logship_aggregator_messages_in_total', help: 'Kafka messages fetched and handed to the pipeline.', registers });
    this.recordsIn = new Counter({ name: 'logship_aggregator_records_in_total', help: 'Records decoded from Kafka messages (poison excluded).', registers });
    this.bytesIn = new Counter({ name: 'logship_aggregator_bytes_in_total', help: 'Bytes of Kafka message values fetched.', registers });
    this.recordsOut = new Counter({ name: 'logship_aggregator_sink_records_total', help: 'Records written by each sink.', labelNames: ['sink'], registers });
    this.bytesOut = new Counter({ name: 'logship_aggregator_sink_bytes_total', help: 'Record bytes written by each sink (before compression).', labelNames: ['sink'], registers });
    this.batchRecords = new Histogram({
      name: 'logship_aggregator_sink_batch_records',
      help: 'Records per batch sent to a sink.',
      labelNames: ['sink'],
      buckets: [1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000],
      registers,
    });
    this.batchBytes = new Histogram({
      name: 'logship_aggregator_sink_batch_bytes',
      help: 'Bytes per batch sent to a sink.',
      labelNames: ['sink'],
      buckets: [1 << 10, 16 << 10, 128 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20],
      registers,
    });
    this.flushSeconds = new Histogram({
      name: 'logship_aggregator_sink_flush_seconds',
      help: 'Time to write one batch to a sink, retries included.',
      labelNames: ['sink'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.retries = new Counter({ name: 'logship_aggregator_sink_retries_total', help: 'Sends retried after a retryable failure.', labelNames: ['sink'], registers });
    this.deadLetterFallbacks = new Counter({
      name: 'logship_aggregator_dead_letter_fallbacks_total',
      help: 'Dead letters Kafka refused for good (too large, not authorized), written to the S3 fallback prefix instead.',
      registers,
    });
    this.replaysDropped = new Counter({
      name: 'logship_aggregator_replays_dropped_total',
      help: 'Records not written because the sink already wrote the same origin (file, stream) at that byte offset or later: a producer sent them again.',
      labelNames: ['sink'],
      registers,
    });
    this.s3ObjectConflicts = new Counter({
      name: 'logship_aggregator_s3_object_conflicts_total',
      help: 'S3 object writes that found an object under their key, by resolution: resumed (its records skipped, the rest written after it: a replay, or a paused member\'s late write), earlier_incarnation (kept; written under the alternate key), unmarked (an older logship\'s object, replaced).',
      labelNames: ['sink', 'resolution'],
      registers,
    });
    this.sinkErrors = new Counter({
      name: 'logship_aggregator_sink_errors_total',
      help: 'Failed sends by outcome: retryable (tried again) or rejected (the batch went to the dead letter).',
      labelNames: ['sink', 'result'],
      registers,
    });
    this.deadLetters = new Counter({
      name: 'logship_aggregator_dead_letters_total',
      help: 'Records written to the dead-letter topic, by reason and sink ("" for poison that reached no sink).',
      labelNames: ['reason', 'sink'],
      registers,
    });
    this.endToEndDelay = new Histogram({
      name: 'logship_aggregator_end_to_end_delay_seconds',
      help: 'Time from a record\'s own @timestamp to its delivery by a sink; observed for the first record of each Kafka message (the agent writes a message\'s records together).',
      labelNames: ['sink'],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600],
      registers,
    });
    this.commits = new Counter({ name: 'logship_aggregator_commits_total', help: 'Offset commits that succeeded.', registers });
    this.commitFailures = new Counter({ name: 'logship_aggregator_commit_failures_total', help: 'Offset commits that failed (rebalance, broker unavailable).', registers });
    this.rebalances = new Counter({
      name: 'logship_aggregator_rebalances_total',
      help: 'Consumer group joins of this member: one per rebalance of the group it went through, its first join included.',
      registers,
    });
    const rebalancePartitions = new Counter({
      name: 'logship_aggregator_rebalance_partitions_total',
      help: 'Partitions at the end of a rebalance: kept (this member still owns them, with their batches) or revoked (moved to another member, batches dropped). After a crash or a lost membership nothing is counted: everything restarts from the committed offsets.',
      labelNames: ['outcome'],
      registers,
    });
    this.partitionsKept = rebalancePartitions.labels({ outcome: 'kept' });
    this.partitionsRevoked = rebalancePartitions.labels({ outcome: 'revoked' });
    this.partitionsKept.inc(0);
    this.partitionsRevoked.inc(0);
    this.fetchPausedSeconds = new Counter({ name: 'logship_aggregator_fetch_paused_seconds_total', help: 'Time fetching waited because the bytes held in the pipeline reached maxInFlightBytes.', registers });

    for (const sink of sources.sinkNames) {
      for (const counter of [this.recordsOut, this.bytesOut, this.retries, this.replaysDropped]) counter.inc({ sink }, 0);
      for (const result of ['retryable', 'rejected']) this.sinkErrors.inc({ sink, result }, 0);
      this.deadLetters.inc({ reason: DeadLetterReason.REJECTED, sink }, 0);
    }
    for (const reason of [DeadLetterReason.INVALID_JSON, DeadLetterReason.MISSING_FIELD, DeadLetterReason.TOO_LARGE]) this.deadLetters.inc({ reason, sink: '' }, 0);

    new Gauge({
      name: 'logship_aggregator_held_bytes',
      help: 'Bytes of fetched messages not yet written by every sink.',
      registers,
      collect() {
        this.set(sources.heldBytes());
      },
    });
    new Gauge({
      name: 'logship_aggregator_group_generation',
      help: 'The consumer group generation this member last joined: it rises by one per rebalance of the group.',
      registers,
      collect() {
        const generation = sources.generation?.();
        if (generation !== undefined) this.set(generation);
      },
    });
    new Gauge({
      name: 'logship_aggregator_assigned_partitions',
      help: 'Topic-partitions this member consumes.',
      registers,
      collect() {
        this.set(sources.progress().length);
      },
    });
    new Gauge({
      name: 'logship_aggregator_consumer_lag',
      help: 'Messages per topic-partition between the high watermark and the committed offset.',
      labelNames: ['topic', 'partition'],
      registers,
      collect() {
        this.reset();
        for (const p of sources.progress()) this.set({ topic: p.topic, partition: String(p.partition) }, Math.max(0, p.highWatermark - p.committed));
      },
    });
  }
}

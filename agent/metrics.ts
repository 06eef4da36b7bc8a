/**
 * The agent's Prometheus metrics. The hot path bumps plain counters (TailCounters); they are turned
 * into prom-client metrics at scrape time, so shipping a line costs no metric-library call.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { SEND_ERROR_REASONS, type ProducerStats, type StalledTopicInfo } from './kafka-producer.js';
import { ERROR_REASONS, LOSS_REASONS, type ErrorReason } from './tail-manager.js';
import type { TailCounters } from './tailed-file.js';

export interface AgentMetricSources {
  counters: TailCounters;
  trackedFiles: () => number;
  openFiles: () => number;
  unshippedBytes: () => number;
  bufferedBytes: () => number;
  lastCheckpointMs: () => number | undefined;
  producer: () => ProducerStats;
  /** Topics whose messages are held aside because the brokers refuse them. */
  stalledTopics: () => StalledTopicInfo[];
  /** Checkpoints that would have moved backwards (a bug, logged). */
  checkpointRegressions: () => number;
}

export class AgentMetrics {
  readonly errors: Counter<'reason'>;
  readonly backpressureSeconds: Counter;
  readonly lostBytes: Counter<'reason'>;
  /** Idle reclaims by step: `release` (buffers and heap), `page_out` (node's pages), `page_out_failed`. */
  readonly idleSteps: Counter<'step'>;
  /** Resident bytes the page-outs gave back (RSS before minus after). */
  readonly pagedOutBytes: Counter;

  constructor(registry: Registry, sources: AgentMetricSources) {
    const counters = sources.counters;
    /** A counter whose value is read from a cumulative source at scrape time. */
    const mirrored = (name: string, help: string, read: () => number): void => {
      let last = 0;
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          const now = read();
          if (now > last) this.inc(now - last);
          last = now;
        },
      });
    };
    mirrored('logship_agent_lines_read_total', 'Physical lines read from log files.', () => counters.linesRead);
    mirrored('logship_agent_bytes_read_total', 'Bytes read from log files.', () => counters.bytesRead);
    mirrored('logship_agent_records_produced_total', 'Records handed to the Kafka producer.', () => counters.recordsProduced);
    mirrored('logship_agent_records_excluded_total', 'Records dropped because their pod or container is excluded by annotation.', () => counters.recordsExcluded);
    mirrored('logship_agent_kafka_messages_acked_total', 'Kafka messages (each holding one or more records) acknowledged by the brokers.', () => sources.producer().messagesAcked);
    mirrored('logship_agent_kafka_bytes_acked_total', 'Record bytes acknowledged by the brokers (before compression).', () => sources.producer().bytesAcked);

    const last = { hit: 0, miss: 0, fallback: 0 };
    new Counter({
      name: 'logship_agent_metadata_lookups_total',
      help: 'Records by where their Kubernetes metadata came from: hit (pod watcher), miss (pod unknown to an in-sync watcher: path only), fallback (API unreachable or enrichment off: path only).',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        const now = { hit: counters.metadataHits, miss: counters.metadataMisses, fallback: counters.metadataFallbacks };
        for (const result of ['hit', 'miss', 'fallback'] as const) {
          this.inc({ result }, now[result] - last[result]);
          last[result] = now[result];
        }
      },
    });

    // Reasons counted on the hot path as plain numbers are added at scrape time; the others are
    // incremented where they happen (see `errors`).
    const fromCounters: [ErrorReason, () => number][] = [
      ['unparsed', () => counters.unparsed],
      ['truncated', () => counters.truncated + counters.recordsTruncatedToFit + sources.producer().recordsTruncated],
      ['invalid_utf8', () => counters.invalidUtf8],
      ['kafka_send', () => sources.producer().sendFailures],
    ];
    const lastSeen = new Map<ErrorReason, number>();
    this.errors = new Counter({
      name: 'logship_agent_errors_total',
      help: 'Problems by reason (a fixed set).',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        for (const [reason, read] of fromCounters) {
          const now = read();
          const delta = now - (lastSeen.get(reason) ?? 0);
          if (delta > 0) this.inc({ reason }, delta);
          lastSeen.set(reason, now);
        }
      },
    });
    for (const reason of ERROR_REASONS) this.errors.inc({ reason }, 0);
    new Gauge({
      name: 'logship_agent_files_tracked',
      help: 'Log files followed (open, waiting for a descriptor, or draining after rotation).',
      registers: [registry],
      collect() {
        this.set(sources.trackedFiles());
      },
    });
    new Gauge({ name: 'logship_agent_files_open', help: 'File descriptors held.', registers: [registry], collect() { this.set(sources.openFiles()); } });
    new Gauge({
      name: 'logship_agent_unshipped_bytes',
      help: 'Bytes written to tracked log files and not yet acknowledged by Kafka (sum over files).',
      registers: [registry],
      collect() {
        this.set(sources.unshippedBytes());
      },
    });
    new Gauge({ name: 'logship_agent_producer_buffered_bytes', help: 'Bytes queued or in flight to Kafka.', registers: [registry], collect() { this.set(sources.bufferedBytes()); } });
    new Gauge({
      name: 'logship_agent_checkpoint_age_seconds',
      help: 'Seconds since checkpoints were last written durably.',
      registers: [registry],
      collect() {
        const last = sources.lastCheckpointMs();
        this.set(last === undefined ? 0 : (Date.now() - last) / 1000);
      },
    });
    this.lostBytes = new Counter({
      name: 'logship_agent_lost_bytes_total',
      help: 'Bytes that existed in a log file and could never be read: deleted_before_read (the file was pruned or its pod removed before the agent read it), truncated (copytruncate with no copy to read), unreadable (a corrupt .gz).',
      labelNames: ['reason'],
      registers: [registry],
    });
    for (const reason of LOSS_REASONS) this.lostBytes.inc({ reason }, 0);
    this.backpressureSeconds = new Counter({ name: 'logship_agent_backpressure_seconds_total', help: 'Time reading waited for the producer to drain.', registers: [registry] });
    this.idleSteps = new Counter({
      name: 'logship_agent_idle_reclaims_total',
      help: 'Memory given back in quiet spells, by step: release (pooled buffers, heap collection), page_out (pages of node and its libraries), page_out_failed (page-out unavailable: it is then off).',
      labelNames: ['step'],
      registers: [registry],
    });
    for (const step of ['release', 'page_out', 'page_out_failed']) this.idleSteps.inc({ step }, 0);
    this.pagedOutBytes = new Counter({ name: 'logship_agent_idle_paged_out_bytes_total', help: 'Resident memory the page-outs gave back (RSS before minus after).', registers: [registry] });

    // ---- Kafka topics that refuse messages, and records reshaped to fit ------------------------
    const sendErrorsSeen = new Map<string, number>();
    const sendErrors = new Counter({
      name: 'logship_agent_kafka_send_errors_total',
      help: 'Failed Kafka sends by reason: unknown_topic (missing, or no leader), not_authorized, message_too_large (split or cut, then sent again), other (connection, timeout, ...).',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        const stats = sources.producer().sendErrors;
        for (const reason of SEND_ERROR_REASONS) {
          const delta = stats[reason] - (sendErrorsSeen.get(reason) ?? 0);
          if (delta > 0) this.inc({ reason }, delta);
          sendErrorsSeen.set(reason, stats[reason]);
        }
      },
    });
    for (const reason of SEND_ERROR_REASONS) sendErrors.inc({ reason }, 0);
    new Gauge({
      name: 'logship_agent_stalled_topics',
      help: 'Topics the brokers refuse messages for: their messages are held and their files paused while other topics flow.',
      registers: [registry],
      collect() {
        this.set(sources.stalledTopics().length);
      },
    });
    new Gauge({
      name: 'logship_agent_topic_stalled',
      help: 'One series per stalled topic (value 1), labelled with the topic and the reason; gone once the topic takes messages again.',
      labelNames: ['topic', 'reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const stall of sources.stalledTopics()) this.set({ topic: stall.topic, reason: stall.reason }, 1);
      },
    });
    new Gauge({
      name: 'logship_agent_stalled_bytes',
      help: 'Bytes of messages held for stalled topics (outside the producer buffer bound).',
      registers: [registry],
      collect() {
        this.set(sources.stalledTopics().reduce((sum, s) => sum + s.bytes, 0));
      },
    });
    mirrored('logship_agent_kafka_messages_split_total', 'Kafka messages split at a record boundary because the broker found them too large.', () => sources.producer().messagesSplit);
    mirrored('logship_agent_records_cut_to_fit_broker_total', 'Records whose message was cut (flagged truncated) because the broker refused the record as too large.', () => sources.producer().recordsTruncated);
    mirrored('logship_agent_records_dropped_too_large_total', 'Records the broker refused even with an empty message: dropped and logged.', () => sources.producer().recordsDropped);
    mirrored('logship_agent_checkpoint_regressions_total', 'Checkpoints that would have moved backwards (a bug: logged, the larger offset kept).', sources.checkpointRegressions);
  }
}

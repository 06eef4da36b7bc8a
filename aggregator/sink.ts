/**
 * The one contract every sink implements. A sink turns a batch into a write and says how it went;
 * batching, retries with backoff, concurrency, dead letters, metrics and offset acknowledgement live
 * in the sink runner (`sink-runner.ts`), never inside a sink.
 */
import type { SinkError } from '../shared/errors.js';

/** The fields of a record the aggregator itself needs (partitioning, index names, `_id`, routing). */
export interface RecordFields {
  /** `@timestamp` in milliseconds since the epoch (UTC). */
  readonly timeMs: number;
  readonly eventId: string;
  readonly cluster: string;
  readonly namespace: string;
  readonly pod: string;
  readonly container: string;
  /**
   * Where the record was read (file and stream, from an agent's `event_id`), for replay detection;
   * undefined for records of other producers. See replay-filter.ts.
   */
  readonly origin?: string;
  /** The record's byte offset in its origin (meaningful only with `origin`). */
  readonly originOffset?: number;
}

/**
 * One log record as it came out of Kafka: its JSON line, untouched, and where it sits. The line is
 * bytes `[start, end)` of its message's value, which all the message's records share: a record held
 * in a batch costs two numbers instead of a Buffer view of its own (about 100 bytes of heap per
 * record, with some 140,000 records in flight at the default `maxInFlightBytes`).
 */
export interface SinkRecord {
  readonly topic: string;
  readonly partition: number;
  /** Offset of the Kafka message holding the record (a message holds one or more NDJSON records). */
  readonly offset: number;
  /** Position of the record within its message. */
  readonly index: number;
  /** The Kafka message's value the record's line lies in. */
  readonly value: Buffer;
  /** The record's JSON, one line without the trailing newline, is `value[start, end)`; written to sinks as it came. */
  readonly start: number;
  readonly end: number;
  readonly fields: RecordFields;
}

/** A record's line (a view into its message's value, not a copy). */
export function lineOf(record: SinkRecord): Buffer {
  return record.value.subarray(record.start, record.end);
}

/** A record's line length in bytes. */
export function lineBytes(record: SinkRecord): number {
  return record.end - record.start;
}

/** Copies a record's line into `target` at `at`; returns the bytes copied. */
export function copyLine(record: SinkRecord, target: Buffer, at: number): number {
  return record.value.copy(target, at, record.start, record.end);
}

/** A record whose line is a Buffer of its own (tests, single records). */
export function sinkRecord(where: { topic: string; partition: number; offset: number; index: number }, line: Buffer, fields: RecordFields): SinkRecord {
  return { ...where, value: line, start: 0, end: line.length, fields };
}

/**
 * What a sink is asked to write: the records routed to it from one topic-partition, covering the
 * message offsets `[firstOffset, endOffset)`. Offsets in that range whose records were routed
 * elsewhere (or dead-lettered before reaching the sink) still count as covered: once the send is
 * delivered, the whole range is acknowledged for this sink. A batch may hold no records at all.
 */
export interface Batch {
  readonly topic: string;
  readonly partition: number;
  readonly firstOffset: number;
  readonly endOffset: number;
  readonly records: readonly SinkRecord[];
  /** Sum of `line.length` over the records. */
  readonly bytes: number;
  /** The partition's high watermark when its messages were fetched (where known). */
  readonly highWatermark?: number;
}

/** A fixed set of reasons a record goes to the dead-letter destination; also a metric label. */
export const DeadLetterReason = {
  /** The Kafka message value, or one of its lines, is not a JSON object. */
  INVALID_JSON: 'invalid_json',
  /** The record lacks a field the aggregator needs (`@timestamp`, `event_id`, `kubernetes.namespace`…). */
  MISSING_FIELD: 'missing_field',
  /** The record is larger than `maxRecordBytes`. */
  TOO_LARGE: 'too_large',
  /** The sink refused the record for good (an Elasticsearch mapping conflict, a 4xx item). */
  REJECTED: 'rejected',
} as const;

export type DeadLetterReason = (typeof DeadLetterReason)[keyof typeof DeadLetterReason];

export interface RejectedRecord {
  readonly record: SinkRecord;
  readonly reason: DeadLetterReason;
  /** What the sink said, e.g. Elasticsearch's item error type and reason. No credentials. */
  readonly detail: string;
}

export type SendResult =
  /** Written durably. `rejected` records were refused for good and go to the dead letter. */
  | { readonly status: 'delivered'; readonly rejected?: readonly RejectedRecord[]; readonly retried?: number; readonly replaysDropped?: number }
  /**
   * Nothing, or not everything, was written, and trying again can succeed. `pending` names the
   * records still to write (the rest were written); absent means the whole batch. The runner waits
   * (at least `retryAfterMs`) and sends again a batch with the same offsets and the pending records.
   */
  | { readonly status: 'retryable'; readonly error: SinkError; readonly retryAfterMs?: number; readonly pending?: readonly SinkRecord[]; readonly rejected?: readonly RejectedRecord[] }
  /** The whole batch was refused for good: every record goes to the dead letter with this error. */
  | { readonly status: 'rejected'; readonly error: SinkError };

export interface Sink {
  /** The sink's configured name: metric label, log field, dead-letter context. */
  readonly name: string;
  /** Prepare the destination (install an index template, check the bucket); called once at start. */
  start(signal: AbortSignal): Promise<void>;
  /**
   * Write one batch. The runner calls it for one topic-partition at a time, in offset order, never
   * with two sends of the same partition in flight. Must honour `signal` (abort in-flight requests).
   * Throwing is treated as `retryable` when `isRetriable(error)`, else as `rejected`.
   */
  send(batch: Batch, signal: AbortSignal): Promise<SendResult>;
  /**
   * The partition is no longer owned (revoked, or its pipeline state reset after a rebalance): drop
   * anything cached about it. The next send for it starts from the committed offset.
   */
  release(topic: string, partition: number): void;
  /** Cheap liveness check of the destination, for /readyz. */
  healthcheck(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/**
 * The S3 sink: each batch of one topic-partition becomes one gzip NDJSON object per Hive partition
 * (cluster, namespace, UTC day and hour of the records' own timestamps), under deterministic keys
 * (see s3-layout.ts). Lines are written as they came out of Kafka, never re-serialised.
 *
 * Replays without duplicates. Kafka offsets are committed only once every sink acknowledged, so after
 * a crash or rebalance a partition is replayed from a committed offset that can lie before data this
 * sink already wrote (another sink was slower). Keys come from the first offset of each group, so the
 * same records under a different batch boundary would land under different keys, twice. To prevent
 * that, the sink keeps a durable high-water marker per topic-partition, `<statePrefix>/<topic>+<partition>.json`
 * = `{"version":1,"endOffset":N}`: every record below N is written. It is written after all objects of
 * a batch; a batch below it is acknowledged without writing, a batch straddling it writes only the
 * records at or above it.
 *
 * Why this is crash-consistent: the runner never has two sends of one partition in flight, and a batch
 * is acknowledged only after its marker is written, so at any moment at most one batch's objects are
 * in S3 without a marker covering them, and that batch started at the marker M (or later, past only
 * offsets with no records for this sink). If the process dies between those objects and the marker,
 * the replay writes again from M: in each group, the first record at or after M is the same record as
 * before, so each object of the unmarked batch is rewritten under its own key, whatever the new batch
 * boundaries are; what it held beyond a shorter new batch moves to the next batch's new keys. Nothing
 * is written twice and nothing is skipped. If the marker itself cannot be written, the whole batch is
 * retried (rewriting the same keys) rather than acknowledged, which would break that argument.
 *
 * The marker is a cache-backed read: read once per partition on its first send (or after `release`),
 * then kept in a bounded map; an entry dropped from the map is read again from S3, which holds the truth.
 */
import { finished } from 'node:stream/promises';
import { createGzip, type Gzip } from 'node:zlib';
import { GetObjectCommand, HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BufferPool } from '../../shared/buffer-pool.js';
import { AbortError, describeError, ErrorCode, isRetriable, SinkError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { createS3Client } from '../../shared/s3.js';
import { Field } from '../../shared/record.js';
import { DeadLetterReason, lineBytes, lineOf, type Batch, type RejectedRecord, type SendResult, type Sink, type SinkRecord } from '../sink.js';
import { defaultStatePrefix, hourIndex, objectKey, partitionValues, stateKey, type PartitionValues } from '../s3-layout.js';
import type { S3SinkOptions } from './s3-options.js';

/** Partitions whose marker is cached at most; beyond it the least recently used is read again when needed. */
const MAX_CACHED_MARKERS = 16_384;
const STATE_VERSION = 1;
const NEWLINE = 0x0a;
const NEWLINE_BYTES = Buffer.from([NEWLINE]);
/**
 * An object's NDJSON is handed to gzip in slices of this size, never built whole: a batch in flight
 * then costs its records plus a slice, not its records twice.
 */
const NDJSON_SLICE_BYTES = 1024 * 1024;
/** Output chunk of the gzip stream: fewer hand-offs between the zlib thread and JavaScript. */
const GZIP_CHUNK_BYTES = 256 * 1024;
/**
 * NDJSON slices, reused once gzip consumed them: a fresh 1 MiB buffer is fresh memory, whose first
 * touch costs a page fault per 4 KiB (~0.7 ms per MiB here, ten times the copy into it). A few are kept
 * for the objects being compressed at once.
 */
const ndjsonSlicePool = new BufferPool({ minBytes: NDJSON_SLICE_BYTES, maxFreeBytes: 4 * NDJSON_SLICE_BYTES });


export interface S3SinkDeps {
  logger: Logger;
}

export function createS3NdjsonSink(name: string, options: S3SinkOptions, deps: S3SinkDeps): Sink {
  return new S3NdjsonSink(name, options, deps.logger.child({ sink: name }));
}

/** Records of one Hive partition within a batch, and the key of their object. */
interface RecordGroup {
  readonly key: string;
  readonly records: SinkRecord[];
}

class S3NdjsonSink implements Sink {
  private readonly client: S3Client;
  private readonly statePrefix: string;
  /** High-water marks by partition (`topic\u0000partition`), in least-recently-used order. */
  private readonly markers = new Map<string, number>();

  constructor(
    readonly name: string,
    private readonly options: S3SinkOptions,
    private readonly logger: Logger,
  ) {
    this.client = createS3Client(options.connection, `${name}.connection`);
    this.statePrefix = options.statePrefix ?? defaultStatePrefix(options.prefix);
  }

  async start(signal: AbortSignal): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }), { abortSignal: signal });
    } catch (error) {
      throw bucketError(this.options.bucket, error);
    }
    this.logger.info({ bucket: this.options.bucket, prefix: this.options.prefix, statePrefix: this.statePrefix }, 'S3 sink ready');
  }

  async healthcheck(signal: AbortSignal): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }), { abortSignal: signal });
    } catch (error) {
      throw bucketError(this.options.bucket, error);
    }
  }

  async send(batch: Batch, signal: AbortSignal): Promise<SendResult> {
    const { topic, partition } = batch;
    let marker: number;
    try {
      marker = await this.marker(topic, partition, signal);
    } catch (error) {
      return retryable(error, signal, `reading the state of ${topic}/${partition}`);
    }
    if (batch.endOffset <= marker) {
      this.logger.debug({ topic, partition, firstOffset: batch.firstOffset, endOffset: batch.endOffset, marker }, 'batch already written before a replay; acknowledged');
      return { status: 'delivered' };
    }
    const records = inOffsetOrder(batch.firstOffset < marker ? batch.records.filter((r) => r.offset >= marker) : batch.records);
    const { groups, rejected } = this.group(records, topic, partition);
    const delivered: SendResult = rejected.length > 0 ? { status: 'delivered', rejected } : { status: 'delivered' };
    // Nothing to write: the marker stays where it is. That is safe: the offsets skipped hold no record for
    // this sink, so a replay from the marker finds the same first records (see the comment at the top).
    if (groups.length === 0) return delivered;

    const failed = await this.writeGroups(groups, signal);
    if (failed.groups.length > 0) {
      const pendingSet = new Set(failed.groups.flatMap((g) => g.records));
      const result = retryable(failed.error, signal, `writing ${failed.groups.length} of ${groups.length} objects of ${topic}/${partition}`);
      if (signal.aborted) return result;
      const pending = records.filter((r) => pendingSet.has(r));
      return rejected.length > 0 ? { ...result, pending, rejected } : { ...result, pending };
    }
    try {
      await this.writeMarker(topic, partition, batch.endOffset, signal);
    } catch (error) {
      // The whole batch again (same keys), so that no batch is acknowledged without its marker.
      return retryable(error, signal, `writing the state of ${topic}/${partition}`);
    }
    this.logger.debug(
      { topic, partition, firstOffset: batch.firstOffset, endOffset: batch.endOffset, records: records.length, objects: groups.length },
      'batch written',
    );
    return delivered;
  }

  release(topic: string, partition: number): void {
    this.markers.delete(markerId(topic, partition));
  }

  async close(): Promise<void> {
    this.markers.clear();
    this.client.destroy();
  }

  /** Splits records by Hive partition; a record whose time cannot name a day is refused. */
  private group(records: readonly SinkRecord[], topic: string, partition: number): { groups: RecordGroup[]; rejected: RejectedRecord[] } {
    const byPartition = new Map<string, RecordGroup>();
    const rejected: RejectedRecord[] = [];
    // Neighbouring records nearly always share a partition: the last group found is tried first.
    let last: { group: RecordGroup; cluster: string; namespace: string; hour: number } | undefined;
    for (const record of records) {
      const { cluster, namespace, timeMs } = record.fields;
      const hour = hourIndex(timeMs);
      let group: RecordGroup | undefined;
      if (last !== undefined && last.hour === hour && last.cluster === cluster && last.namespace === namespace) {
        group = last.group;
      } else {
        const id = `${cluster}\u0000${namespace}\u0000${hour}`;
        group = byPartition.get(id);
        if (group === undefined) {
          const values: PartitionValues | undefined = partitionValues(record.fields);
          if (values === undefined) {
            rejected.push({ record, reason: DeadLetterReason.REJECTED, detail: `timestamp ${recordTimestamp(record)} is outside the years 0000-9999` });
            continue;
          }
          // The key names the group's first record: deterministic for a replay from the same offset.
          group = { key: objectKey(this.options.prefix, values, topic, partition, record.offset), records: [] };
          byPartition.set(id, group);
        }
        last = { group, cluster, namespace, hour };
      }
      group.records.push(record);
    }
    return { groups: [...byPartition.values()], rejected };
  }

  /** Writes the groups, `uploadConcurrency` at a time; returns those not written and the first error. */
  private async writeGroups(groups: readonly RecordGroup[], signal: AbortSignal): Promise<{ groups: RecordGroup[]; error: unknown }> {
    const failed: RecordGroup[] = [];
    let firstError: unknown;
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let group = groups[next++]; group !== undefined; group = groups[next++]) {
        if (signal.aborted) {
          failed.push(group);
          continue;
        }
        try {
          await this.writeObject(group.key, await gzipNdjson(group.records, this.options.gzipLevel), signal);
        } catch (error) {
          failed.push(group);
          firstError ??= error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.uploadConcurrency, groups.length) }, worker));
    return { groups: failed, error: firstError };
  }

  private async writeObject(key: string, body: Buffer, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw new AbortError('S3 write aborted', signal.reason);
    const params = { Bucket: this.options.bucket, Key: key, Body: body, ContentType: 'application/gzip' };
    if (body.length <= this.options.multipartThresholdBytes) {
      await this.client.send(new PutObjectCommand({ ...params, ContentLength: body.length }), { abortSignal: signal });
      return;
    }
    const abortController = new AbortController();
    const abort = (): void => abortController.abort(signal.reason);
    signal.addEventListener('abort', abort, { once: true });
    try {
      const upload = new Upload({
        client: this.client,
        params,
        partSize: this.options.partSizeBytes,
        queueSize: this.options.uploadConcurrency,
        // On failure or abort the upload is aborted, so no invisible parts are left to pay for.
        leavePartsOnError: false,
        abortController,
      });
      await upload.done();
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }

  private async marker(topic: string, partition: number, signal: AbortSignal): Promise<number> {
    const id = markerId(topic, partition);
    const cached = this.markers.get(id);
    const value = cached ?? (await this.readMarker(topic, partition, signal));
    this.remember(id, value);
    return value;
  }

  /** The stored high-water mark; 0 when none was written. */
  private async readMarker(topic: string, partition: number, signal: AbortSignal): Promise<number> {
    const key = stateKey(this.statePrefix, topic, partition);
    let text: string;
    try {
      const object = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }), { abortSignal: signal });
      text = (await object.Body?.transformToString()) ?? '';
    } catch (error) {
      if (isNotFound(error)) return 0;
      throw error;
    }
    const state = parseState(text);
    if (state === undefined) {
      // Only a hand edit can do this (a PUT is atomic). Writing again from the committed offset may
      // duplicate records but never loses any; stalling the partition would lose them all.
      this.logger.error({ topic, partition, key }, 'S3 sink state object is unreadable; writing from the committed offset, which may duplicate records');
      return 0;
    }
    if (state.version > STATE_VERSION) {
      throw new SinkError(`state object ${key} has version ${state.version}, written by a newer logship; this one reads up to ${STATE_VERSION}`, {
        code: ErrorCode.SINK_UNAVAILABLE,
        retriable: true,
      });
    }
    return state.endOffset;
  }

  private async writeMarker(topic: string, partition: number, endOffset: number, signal: AbortSignal): Promise<void> {
    const id = markerId(topic, partition);
    if (endOffset <= (this.markers.get(id) ?? 0)) return; // only ever forward
    const body = JSON.stringify({ version: STATE_VERSION, endOffset });
    await this.client.send(
      new PutObjectCommand({ Bucket: this.options.bucket, Key: stateKey(this.statePrefix, topic, partition), Body: body, ContentType: 'application/json' }),
      { abortSignal: signal },
    );
    this.remember(id, endOffset);
  }

  private remember(id: string, value: number): void {
    this.markers.delete(id);
    this.markers.set(id, value);
    if (this.markers.size > MAX_CACHED_MARKERS) {
      const oldest = this.markers.keys().next();
      if (oldest.done !== true) this.markers.delete(oldest.value);
    }
  }
}

function markerId(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

function parseState(text: string): { version: number; endOffset: number } | undefined {
  try {
    const state = JSON.parse(text) as unknown;
    if (typeof state !== 'object' || state === null) return undefined;
    const { version, endOffset } = state as { version?: unknown; endOffset?: unknown };
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) return undefined;
    if (typeof endOffset !== 'number' || !Number.isSafeInteger(endOffset) || endOffset < 0) return undefined;
    return { version, endOffset };
  } catch {
    return undefined;
  }
}

/** The records in (offset, index) order: as the runner hands them, sorted only if they are not. */
function inOffsetOrder(records: readonly SinkRecord[]): readonly SinkRecord[] {
  for (let i = 1; i < records.length; i++) {
    const a = records[i - 1] as SinkRecord;
    const b = records[i] as SinkRecord;
    if (a.offset > b.offset || (a.offset === b.offset && a.index > b.index)) {
      return [...records].sort((x, y) => x.offset - y.offset || x.index - y.index);
    }
  }
  return records;
}

/**
 * The records as gzip NDJSON (each line followed by `\n`), fed to gzip slice by slice. Each slice is
 * written once gzip consumed the one before (its write callback), so one pooled slice serves the
 * whole object.
 */
export async function gzipNdjson(records: readonly SinkRecord[], level: number): Promise<Buffer> {
  const gzip = createGzip({ level, chunkSize: GZIP_CHUNK_BYTES });
  const compressed: Buffer[] = [];
  let bytes = 0;
  gzip.on('data', (chunk: Buffer) => {
    compressed.push(chunk);
    bytes += chunk.length;
  });
  const done = finished(gzip);
  done.catch(() => undefined); // awaited below; a failed write throws first
  let slice: Buffer | undefined;
  const takeSlice = (size: number): Buffer => (slice = ndjsonSlicePool.take(size));
  try {
    for (const chunk of ndjsonSlices(records, takeSlice)) {
      await write(gzip, chunk);
      if (slice !== undefined && chunk.buffer === slice.buffer) {
        ndjsonSlicePool.give(slice);
        slice = undefined;
      }
    }
    gzip.end();
    await done;
  } catch (error) {
    gzip.destroy();
    throw error;
  }
  if (slice !== undefined) ndjsonSlicePool.give(slice);
  return Buffer.concat(compressed, bytes);
}

/** Writes `chunk` and resolves once the stream consumed it. */
function write(gzip: Gzip, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => gzip.write(chunk, (error) => (error ? reject(error) : resolve())));
}

/**
 * The NDJSON in slices of up to {@link NDJSON_SLICE_BYTES}; a longer line goes on its own. Records that
 * lie next to each other in one message value (its lines, `\n` between them) are copied in one go:
 * a copy per record cost more than the bytes it moved.
 */
export function* ndjsonSlices(records: readonly SinkRecord[], takeSlice: (size: number) => Buffer = (size) => Buffer.allocUnsafe(size)): Generator<Buffer> {
  let remaining = 0;
  for (const record of records) remaining += lineBytes(record) + 1;
  let slice = takeSlice(Math.min(NDJSON_SLICE_BYTES, remaining));
  let at = 0;
  // The run not yet copied: `runValue[runStart, runEnd)`, whole lines with their newlines between.
  let runValue: Buffer | undefined;
  let runStart = 0;
  let runEnd = 0;
  for (const record of records) {
    const size = lineBytes(record) + 1;
    const filled = at + (runValue === undefined ? 0 : runEnd - runStart + 1);
    if (filled + size > slice.length && filled > 0) {
      at = copyRun(slice, at, runValue, runStart, runEnd);
      runValue = undefined;
      yield slice.subarray(0, at);
      slice = takeSlice(Math.min(NDJSON_SLICE_BYTES, remaining));
      at = 0;
    }
    remaining -= size;
    if (size > slice.length) {
      yield lineOf(record);
      yield NEWLINE_BYTES;
      continue;
    }
    if (runValue === record.value && record.start === runEnd + 1 && runValue[runEnd] === NEWLINE) {
      runEnd = record.end;
      continue;
    }
    at = copyRun(slice, at, runValue, runStart, runEnd);
    runValue = record.value;
    runStart = record.start;
    runEnd = record.end;
  }
  at = copyRun(slice, at, runValue, runStart, runEnd);
  if (at > 0) yield slice.subarray(0, at);
}

/** Copies `value[start, end)` and a newline into `slice` at `at` (nothing without a value); returns the new end. */
function copyRun(slice: Buffer, at: number, value: Buffer | undefined, start: number, end: number): number {
  if (value === undefined) return at;
  at += value.copy(slice, at, start, end);
  slice[at] = NEWLINE;
  return at + 1;
}

function httpStatus(error: unknown): number | undefined {
  const status = (error as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

function isNotFound(error: unknown): boolean {
  const name = (error as { name?: unknown } | null)?.name;
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatus(error) === 404;
}

/** The S3 error in one line: its name, HTTP status and message (S3 errors carry no credentials). */
function describeS3Error(error: unknown): string {
  const status = httpStatus(error);
  return `${describeError(error)}${status === undefined ? '' : ` (HTTP ${status})`}`;
}

type Retryable = Extract<SendResult, { status: 'retryable' }>;

function aborted(signal: AbortSignal): Retryable {
  return { status: 'retryable', error: new SinkError('S3 send aborted', { code: ErrorCode.ABORTED, retriable: true, cause: signal.reason }) };
}

/**
 * Every S3 failure of a send is retryable: 5xx, throttling and network errors pass, and access denied
 * or a missing bucket are configuration problems (seen at start) that dead-lettering a whole stream
 * would not fix.
 */
function retryable(error: unknown, signal: AbortSignal, what: string): Retryable {
  if (signal.aborted) return aborted(signal);
  return {
    status: 'retryable',
    error: new SinkError(`S3 sink failed ${what}: ${describeS3Error(error)}`, { code: ErrorCode.SINK_UNAVAILABLE, retriable: true, cause: error }),
  };
}

/** HeadBucket failures with what to check: a missing bucket or denied access fail fast (not retriable). */
function bucketError(bucket: string, error: unknown): SinkError {
  const status = httpStatus(error);
  const reason =
    status === 404
      ? `bucket "${bucket}" does not exist`
      : status === 403
        ? `access to bucket "${bucket}" is denied: check the credentials and the bucket policy`
        : status === 301
          ? `bucket "${bucket}" is in another region than the configured one`
          : `bucket "${bucket}" is unreachable: ${describeS3Error(error)}`;
  const retriable = status === 301 || status === 400 || status === 403 || status === 404 ? false : isRetriable(error);
  return new SinkError(`S3 sink: ${reason}`, { code: ErrorCode.SINK_UNAVAILABLE, retriable, cause: error });
}

/** The record's `@timestamp` as written, for an error message (read again: records do not keep it). */
function recordTimestamp(record: SinkRecord): string {
  try {
    return JSON.stringify((JSON.parse(lineOf(record).toString('utf8')) as Record<string, unknown>)[Field.TIMESTAMP]);
  } catch {
    return `(${String(record.fields.timeMs)} ms)`;
  }
}

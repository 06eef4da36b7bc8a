/**
 * The S3 sink: each batch of one topic-partition becomes one gzip NDJSON object per Hive partition
 * (cluster, namespace, UTC day and hour of the records' own timestamps), under deterministic keys
 * (see s3-layout.ts). Lines are written as they came out of Kafka, never re-serialised.
 *
 * Replays without duplicates. Kafka offsets are committed only once every sink acknowledged, so after
 * a crash or rebalance a partition is replayed from a committed offset that can lie before data this
 * sink already wrote (another sink was slower). Keys come from the first offset of each group, so the
 * same records under a different batch boundary would land under different keys, twice. To prevent
 * that, the sink keeps a durable state object per sink and topic-partition,
 * `<statePrefix>/<sink>/<topic>+<partition>.json`, whose `endOffset` N says every record below N is
 * written (the high-water marker). It is written after all objects of a batch; a batch below it is
 * acknowledged without writing, a batch straddling it writes only the records at or above it.
 *
 * The object fence: no write ever replaces an object another write left. Each object is written
 * with `If-None-Match: *` and carries metadata naming the offset of its last record and the topic's
 * incarnation (s3-object-fence.ts). Batches hold whole Kafka messages, and an object holds every
 * record of its group (cluster, namespace, hour) from its first record through that offset. A write
 * that finds an object under its key (HTTP 412) reads that metadata (HEAD) and:
 * - this incarnation's object: skips the group's records through its last offset and writes the rest
 *   under the key of the first one left, again conditionally;
 * - an earlier incarnation's (a topic deleted and created again restarts at offset 0): keeps it and
 *   writes under the alternate key naming this incarnation (`...+<firstOffset>+<topicId>.ndjson.gz`);
 * - no metadata (an older logship's object): replaces it, `If-Match` its ETag, as before the fence.
 * A group found written past the batch's end is kept in the state object (`heldThrough`: Hive path ->
 * offset), so the next batch, and a replay from the marker, skip those records too.
 *
 * Why nothing is written twice or skipped, whatever the batch boundaries and whoever writes: call the
 * objects of one group a chain. Every writer starts from a state that was in S3 (read, or its own
 * last write), so its first object of a group starts at the first record at or after the marker (or
 * after `heldThrough`), which is where a link of the chain starts or where the chain ends: the writer
 * that set the marker had written, or found written, every record of the group below it. From there
 * a 412 leads from link to link (the next starts right after the last offset of the one found), and a
 * write that succeeds extends the chain where it ends. So:
 * - a crash between a batch's objects and its marker: the replay walks the objects left (412, HEAD),
 *   skipping what they hold, and continues after them, even with other batch boundaries;
 * - a member paused past its session timeout with a PUT on the wire: if its late PUT lands first, the
 *   new owner's write of that key fails and resumes after it; if the owner's landed first, the late
 *   PUT fails (412). Either way every row is written once. (MinIO holds the key's lock while it reads a
 *   conditional PUT's body, so the owner's write waits for the paused PUT to end.) Multipart uploads
 *   carry the condition on CompleteMultipartUpload, where it is checked.
 * One HEAD per object that found another, nothing more on the normal path.
 *
 * Agent replays (the same lines sent again as new Kafka messages) are recognised by their origin (see
 * replay-filter.ts); the origins' high offsets are part of the same state object, written in the same
 * PUT as the marker, so they move together and a replayed batch makes the same decisions.
 *
 * The marker never skips data:
 * - it names the topic's incarnation (Kafka's topic ID): a state object of a topic deleted and created
 *   again, or one above the partition's high watermark, is discarded with a warning;
 * - it is written conditionally, `If-Match` the ETag read (`If-None-Match: *` when there was none), so
 *   a member that lost the partition while paused cannot move it: its write fails and it reads again;
 * - each object and state write first asks whether the group confirmed this member lately
 *   (`membershipConfirmed`): a member paused past its session timeout stops before its next write.
 *
 * Limits: without topic IDs (Kafka before 2.8), an object of an earlier incarnation is recognised
 * only by a last offset at or above the high watermark, and then replaced (there is no incarnation to
 * name an alternate key with); once the new incarnation's offsets pass it, it is taken for this one's.
 *
 * The state is a cache-backed read: read once per partition on its first send (or after `release`),
 * then kept in a bounded map; an entry dropped from the map is read again from S3, which holds the truth.
 */
import { finished } from 'node:stream/promises';
import { createGzip, type Gzip } from 'node:zlib';
import { GetObjectCommand, HeadBucketCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BufferPool } from '../../shared/buffer-pool.js';
import { AbortError, describeError, ErrorCode, isRetriable, SinkError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { createS3Client } from '../../shared/s3.js';
import { Field } from '../../shared/record.js';
import { DeadLetterReason, lineBytes, lineOf, type Batch, type RejectedRecord, type SendResult, type Sink, type SinkRecord } from '../sink.js';
import { defaultStatePrefix, hourIndex, incarnationObjectKey, legacyStateKey, objectKey, partitionPath, partitionValues, stateKey, timePartition, type PartitionValues } from '../s3-layout.js';
import { ConflictResolution, decideConflict, heldObject, heldPastMarker, objectMetadata, recordsAfter, type WriterView } from '../s3-object-fence.js';
import { ReplayState, type ReplayLimits } from '../replay-filter.js';
import type { S3SinkOptions } from './s3-options.js';

/** Partitions whose state is cached at most; beyond it the least recently used is read again when needed. */
const MAX_CACHED_STATES = 4_096;
/** 1: `{version, endOffset}` under `<statePrefix>/<topic>+<partition>.json`; 2: per sink, with incarnation and origins. */
const STATE_VERSION = 2;
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
/**
 * Writes of one group that may find an object under their key before giving up (retried as a whole
 * batch): each round either skips records, moves to the alternate key, or replaces an unmarked object,
 * so only writers racing on the same keys make more than two or three.
 */
const MAX_WRITE_ROUNDS = 16;


export interface S3SinkDeps {
  logger: Logger;
  /** The topic's incarnation (Kafka topic ID); undefined when the broker cannot tell. */
  topicId?: (topic: string, signal: AbortSignal) => Promise<string | undefined>;
  /** Replay detection's bounds; off when absent. */
  replays?: ReplayLimits;
  now?: () => number;
  /**
   * False when the consumer group has not confirmed this member lately (it may have been paused past
   * its session timeout and replaced): objects and state are then not written (retried later).
   */
  membershipConfirmed?: () => boolean;
  /** Counts a write that found an object under its key, by how it went on (the fence; see s3-object-fence.ts). */
  countObjectConflict?: (sink: string, resolution: ConflictResolution) => void;
}

export function createS3NdjsonSink(name: string, options: S3SinkOptions, deps: S3SinkDeps): Sink {
  return new S3NdjsonSink(name, options, { ...deps, logger: deps.logger.child({ sink: name }) });
}

/** What the sink knows of one partition: its marker, the ETag it was read or written with, and its origins. */
interface PartitionState {
  readonly endOffset: number;
  /** ETag of the state object as read or last written; undefined when there is none yet. */
  readonly etag: string | undefined;
  readonly topicId: string | undefined;
  readonly replays: ReplayState;
  /**
   * Groups (Hive partition paths) whose records are written through an offset at or above the marker,
   * by an object another write (a paused member's late PUT, a longer batch before a crash) left.
   */
  readonly held: ReadonlyMap<string, number>;
}

/** The state object did not match the ETag it was read with: another writer moved it. */
export class StateConflictError extends SinkError {
  constructor(key: string, cause: unknown) {
    super(`state object ${key} was changed by another writer (a member that took the partition over); reading it again`, { code: ErrorCode.SINK_UNAVAILABLE, retriable: true, cause });
  }
}

/** Records of one Hive partition within a batch, to be written as one object (or a few, after a conflict). */
interface RecordGroup {
  readonly values: PartitionValues;
  /** The escaped Hive partition path: names the group in the state. */
  readonly path: string;
  /** Records at or below this offset are written already (the state's `held`); -1 when none. */
  readonly heldThrough: number;
  readonly records: SinkRecord[];
}

class S3NdjsonSink implements Sink {
  private readonly client: S3Client;
  private readonly statePrefix: string;
  private readonly logger: Logger;
  private readonly now: () => number;
  /** States by partition (`topic\u0000partition`), in least-recently-used order. */
  private readonly states = new Map<string, PartitionState>();

  constructor(
    readonly name: string,
    private readonly options: S3SinkOptions,
    private readonly deps: S3SinkDeps,
  ) {
    this.client = createS3Client(options.connection, `${name}.connection`);
    this.statePrefix = options.statePrefix ?? defaultStatePrefix(options.prefix);
    this.logger = deps.logger;
    this.now = deps.now ?? Date.now;
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
    let state: PartitionState;
    try {
      state = await this.state(batch, signal);
    } catch (error) {
      return retryable(error, signal, `reading the state of ${topic}/${partition}`);
    }
    const marker = state.endOffset;
    // Records below the marker are written, but those this sink refused may not have reached the
    // dead letter yet (a crash or rebalance between the marker and the dead-letter write): refused
    // again, so dead letters are at least once, never lost.
    const refusedBefore = batch.firstOffset < marker ? refusedBelow(batch.records, marker) : [];
    if (batch.endOffset <= marker) {
      this.logger.debug({ topic, partition, firstOffset: batch.firstOffset, endOffset: batch.endOffset, marker }, 'batch already written before a replay; acknowledged');
      return refusedBefore.length > 0 ? { status: 'delivered', rejected: refusedBefore } : { status: 'delivered' };
    }
    const unwritten = inOffsetOrder(batch.firstOffset < marker ? batch.records.filter((r) => r.offset >= marker) : batch.records);
    const verdict = this.deps.replays === undefined ? undefined : state.replays.judge(unwritten);
    const records = verdict?.kept ?? unwritten;
    const replaysDropped = verdict?.dropped ?? 0;
    const grouped = this.group(records, state.held);
    const groups = grouped.groups;
    const rejected = refusedBefore.length > 0 ? [...refusedBefore, ...grouped.rejected] : grouped.rejected;
    const delivered: SendResult = { status: 'delivered', ...(rejected.length > 0 ? { rejected } : {}), ...(replaysDropped > 0 ? { replaysDropped } : {}) };
    // Nothing to write: the marker stays where it is. That is safe: the offsets skipped hold no record
    // for this sink, only replays, or records existing objects hold (`held`, kept in the state), so a
    // replay from the marker finds the same first records and judges the same replays (see the top).
    if (groups.length === 0) return delivered;

    const view: WriterView = { topicId: state.topicId, highWatermark: batch.highWatermark };
    const failed = await this.writeGroups(groups, topic, partition, view, signal);
    if (failed.groups.length > 0) {
      // The whole batch again: the objects already written are found under the same keys and resumed
      // after (412, HEAD), and the state written at the end holds the origins of every record.
      const result = retryable(failed.error, signal, `writing ${failed.groups.length} of ${groups.length} objects of ${topic}/${partition}`);
      return rejected.length > 0 && !signal.aborted ? { ...result, rejected } : result;
    }
    try {
      await this.writeState(topic, partition, state, batch.endOffset, verdict?.highs, heldPastMarker(state.held, failed.held, batch.endOffset), signal);
    } catch (error) {
      // The whole batch again (its objects are found and resumed after), so that no batch is
      // acknowledged without its marker.
      if (error instanceof StateConflictError) this.release(topic, partition);
      return retryable(error, signal, `writing the state of ${topic}/${partition}`);
    }
    this.logger.debug(
      { topic, partition, firstOffset: batch.firstOffset, endOffset: batch.endOffset, records: records.length, objects: groups.length, replaysDropped },
      'batch written',
    );
    return delivered;
  }

  release(topic: string, partition: number): void {
    this.states.delete(markerId(topic, partition));
  }

  async close(): Promise<void> {
    this.states.clear();
    this.client.destroy();
  }

  /**
   * Splits records by Hive partition; a record whose time cannot name a day is refused, and one an
   * existing object already holds (`held`, from the state) is left out.
   */
  private group(records: readonly SinkRecord[], held: ReadonlyMap<string, number>): { groups: RecordGroup[]; rejected: RejectedRecord[] } {
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
            rejected.push(refusal(record));
            continue;
          }
          const path = partitionPath(values);
          group = { values, path, heldThrough: held.size === 0 ? -1 : (held.get(path) ?? -1), records: [] };
          byPartition.set(id, group);
        }
        last = { group, cluster, namespace, hour };
      }
      if (record.offset > group.heldThrough) group.records.push(record);
    }
    return { groups: [...byPartition.values()].filter((g) => g.records.length > 0), rejected };
  }

  /**
   * Writes the groups, `uploadConcurrency` at a time; returns those not written, the first error, and
   * the groups found written (by an existing object) through an offset.
   */
  private async writeGroups(
    groups: readonly RecordGroup[],
    topic: string,
    partition: number,
    view: WriterView,
    signal: AbortSignal,
  ): Promise<{ groups: RecordGroup[]; error: unknown; held: Map<string, number> }> {
    const failed: RecordGroup[] = [];
    const held = new Map<string, number>();
    let firstError: unknown;
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let group = groups[next++]; group !== undefined; group = groups[next++]) {
        if (signal.aborted) {
          failed.push(group);
          continue;
        }
        try {
          const heldThrough = await this.writeGroup(group, topic, partition, view, signal);
          if (heldThrough !== undefined) held.set(group.path, heldThrough);
        } catch (error) {
          failed.push(group);
          firstError ??= error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.uploadConcurrency, groups.length) }, worker));
    return { groups: failed, error: firstError, held };
  }

  /**
   * Writes one group's records under the key of its first record, never over an object another write
   * left there (`If-None-Match: *`). When one is there, its metadata says what it holds (see
   * s3-object-fence.ts): this partition's records through some offset (they are skipped, the rest
   * written under the key of the first one left, again conditionally), an earlier incarnation's
   * records (kept; this incarnation's go under the alternate key), or nothing known (an older
   * logship's object: replaced, `If-Match` its ETag). Returns the offset an existing object holds the
   * group's records through, when one did.
   */
  private async writeGroup(group: RecordGroup, topic: string, partition: number, view: WriterView, signal: AbortSignal): Promise<number | undefined> {
    let records: readonly SinkRecord[] = group.records;
    let heldThrough: number | undefined;
    let alternate = false;
    let condition: { IfNoneMatch: '*' } | { IfMatch: string } = { IfNoneMatch: '*' };
    let body: Buffer | undefined;
    for (let round = 0; round < MAX_WRITE_ROUNDS; round++) {
      const first = records[0] as SinkRecord;
      const plainKey = objectKey(this.options.prefix, group.values, topic, partition, first.offset);
      const key = alternate && view.topicId !== undefined ? incarnationObjectKey(plainKey, view.topicId) : plainKey;
      body ??= await gzipNdjson(records, this.options.gzipLevel);
      this.checkMembership();
      if (await this.writeObject(key, body, objectMetadata(records, view.topicId), condition, signal)) return heldThrough;
      // Another write left an object under the key (or changed the one about to be replaced).
      const existing = await this.headObject(key, signal);
      if (existing === undefined) {
        condition = { IfNoneMatch: '*' }; // gone since (deleted by hand or by a lifecycle rule): write it
        continue;
      }
      const decision = decideConflict(heldObject(existing.metadata), view);
      this.deps.countObjectConflict?.(this.name, decision.resolution);
      const context = { topic, partition, key, firstOffset: first.offset, lastOffset: (records[records.length - 1] as SinkRecord).offset };
      if (decision.resolution === ConflictResolution.RESUMED) {
        const left = recordsAfter(records, decision.heldThrough);
        heldThrough = Math.max(heldThrough ?? -1, decision.heldThrough);
        this.logger.info(
          { ...context, heldThrough: decision.heldThrough, skipped: records.length - left.length, left: left.length, ...(left.length > 0 ? { nextOffset: (left[0] as SinkRecord).offset } : {}) },
          'S3 object already written by another write (a replay, or a paused member\'s late PUT): its records are skipped, the rest written after it',
        );
        if (left.length === 0) return heldThrough;
        records = left;
        body = undefined;
        alternate = false;
        condition = { IfNoneMatch: '*' };
        continue;
      }
      if (decision.resolution === ConflictResolution.EARLIER_INCARNATION && view.topicId !== undefined) {
        if (alternate) throw new SinkError(`S3 object ${key} names another incarnation of the topic than its key; not overwriting it`, { code: ErrorCode.SINK_UNAVAILABLE, retriable: true });
        this.logger.warn({ ...context, held: existing.metadata, topicId: view.topicId }, 'S3 object of an earlier incarnation of the topic (deleted and created again) under this key: kept; writing under the incarnation\'s alternate key');
        alternate = true;
        condition = { IfNoneMatch: '*' };
        continue;
      }
      // Unmarked (an older logship wrote it), or of an earlier incarnation while this one's topic ID is
      // unknown (no alternate key to name): replaced, as before the fence, unless it changes meanwhile.
      if (existing.etag === undefined) throw new SinkError(`S3 object ${key} has no ETag; cannot replace it conditionally`, { code: ErrorCode.SINK_UNAVAILABLE, retriable: true });
      this.logger.warn({ ...context, held: existing.metadata, resolution: decision.resolution }, 'S3 object without logship metadata (or of an unknown earlier incarnation) under this key: replaced');
      condition = { IfMatch: existing.etag };
    }
    throw new SinkError(`S3 writes of ${topic}/${partition} kept finding other objects under their keys (${MAX_WRITE_ROUNDS} rounds); trying the batch again`, { code: ErrorCode.SINK_UNAVAILABLE, retriable: true });
  }

  /** HEAD of a data object: its metadata and ETag; undefined when there is none. */
  private async headObject(key: string, signal: AbortSignal): Promise<{ metadata: Record<string, string> | undefined; etag: string | undefined } | undefined> {
    const head = await unlessNotFound(this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key }), { abortSignal: signal }));
    return head === undefined ? undefined : { metadata: head.Metadata, etag: head.ETag };
  }

  /** Writes an object under a condition; false when the condition failed (HTTP 412). */
  private async writeObject(
    key: string,
    body: Buffer,
    metadata: Record<string, string>,
    condition: { IfNoneMatch: '*' } | { IfMatch: string },
    signal: AbortSignal,
  ): Promise<boolean> {
    try {
      await this.putObject({ Bucket: this.options.bucket, Key: key, Body: body, ContentType: 'application/gzip', Metadata: metadata, ...condition }, signal);
      return true;
    } catch (error) {
      if (isPreconditionFailed(error)) return false;
      throw error;
    }
  }

  /**
   * A PUT, or a multipart upload above `multipartThresholdBytes`: lib-storage passes the condition
   * to CompleteMultipartUpload, where S3 (and MinIO) check it, and the metadata to CreateMultipartUpload.
   */
  private async putObject(
    params: { Bucket: string; Key: string; Body: Buffer; ContentType: string; Metadata: Record<string, string>; IfNoneMatch?: string; IfMatch?: string },
    signal: AbortSignal,
  ): Promise<void> {
    if (signal.aborted) throw new AbortError('S3 write aborted', signal.reason);
    const body = params.Body;
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

  private async state(batch: Batch, signal: AbortSignal): Promise<PartitionState> {
    const id = markerId(batch.topic, batch.partition);
    const cached = this.states.get(id);
    const state = cached ?? (await this.readState(batch, signal));
    this.remember(id, state);
    return state;
  }

  /**
   * The stored state, checked against the topic's incarnation and high watermark; an empty state
   * (keeping the ETag, for the conditional write) when there is none or it cannot be trusted.
   */
  private async readState(batch: Batch, signal: AbortSignal): Promise<PartitionState> {
    const { topic, partition, highWatermark } = batch;
    const topicId = await this.deps.topicId?.(topic, signal);
    const key = this.stateKey(topic, partition);
    const empty = (etag: string | undefined): PartitionState => ({ endOffset: 0, etag, topicId, replays: new ReplayState(), held: new Map() });
    const read = await this.getText(key, signal);
    if (read === undefined) return this.readLegacyMarker(batch, topicId, signal);
    const state = parseState(read.text);
    if (state === undefined) {
      // Only a hand edit can do this (a PUT is atomic). Writing again from the committed offset may
      // duplicate records but never loses any; stalling the partition would lose them all.
      this.logger.error({ topic, partition, key }, 'S3 sink state object is unreadable; writing from the committed offset, which may duplicate records');
      return empty(read.etag);
    }
    if (state.version > STATE_VERSION) {
      throw new SinkError(`state object ${key} has version ${state.version}, written by a newer logship; this one reads up to ${STATE_VERSION}`, {
        code: ErrorCode.SINK_UNAVAILABLE,
        retriable: true,
      });
    }
    if (state.topicId !== undefined && topicId !== undefined && state.topicId !== topicId) {
      this.logger.warn({ topic, partition, key, stored: state.topicId, current: topicId, endOffset: state.endOffset }, 'S3 sink state belongs to an earlier incarnation of the topic (deleted and created again); discarded');
      return empty(read.etag);
    }
    if (highWatermark !== undefined && state.endOffset > highWatermark) {
      this.logger.warn({ topic, partition, key, endOffset: state.endOffset, highWatermark }, 'S3 sink state is above the partition\'s high watermark (the topic was re-created or the cluster replaced); discarded');
      return empty(read.etag);
    }
    return { endOffset: state.endOffset, etag: read.etag, topicId: topicId ?? state.topicId, replays: state.replays, held: state.held };
  }

  /**
   * A marker of version 1 (before state objects were per sink): trusted only up to the high watermark,
   * and replaced by this sink's own state object at the next write. Without one, an empty state.
   */
  private async readLegacyMarker(batch: Batch, topicId: string | undefined, signal: AbortSignal): Promise<PartitionState> {
    const { topic, partition, highWatermark } = batch;
    const empty: PartitionState = { endOffset: 0, etag: undefined, topicId, replays: new ReplayState(), held: new Map() };
    const read = await this.getText(legacyStateKey(this.statePrefix, topic, partition), signal);
    if (read === undefined) return empty;
    const state = parseState(read.text);
    if (state === undefined || state.version !== 1 || (highWatermark !== undefined && state.endOffset > highWatermark)) return empty;
    this.logger.info({ topic, partition, endOffset: state.endOffset }, 'S3 sink read a version 1 marker; its own state object replaces it at the next write');
    return { ...empty, endOffset: state.endOffset };
  }

  private async getText(key: string, signal: AbortSignal): Promise<{ text: string; etag: string | undefined } | undefined> {
    const object = await unlessNotFound(this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }), { abortSignal: signal }));
    return object === undefined ? undefined : { text: (await object.Body?.transformToString()) ?? '', etag: object.ETag };
  }

  private async writeState(
    topic: string,
    partition: number,
    state: PartitionState,
    endOffset: number,
    highs: ReadonlyMap<string, number> | undefined,
    held: ReadonlyMap<string, number>,
    signal: AbortSignal,
  ): Promise<void> {
    const id = markerId(topic, partition);
    if (endOffset <= state.endOffset) return; // only ever forward
    let replays = state.replays;
    if (this.deps.replays !== undefined && highs !== undefined) {
      replays = state.replays.clone();
      replays.commit(highs, this.now(), this.deps.replays);
    }
    const body = JSON.stringify({
      version: STATE_VERSION,
      sink: this.name,
      topic,
      partition,
      topicId: state.topicId,
      endOffset,
      origins: replays,
      ...(held.size > 0 ? { heldThrough: Object.fromEntries(held) } : {}),
    });
    this.checkMembership();
    const key = this.stateKey(topic, partition);
    let etag: string | undefined;
    try {
      const written = await this.client.send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: key,
          Body: body,
          ContentType: 'application/json',
          ...(state.etag === undefined ? { IfNoneMatch: '*' } : { IfMatch: state.etag }),
        }),
        { abortSignal: signal },
      );
      etag = written.ETag;
    } catch (error) {
      if (isPreconditionFailed(error)) throw new StateConflictError(key, error);
      throw error;
    }
    this.remember(id, { endOffset, etag, topicId: state.topicId, replays, held });
  }

  /** Throws a retryable error when the group has not confirmed this member lately. */
  private checkMembership(): void {
    if (this.deps.membershipConfirmed !== undefined && !this.deps.membershipConfirmed()) {
      throw new SinkError('the consumer group has not confirmed this member lately (paused?); not writing until it does', { code: ErrorCode.SINK_UNAVAILABLE, retriable: true });
    }
  }

  private stateKey(topic: string, partition: number): string {
    return stateKey(this.statePrefix, this.name, topic, partition);
  }

  private remember(id: string, value: PartitionState): void {
    this.states.delete(id);
    this.states.set(id, value);
    if (this.states.size > MAX_CACHED_STATES) {
      const oldest = this.states.keys().next();
      if (oldest.done !== true) this.states.delete(oldest.value);
    }
  }
}

function markerId(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

interface StoredState {
  readonly version: number;
  readonly endOffset: number;
  readonly topicId: string | undefined;
  readonly replays: ReplayState;
  readonly held: ReadonlyMap<string, number>;
}

function parseState(text: string): StoredState | undefined {
  try {
    const state = JSON.parse(text) as unknown;
    if (typeof state !== 'object' || state === null) return undefined;
    const { version, endOffset, topicId, origins, heldThrough } = state as { version?: unknown; endOffset?: unknown; topicId?: unknown; origins?: unknown; heldThrough?: unknown };
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) return undefined;
    if (version > STATE_VERSION) return { version, endOffset: 0, topicId: undefined, replays: new ReplayState(), held: new Map() };
    if (typeof endOffset !== 'number' || !Number.isSafeInteger(endOffset) || endOffset < 0) return undefined;
    const replays = origins === undefined ? new ReplayState() : ReplayState.parse(origins);
    if (replays === undefined) return undefined;
    const held = parseHeld(heldThrough);
    if (held === undefined) return undefined;
    return { version, endOffset, topicId: typeof topicId === 'string' ? topicId : undefined, replays, held };
  } catch {
    return undefined;
  }
}

/** The state's `heldThrough` (`{"<Hive path>": offset}`; absent means none); undefined when malformed. */
function parseHeld(value: unknown): Map<string, number> | undefined {
  if (value === undefined) return new Map();
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const held = new Map<string, number>();
  for (const [path, offset] of Object.entries(value as Record<string, unknown>)) {
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return undefined;
    held.set(path, offset);
  }
  return held;
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

function isPreconditionFailed(error: unknown): boolean {
  const name = (error as { name?: unknown } | null)?.name;
  return name === 'PreconditionFailed' || httpStatus(error) === 412;
}

/** The request's answer; undefined when S3 says the object does not exist. */
async function unlessNotFound<T>(request: Promise<T>): Promise<T | undefined> {
  try {
    return await request;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
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

/** A record whose time names no day (no `dt` partition): refused, to the dead letter. */
function refusal(record: SinkRecord): RejectedRecord {
  return { record, reason: DeadLetterReason.REJECTED, detail: `timestamp ${recordTimestamp(record)} is outside the years 0000-9999` };
}

/** The records below `marker` this sink refuses (see {@link refusal}). */
function refusedBelow(records: readonly SinkRecord[], marker: number): RejectedRecord[] {
  const refused: RejectedRecord[] = [];
  for (const record of records) if (record.offset < marker && timePartition(record.fields.timeMs) === undefined) refused.push(refusal(record));
  return refused;
}

/** The record's `@timestamp` as written, for an error message (read again: records do not keep it). */
function recordTimestamp(record: SinkRecord): string {
  try {
    return JSON.stringify((JSON.parse(lineOf(record).toString('utf8')) as Record<string, unknown>)[Field.TIMESTAMP]);
  } catch {
    return `(${String(record.fields.timeMs)} ms)`;
  }
}

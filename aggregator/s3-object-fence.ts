/**
 * The S3 sink's object fence, as pure decisions: what an existing object under a key holds, what to do
 * when a conditional write (`If-None-Match: *`) finds one, and which groups' records are already
 * written past a batch's end.
 *
 * Every data object carries user metadata naming what it holds: the Kafka offset of its last record
 * and the topic's incarnation (Kafka topic ID) when known. Batches hold whole Kafka messages, and an
 * object holds every record of its group (cluster, namespace, hour) from its first record through its
 * last offset, so "the records of this group at offsets up to L are written" is all a writer needs to
 * resume after an object it did not write.
 */
import type { SinkRecord } from './sink.js';

/** User metadata keys of a data object (sent as `x-amz-meta-<key>`; S3 returns them lower case). */
export const ObjectMetadata = {
  /** Offset of the Kafka message holding the object's last record. */
  LAST_OFFSET: 'logship-last-offset',
  /** The topic's incarnation (Kafka topic ID); absent when the writer could not tell. */
  TOPIC_ID: 'logship-topic-id',
} as const;

/** What an existing object holds, from its metadata. */
export interface HeldObject {
  readonly lastOffset: number | undefined;
  readonly topicId: string | undefined;
}

/** How a write that found an object under its key went on; also the metric's `resolution` label. */
export const ConflictResolution = {
  /** The object holds this group's records through some offset: those are skipped, the rest written after. */
  RESUMED: 'resumed',
  /** The object belongs to an earlier incarnation of the topic: it is kept, the records go under an alternate key. */
  EARLIER_INCARNATION: 'earlier_incarnation',
  /** The object has no logship metadata (an older logship wrote it): it is replaced, as before the fence. */
  UNMARKED: 'unmarked',
} as const;

export type ConflictResolution = (typeof ConflictResolution)[keyof typeof ConflictResolution];

/** The metadata to write with an object of `records` (non-empty, in offset order). */
export function objectMetadata(records: readonly SinkRecord[], topicId: string | undefined): Record<string, string> {
  const last = records[records.length - 1];
  if (last === undefined) throw new Error('an object holds at least one record');
  return topicId === undefined ? { [ObjectMetadata.LAST_OFFSET]: String(last.offset) } : { [ObjectMetadata.LAST_OFFSET]: String(last.offset), [ObjectMetadata.TOPIC_ID]: topicId };
}

/** Reads {@link objectMetadata} back from a HEAD's `Metadata`; a malformed offset counts as absent. */
export function heldObject(metadata: Readonly<Record<string, string | undefined>> | undefined): HeldObject {
  const offsetText = metadata?.[ObjectMetadata.LAST_OFFSET];
  const offset = offsetText === undefined || !/^\d{1,16}$/.test(offsetText) ? undefined : Number(offsetText);
  const topicId = metadata?.[ObjectMetadata.TOPIC_ID];
  return { lastOffset: offset !== undefined && Number.isSafeInteger(offset) ? offset : undefined, topicId: topicId === '' ? undefined : topicId };
}

/** What the writer knows of the partition it writes. */
export interface WriterView {
  /** This topic's incarnation; undefined when the broker cannot tell. */
  readonly topicId: string | undefined;
  /** The partition's high watermark when the batch was fetched, where known. */
  readonly highWatermark: number | undefined;
}

export type ConflictDecision =
  /** Skip the group's records at offsets up to `heldThrough`; write the rest (if any) under the key of the first. */
  | { readonly resolution: typeof ConflictResolution.RESUMED; readonly heldThrough: number }
  /** Write under the alternate key of this incarnation (or, when it is unknown, replace the object). */
  | { readonly resolution: typeof ConflictResolution.EARLIER_INCARNATION }
  /** Replace the object (conditionally on the ETag seen). */
  | { readonly resolution: typeof ConflictResolution.UNMARKED };

/**
 * What to do about an object found under the key a group was to be written to.
 * - No (readable) last offset: an older logship wrote it; replace it, as it did before.
 * - Another incarnation: both topic IDs known and different, or (either unknown) a last offset at or
 *   above the high watermark, which this partition never had. Never skip records for it.
 * - Otherwise this partition's own object: its records through its last offset are written.
 */
export function decideConflict(held: HeldObject, writer: WriterView): ConflictDecision {
  if (held.lastOffset === undefined) return { resolution: ConflictResolution.UNMARKED };
  const otherIncarnation =
    held.topicId !== undefined && writer.topicId !== undefined
      ? held.topicId !== writer.topicId
      : writer.highWatermark !== undefined && held.lastOffset >= writer.highWatermark;
  if (otherIncarnation) return { resolution: ConflictResolution.EARLIER_INCARNATION };
  return { resolution: ConflictResolution.RESUMED, heldThrough: held.lastOffset };
}

/** The records after `heldThrough` (records in offset order); the same array when none is held. */
export function recordsAfter(records: readonly SinkRecord[], heldThrough: number): readonly SinkRecord[] {
  let i = 0;
  while (i < records.length && (records[i] as SinkRecord).offset <= heldThrough) i++;
  return i === 0 ? records : records.slice(i);
}

/**
 * Groups whose records are written past a batch's end, to keep in the partition's state: a replay
 * or the next batch starts at the marker (the batch's end), and must not write again what such an
 * object already holds. Entries at or below the marker tell nothing any more and are dropped.
 * `previous` and `found` map a group (its Hive path) to the offset its records are written through.
 */
export function heldPastMarker(previous: ReadonlyMap<string, number>, found: ReadonlyMap<string, number>, marker: number): Map<string, number> {
  const held = new Map<string, number>();
  for (const source of [previous, found]) {
    for (const [group, through] of source) {
      if (through >= marker && through > (held.get(group) ?? -1)) held.set(group, through);
    }
  }
  return held;
}

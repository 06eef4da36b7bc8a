/**
 * Recognises records a sink already wrote when their producer sends them again (an agent restarted
 * from its checkpoint and re-read lines Kafka had already acknowledged). Such a replay reaches Kafka
 * as new messages with new offsets, so offsets cannot tell; the record's origin can.
 *
 * The agent's `event_id` is 32 lowercase hex digits: 20 naming the file (a hash of cluster, node, the
 * file's canonical path and its head fingerprint: the same after rotation and compression) followed
 * by 12 giving the line's byte offset in it. One pod's lines share a Kafka key, hence a partition, and the agent produces each file's
 * lines of one stream in offset order (the other stream's lines may come between: a long line's
 * chunks are merged per stream). So, per partition, a record whose (file, stream) already has a
 * written record at the same or a higher byte offset is a replay: it is dropped and counted.
 *
 * The state is one small map per partition, `origin -> [highest byte offset written, last seen ms]`,
 * bounded two ways: an origin not seen for `forgetAfterMs` is forgotten, and beyond
 * `maxOriginsPerPartition` the least recently seen ones go. A replay of a forgotten origin is written
 * again (a duplicate, never a loss). Records whose `event_id` is not in the agent's format (another
 * producer) carry no origin and are never dropped.
 */
import type { SinkRecord } from './sink.js';

export interface ReplayLimits {
  /** An origin not seen for this long is forgotten. */
  readonly forgetAfterMs: number;
  /** Origins remembered per partition at most; the least recently seen go first. */
  readonly maxOriginsPerPartition: number;
}

/** The serialised form of one origin: `[highest byte offset written, last seen (ms since epoch)]`. */
export type OriginEntry = [offset: number, seenMs: number];

const ORIGIN_PREFIX_LENGTH = 20;
const EVENT_ID_LENGTH = 32;
const AGENT_EVENT_ID = /^[0-9a-f]{32}$/;

/** Origin of a record from its `event_id` and stream; undefined when the id is not in the agent's format. */
export function originOf(eventId: string, stream: unknown): { origin: string; offset: number } | undefined {
  if (eventId.length !== EVENT_ID_LENGTH || !AGENT_EVENT_ID.test(eventId)) return undefined;
  const suffix = stream === 'stderr' ? 'e' : stream === 'stdout' ? 'o' : '-';
  return { origin: eventId.slice(0, ORIGIN_PREFIX_LENGTH) + suffix, offset: Number.parseInt(eventId.slice(ORIGIN_PREFIX_LENGTH), 16) };
}

/** What a batch would change: the records to write, how many were replays, and the origins' new highs. */
export interface ReplayVerdict {
  readonly kept: SinkRecord[];
  readonly dropped: number;
  /** origin -> highest byte offset among the kept records. */
  readonly highs: Map<string, number>;
}

/** Per-partition memory of what was written, by origin. Kept in least-recently-seen order. */
export class ReplayState {
  private readonly origins = new Map<string, OriginEntry>();

  constructor(entries?: Iterable<[string, OriginEntry]>) {
    if (entries) for (const [origin, entry] of entries) this.origins.set(origin, [entry[0], entry[1]]);
  }

  get size(): number {
    return this.origins.size;
  }

  highest(origin: string): number | undefined {
    return this.origins.get(origin)?.[0];
  }

  /**
   * Splits records (in offset order) into those to write and replays, without changing the state:
   * a send may fail and be retried, so the state moves only by {@link commit} once written.
   */
  judge(records: readonly SinkRecord[]): ReplayVerdict {
    const highs = new Map<string, number>();
    let kept: SinkRecord[] | undefined;
    let dropped = 0;
    for (let i = 0; i < records.length; i++) {
      const record = records[i] as SinkRecord;
      const origin = record.fields.origin;
      if (origin !== undefined) {
        const offset = record.fields.originOffset ?? 0;
        const high = highs.get(origin) ?? this.origins.get(origin)?.[0];
        if (high !== undefined && offset <= high) {
          kept ??= records.slice(0, i);
          dropped++;
          continue;
        }
        highs.set(origin, offset);
      }
      kept?.push(record);
    }
    return { kept: kept ?? [...records], dropped, highs };
  }

  /** Records the highs of a written batch, then forgets what is too old or too many. */
  commit(highs: ReadonlyMap<string, number>, nowMs: number, limits: ReplayLimits): void {
    for (const [origin, offset] of highs) {
      const previous = this.origins.get(origin);
      this.origins.delete(origin);
      this.origins.set(origin, [Math.max(offset, previous?.[0] ?? -1), nowMs]);
    }
    this.evict(nowMs, limits);
  }

  evict(nowMs: number, limits: ReplayLimits): void {
    const oldestKept = nowMs - limits.forgetAfterMs;
    for (const [origin, entry] of this.origins) {
      if (this.origins.size > limits.maxOriginsPerPartition || entry[1] < oldestKept) this.origins.delete(origin);
      else break; // least recently seen first: the rest are newer
    }
  }

  /** A copy, for a write that may fail (the state moves only once it succeeded). */
  clone(): ReplayState {
    return new ReplayState(this.origins);
  }

  toJSON(): Record<string, OriginEntry> {
    return Object.fromEntries(this.origins);
  }

  /** Reads {@link toJSON}'s output; undefined when it is not that shape. */
  static parse(value: unknown): ReplayState | undefined {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
    const entries: [string, OriginEntry][] = [];
    for (const [origin, entry] of Object.entries(value as Record<string, unknown>)) {
      if (!Array.isArray(entry) || entry.length !== 2) return undefined;
      const [offset, seenMs] = entry as unknown[];
      if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || typeof seenMs !== 'number' || !Number.isFinite(seenMs)) return undefined;
      entries.push([origin, [offset, seenMs]]);
    }
    // Least recently seen first, whatever order the object kept.
    entries.sort((a, b) => a[1][1] - b[1][1]);
    return new ReplayState(entries);
  }
}

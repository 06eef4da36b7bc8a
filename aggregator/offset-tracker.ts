/**
 * Which offsets may be committed: per topic-partition, every sink acknowledges batches in offset
 * order, so each sink's progress is one number (the end of its last delivered batch) and the
 * partition's committable offset is the smallest of them — the contiguous prefix that every sink
 * wrote. Also accounts the bytes held between fetch and commit, for backpressure.
 */

export interface PartitionProgress {
  readonly topic: string;
  readonly partition: number;
  /** The offset Kafka holds for the group (or the first offset fetched, before any commit). */
  committed: number;
  /** Next offset to fetch: one past the last message handed to the sinks. */
  ingestedEnd: number;
  /** Last high watermark seen (the offset the next produced message will get). */
  highWatermark: number;
}

interface PartitionState extends PartitionProgress {
  readonly acked: Map<string, number>;
  /** Messages handed to the sinks and not yet committable: [end offset, bytes], in offset order. */
  readonly held: [number, number][];
  heldHead: number;
}

export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${String(partition)}`;
}

export class OffsetTracker {
  private readonly partitions = new Map<string, PartitionState>();
  private bytesHeld = 0;

  constructor(private readonly sinkNames: readonly string[]) {}

  /** Bytes of message values fetched and not yet written by every sink. */
  get heldBytes(): number {
    return this.bytesHeld;
  }

  /** Messages `[firstOffset, endOffset)` of `bytes` bytes are handed to the sinks. */
  ingest(topic: string, partition: number, firstOffset: number, endOffset: number, bytes: number, highWatermark: number): void {
    const key = partitionKey(topic, partition);
    let state = this.partitions.get(key);
    if (state === undefined) {
      state = { topic, partition, committed: firstOffset, ingestedEnd: firstOffset, highWatermark, acked: new Map(this.sinkNames.map((s) => [s, firstOffset])), held: [], heldHead: 0 };
      this.partitions.set(key, state);
    }
    state.ingestedEnd = endOffset;
    state.highWatermark = Math.max(state.highWatermark, highWatermark);
    state.held.push([endOffset, bytes]);
    this.bytesHeld += bytes;
  }

  /** The offset after the last message handed to the sinks; undefined for a partition not tracked. */
  nextOffset(topic: string, partition: number): number | undefined {
    return this.partitions.get(partitionKey(topic, partition))?.ingestedEnd;
  }

  /** `sink` durably wrote everything of the partition before `endOffset`. */
  ack(sink: string, topic: string, partition: number, endOffset: number): void {
    const state = this.partitions.get(partitionKey(topic, partition));
    if (state === undefined) return;
    const previous = state.acked.get(sink);
    if (previous === undefined || endOffset <= previous) return;
    state.acked.set(sink, endOffset);
    this.release(state);
  }

  /** The offset up to which every sink wrote (exclusive): what may be committed. */
  committable(topic: string, partition: number): number | undefined {
    const state = this.partitions.get(partitionKey(topic, partition));
    return state === undefined ? undefined : committableOf(state);
  }

  /** Partitions whose committable offset moved past what Kafka holds. */
  pendingCommits(): { topic: string; partition: number; offset: number }[] {
    const result: { topic: string; partition: number; offset: number }[] = [];
    for (const state of this.partitions.values()) {
      const offset = committableOf(state);
      if (offset > state.committed) result.push({ topic: state.topic, partition: state.partition, offset });
    }
    return result;
  }

  /** Messages acknowledged by every sink and not committed yet, over all partitions. */
  uncommittedMessages(): number {
    let total = 0;
    for (const state of this.partitions.values()) total += committableOf(state) - state.committed;
    return total;
  }

  markCommitted(topic: string, partition: number, offset: number): void {
    const state = this.partitions.get(partitionKey(topic, partition));
    if (state !== undefined && offset > state.committed) state.committed = offset;
  }

  noteHighWatermark(topic: string, partition: number, highWatermark: number): void {
    const state = this.partitions.get(partitionKey(topic, partition));
    if (state !== undefined) state.highWatermark = Math.max(state.highWatermark, highWatermark);
  }

  progress(): PartitionProgress[] {
    return [...this.partitions.values()];
  }

  /**
   * Forgets the partitions `keep` refuses (they moved to another member: they restart there from their
   * committed offsets); the others stay as they are. Returns how many were forgotten.
   */
  retain(keep: (topic: string, partition: number) => boolean): number {
    let dropped = 0;
    for (const [key, state] of this.partitions) {
      if (keep(state.topic, state.partition)) continue;
      for (let i = state.heldHead; i < state.held.length; i++) this.bytesHeld -= state.held[i]?.[1] ?? 0;
      this.partitions.delete(key);
      dropped++;
    }
    return dropped;
  }

  /** Forget everything (the partitions restart from their committed offsets). */
  clear(): void {
    this.partitions.clear();
    this.bytesHeld = 0;
  }

  private release(state: PartitionState): void {
    const upTo = committableOf(state);
    while (state.heldHead < state.held.length) {
      const entry = state.held[state.heldHead];
      if (entry === undefined || entry[0] > upTo) break;
      this.bytesHeld -= entry[1];
      state.heldHead++;
    }
    if (state.heldHead > 1024 && state.heldHead * 2 > state.held.length) {
      state.held.splice(0, state.heldHead);
      state.heldHead = 0;
    }
  }
}

function committableOf(state: PartitionState): number {
  let min = Infinity;
  for (const offset of state.acked.values()) if (offset < min) min = offset;
  return min === Infinity ? state.ingestedEnd : min;
}

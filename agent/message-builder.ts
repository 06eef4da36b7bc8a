/**
 * Groups records into Kafka message values (NDJSON: each record followed by `\n`), at most
 * `maxRecordsPerMessage` records and `maxMessageBytes` bytes per message, written straight into large
 * shared buffers ("slabs"): a record is written once, where Kafka's client will read it, and a finished
 * message is a view of its slab, not a copy. Once every message of a slab was released (acknowledged
 * by Kafka), the slab is used again: a steady stream of records allocates no new memory, which keeps
 * V8's garbage collector out of the way (fresh buffers count as external memory, and every 64 MiB of it
 * forces a full collection).
 *
 * One builder serves every file of the agent, because reading is single-threaded: a file opens a
 * message with `begin`, appends records, and `flush`es before it yields. Should another file begin
 * while one is open, the open message is flushed to its owner first, so messages never mix files.
 */

const NEWLINE = 0x0a;
const EMPTY = Buffer.alloc(0);

/**
 * Receives a finished message: its bytes, and the smallest file offset of the records in it. `release`
 * must be called once when the bytes are no longer needed (Kafka acknowledged them); until then they
 * stay untouched. A message never released (shutdown) only keeps its slab from being reused.
 */
export type MessageSink = (value: Buffer, minStart: number, release: () => void) => void;

/** Slabs kept for reuse at least, whatever `maxFreeBytes` says. */
const MIN_FREE_SLABS = 2;

interface Slab {
  bytes: Buffer;
  /** Messages handed out from this slab and not released yet. */
  outstanding: number;
}

export interface MessageBuilderOptions {
  maxMessageBytes: number;
  maxRecordsPerMessage: number;
  /** Size of the buffers messages are carved from; at least twice `maxMessageBytes` is used. */
  slabBytes: number;
  /**
   * Free slabs kept for reuse, in bytes (at least two slabs). The producer's bound on buffered bytes
   * is the right size: when Kafka acknowledges a burst, the slabs it frees are all needed again as
   * reading resumes. With two, a 3M-line benchmark allocated 14% of its slabs fresh, and the garbage
   * made V8's external memory swing by ~50 MiB between collections (RSS with it); with the buffer's
   * eight, 11 slabs in all and a flat ~25 MiB. `releasePooled` drops them when the agent is idle.
   */
  maxFreeBytes?: number;
}

export class MessageBuilder {
  private current: Slab;
  /** `current.bytes`, where the open message is written. */
  private slab: Buffer;
  private readonly free: Buffer[] = [];
  /** Where the next byte goes in `slab`. */
  private pos = 0;
  /** Start of the open message in `slab`. */
  private messageStart = 0;
  private records = 0;
  private minStart = 0;
  private sink: MessageSink | undefined;
  private readonly slabBytes: number;
  private readonly maxFreeSlabs: number;

  constructor(private readonly options: MessageBuilderOptions) {
    this.slabBytes = Math.max(options.slabBytes, 2 * options.maxMessageBytes);
    this.maxFreeSlabs = Math.max(MIN_FREE_SLABS, Math.floor((options.maxFreeBytes ?? 0) / this.slabBytes));
    this.slab = Buffer.allocUnsafe(this.slabBytes);
    this.current = { bytes: this.slab, outstanding: 0 };
  }

  /** Makes `sink` the owner of the records that follow (flushing another owner's open message). */
  begin(sink: MessageSink): void {
    if (this.sink !== sink) {
      this.flush();
      this.sink = sink;
    }
  }

  /**
   * Makes room for a record of at most `maxBytes` bytes and returns the buffer to write it into, at
   * `position`. Call `commit` with where the record ends.
   */
  reserve(maxBytes: number): Buffer {
    if (this.records >= this.options.maxRecordsPerMessage) this.flush();
    const needed = maxBytes + 1;
    if (this.pos + needed > this.slab.length) this.newSlab(needed);
    return this.slab;
  }

  /** Where `reserve`'s record starts. */
  get position(): number {
    return this.pos;
  }

  /**
   * Ends the record written at `position` up to `end` (exclusive), with `start` its file offset. A
   * record that does not fit in the open message's byte limit begins the next message.
   */
  commit(end: number, start: number): void {
    const recordStart = this.pos;
    this.slab[end] = NEWLINE;
    this.pos = end + 1;
    if (this.records > 0 && this.pos - this.messageStart > this.options.maxMessageBytes) this.emit(recordStart);
    if (this.records === 0 || start < this.minStart) this.minStart = start;
    this.records++;
  }

  /** Appends a record given as a string of `bytes` UTF-8 bytes. */
  append(json: string, bytes: number, start: number): void {
    const buffer = this.reserve(bytes);
    const end = this.pos + buffer.write(json, this.pos, 'utf8');
    this.commit(end, start);
  }

  /** Hands the open message, if any, to its owner. */
  flush(): void {
    if (this.records > 0) this.emit(this.pos);
  }

  /**
   * Lets go of the memory kept for reuse (the agent is idle): pooled slabs, and the current one if no
   * message is open or unacknowledged in it. The next record allocates a slab again.
   */
  releasePooled(): void {
    this.free.length = 0;
    if (this.records > 0 || this.current.outstanding > 0) return;
    this.slab = EMPTY;
    this.current = { bytes: EMPTY, outstanding: 0 };
    this.pos = 0;
    this.messageStart = 0;
  }

  /** Emits `[messageStart, end)` as one message; what follows `end` begins the next one. */
  private emit(end: number): void {
    const value = this.slab.subarray(this.messageStart, end);
    const minStart = this.minStart;
    const slab = this.current;
    slab.outstanding++;
    this.messageStart = end;
    this.records = 0;
    let released = false;
    this.sink?.(value, minStart, () => {
      if (released) return;
      released = true;
      slab.outstanding--;
      this.recycle(slab);
    });
  }

  /** Continues in another slab, taking the open message's bytes along so that it stays contiguous. */
  private newSlab(needed: number): void {
    const previous = this.current;
    const open = this.slab.subarray(this.messageStart, this.pos);
    const size = Math.max(this.slabBytes, open.length + needed);
    const bytes = (size === this.slabBytes ? this.free.pop() : undefined) ?? Buffer.allocUnsafe(size);
    open.copy(bytes, 0);
    this.current = { bytes, outstanding: 0 };
    this.slab = bytes;
    this.messageStart = 0;
    this.pos = open.length;
    this.recycle(previous);
  }

  /** Keeps a slab nobody uses any more for reuse (up to `maxFreeSlabs`; larger odd-sized ones are left to the GC). */
  private recycle(slab: Slab): void {
    if (slab.outstanding > 0 || slab === this.current || slab.bytes.length !== this.slabBytes || this.free.length >= this.maxFreeSlabs) return;
    this.free.push(slab.bytes);
  }
}

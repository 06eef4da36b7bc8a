/**
 * Large buffers kept for reuse. A fresh large buffer is fresh memory from the kernel, and its first
 * touch costs a page fault per 4 KiB: on this project's machines ~0.7 ms per MiB, ten times the copy
 * into it. A buffer handed back once nothing uses it any more is given out again instead.
 *
 * Buffers come in power-of-two sizes, with undefined contents (the caller writes before it reads).
 * The pool keeps at most `maxFreeBytes` of free buffers; `clear` lets go of them (when idle).
 * Only buffers this pool gave out and that are in use are taken back, so a stray or a second
 * `give` of the same buffer changes nothing.
 */
export interface BufferPoolOptions {
  /** Smallest buffer worth pooling; `take` of less still returns a pooled buffer of this size. */
  minBytes: number;
  /** Free bytes kept at most; a buffer given back beyond that is left to the garbage collector. */
  maxFreeBytes: number;
}

export interface BufferPoolStats {
  /** `take`s served by a free buffer. */
  reused: number;
  /** `take`s that allocated. */
  allocated: number;
  /** Bytes of free buffers held now. */
  freeBytes: number;
}

export class BufferPool {
  /** Free buffers by size. */
  private readonly free = new Map<number, Buffer[]>();
  /** Buffers given out and not back yet. */
  private readonly inUse = new WeakSet<Buffer>();
  private readonly counts = { reused: 0, allocated: 0 };
  private freeBytes = 0;

  constructor(private readonly options: BufferPoolOptions) {}

  /** A buffer of at least `size` bytes: the next power of two, at least `minBytes`. */
  take(size: number): Buffer {
    const capacity = Math.max(this.options.minBytes, nextPowerOfTwo(size));
    const buffer = this.free.get(capacity)?.pop();
    if (buffer) {
      this.freeBytes -= capacity;
      this.counts.reused++;
    } else {
      this.counts.allocated++;
    }
    const given = buffer ?? Buffer.allocUnsafeSlow(capacity);
    this.inUse.add(given);
    return given;
  }

  /** Hands back a buffer `take` returned, once nothing reads or writes it any more. */
  give(buffer: Buffer): void {
    if (!this.inUse.delete(buffer)) return;
    if (this.freeBytes + buffer.length > this.options.maxFreeBytes) return;
    let list = this.free.get(buffer.length);
    if (!list) {
      list = [];
      this.free.set(buffer.length, list);
    }
    list.push(buffer);
    this.freeBytes += buffer.length;
  }

  /** Lets go of every free buffer. */
  clear(): void {
    this.free.clear();
    this.freeBytes = 0;
  }

  get stats(): BufferPoolStats {
    return { ...this.counts, freeBytes: this.freeBytes };
  }
}

function nextPowerOfTwo(value: number): number {
  return value <= 1 ? 1 : 2 ** Math.ceil(Math.log2(value));
}

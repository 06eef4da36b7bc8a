/**
 * Per file: which byte offset is safe to checkpoint. A line counts as shipped only once Kafka acked the
 * message that carries it; messages complete out of order (a merged partial line completes after lines
 * that follow it in the file), so the safe offset is the smallest start offset still outstanding, or,
 * when nothing is outstanding, how far the file was read. A restart resumes there and loses nothing;
 * only lines after it that were already acked are read again (with the same event_id).
 */
export class FileProgress {
  /** Min-heap of outstanding start offsets; a start may be outstanding more than once. */
  private readonly heap: number[] = [];
  private readonly counts = new Map<number, number>();
  private outstandingCount = 0;

  /** Registers work that starts at `start` and is not yet acknowledged. */
  add(start: number): void {
    const count = this.counts.get(start);
    if (count === undefined) {
      this.counts.set(start, 1);
      this.push(start);
    } else {
      this.counts.set(start, count + 1);
    }
    this.outstandingCount++;
  }

  /** Marks one unit of work registered at `start` as acknowledged. */
  ack(start: number): void {
    const count = this.counts.get(start);
    if (count === undefined) throw new Error(`ack for offset ${start} that is not outstanding`);
    if (count === 1) this.counts.delete(start);
    else this.counts.set(start, count - 1);
    this.outstandingCount--;
  }

  get outstanding(): number {
    return this.outstandingCount;
  }

  /** Smallest outstanding start, if any. */
  minOutstanding(): number | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0] as number;
      if (this.counts.has(top)) return top;
      this.pop();
    }
    return undefined;
  }

  /**
   * The offset a checkpoint may record: nothing before it is unacknowledged.
   * @param readOffset how far the file has been consumed (parsed and handed on, or skipped)
   * @param pendingStart start of a line still being assembled (partial chunks, multiline), if any
   */
  safeOffset(readOffset: number, pendingStart?: number): number {
    let safe = readOffset;
    const min = this.minOutstanding();
    if (min !== undefined && min < safe) safe = min;
    if (pendingStart !== undefined && pendingStart < safe) safe = pendingStart;
    return safe;
  }

  private push(value: number): void {
    const heap = this.heap;
    heap.push(value);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as number) <= value) break;
      heap[i] = heap[parent] as number;
      i = parent;
    }
    heap[i] = value;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let i = 0;
    const n = heap.length;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && (heap[right] as number) < (heap[left] as number) ? right : left;
      if ((heap[child] as number) >= last) break;
      heap[i] = heap[child] as number;
      i = child;
    }
    heap[i] = last;
  }
}

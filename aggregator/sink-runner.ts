/**
 * Drives one sink: batches the records routed to it per topic-partition (max bytes, max records,
 * max age), sends batches in offset order with at most one send per partition in flight and at most
 * `concurrency` partitions in flight, retries with jittered backoff, writes refused records to the
 * dead letter, and acknowledges each delivered batch's offset range. Sinks only say how a send went.
 */
import { ErrorCode, isRetriable, SinkError, describeError } from '../shared/errors.js';
import { RateLimitedLog, type Logger } from '../shared/logger.js';
import { abortableSleep, backoffDelayMs } from '../shared/retry.js';
import type { DeadLetter, DeadLetterQueue } from './dead-letter.js';
import type { AggregatorMetrics } from './metrics.js';
import { partitionKey } from './offset-tracker.js';
import type { RecordFilter } from './routing.js';
import { DeadLetterReason, lineBytes, lineOf, type Batch, type RejectedRecord, type SendResult, type Sink, type SinkRecord } from './sink.js';

export interface SinkRunnerOptions {
  readonly maxBatchBytes: number;
  readonly maxBatchRecords: number;
  readonly maxBatchAgeMs: number;
  /** Partitions with a send in flight at once. */
  readonly concurrency: number;
  readonly retryInitialDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly filter?: RecordFilter;
}

export interface SinkRunnerDeps {
  readonly deadLetters: DeadLetterQueue;
  readonly metrics: AggregatorMetrics;
  readonly logger: Logger;
  /** The sink wrote everything of the partition before `endOffset`. */
  readonly onAck: (topic: string, partition: number, endOffset: number) => void;
}

interface OpenBatch {
  readonly topic: string;
  readonly partition: number;
  readonly firstOffset: number;
  endOffset: number;
  records: SinkRecord[];
  bytes: number;
  readonly openedAtMs: number;
}

interface PartitionLane {
  readonly topic: string;
  readonly partition: number;
  open: OpenBatch | undefined;
  readonly sealed: Batch[];
  sending: boolean;
  /** The last high watermark seen for the partition. */
  highWatermark: number | undefined;
}

const ERROR_LOG_INTERVAL_MS = 30_000;

export class SinkRunner {
  private lanes = new Map<string, PartitionLane>();
  private inFlight = 0;
  private waiting: PartitionLane[] = [];
  /** While true (a rebalance), nothing is sent; batches wait for `resume`. */
  private suspended = false;
  /** Aborted on reset and at the shutdown deadline: in-flight sends of the old state stop. */
  private controller = new AbortController();
  /** Sends of the current state, so a reset can wait for them to settle before new sends start. */
  private readonly running = new Set<Promise<void>>();
  private openBytesTotal = 0;
  private readonly ageTimer: NodeJS.Timeout;
  private readonly errorLog: RateLimitedLog;
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly sink: Sink,
    private readonly options: SinkRunnerOptions,
    private readonly deps: SinkRunnerDeps,
  ) {
    this.errorLog = new RateLimitedLog(deps.logger, ERROR_LOG_INTERVAL_MS);
    const tickMs = Math.max(10, Math.min(1_000, Math.floor(options.maxBatchAgeMs / 4)));
    this.ageTimer = setInterval(() => {
      this.sealExpired(Date.now());
    }, tickMs);
    this.ageTimer.unref();
  }

  get name(): string {
    return this.sink.name;
  }

  /** Bytes in batches still open (not yet handed to the sink). */
  get openBytes(): number {
    return this.openBytesTotal;
  }

  /**
   * Records of messages `[firstOffset, endOffset)` of a partition; the runner keeps those its filter
   * accepts. Offsets must follow the previous call's `endOffset` for the partition.
   */
  append(topic: string, partition: number, firstOffset: number, endOffset: number, records: readonly SinkRecord[], highWatermark?: number): void {
    const lane = this.lane(topic, partition);
    if (highWatermark !== undefined) lane.highWatermark = Math.max(lane.highWatermark ?? 0, highWatermark);
    let open = lane.open;
    if (open === undefined) {
      open = { topic, partition, firstOffset, endOffset, records: [], bytes: 0, openedAtMs: Date.now() };
      lane.open = open;
    }
    const filter = this.options.filter;
    const { maxBatchRecords, maxBatchBytes } = this.options;
    for (const record of records) {
      if (filter !== undefined && !filter(record.fields)) continue;
      // Batches are cut between messages only: a message's records share one offset, and a batch
      // acknowledges whole offsets.
      const bytes = lineBytes(record);
      const newMessage = open.records.length > 0 && record.offset !== open.records[open.records.length - 1]?.offset;
      if (newMessage && record.offset > open.firstOffset && (open.records.length + 1 > maxBatchRecords || open.bytes + bytes > maxBatchBytes)) {
        open.endOffset = record.offset;
        this.seal(lane);
        open = { topic, partition, firstOffset: record.offset, endOffset, records: [], bytes: 0, openedAtMs: Date.now() };
        lane.open = open;
      }
      open.records.push(record);
      open.bytes += bytes;
      this.openBytesTotal += bytes;
    }
    open.endOffset = endOffset;
    if (open.records.length >= this.options.maxBatchRecords || open.bytes >= this.options.maxBatchBytes) this.seal(lane);
  }

  /** Seals the largest open batch (memory pressure: fetching waits for bytes to be written). */
  sealLargest(): boolean {
    let largest: PartitionLane | undefined;
    for (const lane of this.lanes.values()) {
      if (lane.open && lane.open.bytes > (largest?.open?.bytes ?? 0)) largest = lane;
    }
    if (largest === undefined) return false;
    this.seal(largest);
    return true;
  }

  /** Seals every open batch (shutdown, or a partition's data must go now). */
  sealAll(): void {
    for (const lane of this.lanes.values()) if (lane.open) this.seal(lane);
  }

  /** Resolves when every sealed batch was delivered (or the state was reset). */
  async drained(): Promise<void> {
    if (this.isIdle()) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops sending until {@link resume}: in-flight sends are aborted and awaited, and their batches stay,
   * first in their lanes, with every open and sealed batch. Used when a rebalance starts: partitions
   * may move, and none must be written while another member may own it.
   */
  async suspend(): Promise<void> {
    this.suspended = true;
    this.controller.abort(new SinkError('sends stopped for a rebalance', { code: ErrorCode.ABORTED }));
    this.controller = new AbortController();
    await Promise.allSettled([...this.running]);
  }

  /**
   * Drops the partitions `keep` refuses (they moved to another member), batches included, and tells
   * the sink to release them. Call while suspended, once {@link suspend} resolved.
   */
  retain(keep: (topic: string, partition: number) => boolean): void {
    for (const [key, lane] of this.lanes) {
      if (keep(lane.topic, lane.partition)) continue;
      this.lanes.delete(key);
      this.openBytesTotal -= lane.open?.bytes ?? 0;
      this.sink.release(lane.topic, lane.partition);
    }
    this.waiting = this.waiting.filter((lane) => this.lanes.get(partitionKey(lane.topic, lane.partition)) === lane);
    if (this.isIdle()) this.notifyIdle();
  }

  /** Sends again after {@link suspend}: the kept partitions' batches, in offset order as before. */
  resume(): void {
    this.suspended = false;
    for (const lane of this.lanes.values()) this.schedule(lane);
  }

  /**
   * Forgets every partition: in-flight sends are aborted and awaited, batches dropped, the sink told
   * to release each partition. Used when the member lost its membership (fetching restarts from the
   * committed offsets).
   */
  async reset(): Promise<void> {
    this.suspended = false;
    this.controller.abort(new SinkError('partition state reset (rebalance)', { code: ErrorCode.ABORTED }));
    this.controller = new AbortController();
    const lanes = this.lanes;
    this.lanes = new Map();
    this.waiting.length = 0;
    this.openBytesTotal = 0;
    await Promise.allSettled([...this.running]);
    for (const lane of lanes.values()) this.sink.release(lane.topic, lane.partition);
    this.notifyIdle();
  }

  /** Stops for good: aborts what is in flight (shutdown deadline). */
  async close(): Promise<void> {
    clearInterval(this.ageTimer);
    this.controller.abort(new SinkError('sink runner closed', { code: ErrorCode.ABORTED }));
    await Promise.allSettled([...this.running]);
    this.notifyIdle();
  }

  private lane(topic: string, partition: number): PartitionLane {
    const key = partitionKey(topic, partition);
    let lane = this.lanes.get(key);
    if (lane === undefined) {
      lane = { topic, partition, open: undefined, sealed: [], sending: false, highWatermark: undefined };
      this.lanes.set(key, lane);
    }
    return lane;
  }

  private sealExpired(nowMs: number): void {
    for (const lane of this.lanes.values()) {
      if (lane.open && nowMs - lane.open.openedAtMs >= this.options.maxBatchAgeMs) this.seal(lane);
    }
  }

  private seal(lane: PartitionLane): void {
    const open = lane.open;
    if (open === undefined) return;
    lane.open = undefined;
    this.openBytesTotal -= open.bytes;
    lane.sealed.push({
      topic: open.topic,
      partition: open.partition,
      firstOffset: open.firstOffset,
      endOffset: open.endOffset,
      records: open.records,
      bytes: open.bytes,
      ...(lane.highWatermark === undefined ? {} : { highWatermark: Math.max(lane.highWatermark, open.endOffset) }),
    });
    this.schedule(lane);
  }

  private schedule(lane: PartitionLane): void {
    if (this.suspended || lane.sending || lane.sealed.length === 0) return;
    if (this.inFlight >= this.options.concurrency) {
      if (!this.waiting.includes(lane)) this.waiting.push(lane);
      return;
    }
    this.start(lane);
  }

  private start(lane: PartitionLane): void {
    lane.sending = true;
    this.inFlight++;
    const lanes = this.lanes;
    const signal = this.controller.signal;
    const task = this.deliver(lane, signal)
      .catch((error: unknown) => {
        // Only an abort ends a delivery early; the batch stays for the next owner of the partition.
        if (!signal.aborted) this.deps.logger.error({ err: error, sink: this.name }, 'sink delivery stopped unexpectedly');
      })
      .finally(() => {
        this.running.delete(task);
        lane.sending = false;
        this.inFlight--;
        if (this.lanes === lanes && !signal.aborted) this.schedule(lane);
        this.next();
        if (this.isIdle()) this.notifyIdle();
      });
    this.running.add(task);
  }

  private next(): void {
    while (!this.suspended && this.inFlight < this.options.concurrency) {
      const lane = this.waiting.shift();
      if (lane === undefined) return;
      if (!lane.sending && lane.sealed.length > 0) this.start(lane);
    }
  }

  /** Sends the lane's oldest sealed batch until delivered; one attempt after another, with backoff. */
  private async deliver(lane: PartitionLane, signal: AbortSignal): Promise<void> {
    const original = lane.sealed[0];
    if (original === undefined) return;
    const { metrics } = this.deps;
    const startedAt = performance.now();
    let batch: Batch = original;
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) return;
      const result = await this.attempt(batch, signal);
      if (isAborted(signal)) return;
      if (result.status === 'delivered') {
        await this.deadLetter(result.rejected ?? [], signal);
        if (result.retried) metrics.retries.inc({ sink: this.name }, result.retried);
        if (result.replaysDropped) metrics.replaysDropped.inc({ sink: this.name }, result.replaysDropped);
        break;
      }
      if (result.status === 'rejected') {
        metrics.sinkErrors.inc({ sink: this.name, result: 'rejected' });
        this.errorLog.warn(`rejected:${result.error.code}`, { sink: this.name, err: result.error, records: batch.records.length }, `sink ${this.name} refused a batch; its records go to the dead letter`);
        await this.deadLetter(
          batch.records.map((record) => ({ record, reason: DeadLetterReason.REJECTED, detail: describeError(result.error) })),
          signal,
        );
        break;
      }
      metrics.sinkErrors.inc({ sink: this.name, result: 'retryable' });
      metrics.retries.inc({ sink: this.name });
      await this.deadLetter(result.rejected ?? [], signal);
      if (result.pending !== undefined) batch = { ...batch, records: result.pending, bytes: sumBytes(result.pending) };
      const delayMs = Math.max(result.retryAfterMs ?? 0, backoffDelayMs(attempt, { initialDelayMs: this.options.retryInitialDelayMs, maxDelayMs: this.options.retryMaxDelayMs }));
      this.errorLog.warn(`retry:${result.error.code}`, { sink: this.name, err: result.error, attempt: attempt + 1, delayMs }, `sink ${this.name} failed; retrying`);
      try {
        await abortableSleep(delayMs, signal);
      } catch {
        return; // aborted: reset or shutdown deadline
      }
    }
    lane.sealed.shift();
    const nowMs = Date.now();
    metrics.flushSeconds.observe({ sink: this.name }, (performance.now() - startedAt) / 1000);
    metrics.batchRecords.observe({ sink: this.name }, original.records.length);
    metrics.batchBytes.observe({ sink: this.name }, original.bytes);
    metrics.recordsOut.inc({ sink: this.name }, original.records.length);
    metrics.bytesOut.inc({ sink: this.name }, original.bytes);
    const delay = metrics.endToEndDelay.labels({ sink: this.name });
    // Once per Kafka message (its first record): a message's records were written together, and a
    // histogram observation per record cost more than the rest of the acknowledgement.
    let lastOffset = -1;
    for (const record of original.records) {
      if (record.offset === lastOffset) continue;
      lastOffset = record.offset;
      delay.observe((nowMs - record.fields.timeMs) / 1000);
    }
    this.deps.onAck(original.topic, original.partition, original.endOffset);
  }

  private async attempt(batch: Batch, signal: AbortSignal): Promise<SendResult> {
    try {
      return await this.sink.send(batch, signal);
    } catch (error) {
      const retriable = isRetriable(error);
      const wrapped = new SinkError(`sink ${this.name}: ${describeError(error)}`, { code: retriable ? ErrorCode.SINK_UNAVAILABLE : ErrorCode.SINK_REJECTED, retriable, cause: error });
      return retriable ? { status: 'retryable', error: wrapped } : { status: 'rejected', error: wrapped };
    }
  }

  private async deadLetter(rejected: readonly RejectedRecord[], signal: AbortSignal): Promise<void> {
    if (rejected.length === 0) return;
    const letters: DeadLetter[] = rejected.map(({ record, reason, detail }) => ({
      reason,
      detail,
      sink: this.name,
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      index: record.index,
      line: lineOf(record),
    }));
    await this.deps.deadLetters.send(letters, signal);
    for (const letter of letters) this.deps.metrics.deadLetters.inc({ reason: letter.reason, sink: this.name });
    this.errorLog.warn(`dead-letter:${rejected[0]?.reason ?? ''}`, { sink: this.name, records: rejected.length, example: rejected[0]?.detail }, `sink ${this.name}: records sent to the dead letter`);
  }

  private isIdle(): boolean {
    if (this.inFlight > 0) return false;
    for (const lane of this.lanes.values()) if (lane.sealed.length > 0) return false;
    return true;
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

function sumBytes(records: readonly SinkRecord[]): number {
  let total = 0;
  for (const record of records) total += lineBytes(record);
  return total;
}

/** Read through a call: the signal aborts while awaits are pending. */
function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

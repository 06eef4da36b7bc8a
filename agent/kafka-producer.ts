/**
 * The agent's producer: kafkajs behind small accumulators that batch messages by bytes and linger
 * time, send them idempotently with acks=all, call each message's `onAck` once Kafka acknowledged it,
 * and bound the bytes they hold: when Kafka is slow or away, `waitForCapacity` makes the readers wait
 * instead of memory growing.
 */
import { CompressionTypes, type Kafka, type Message, type Producer, type TopicMessages } from 'kafkajs';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { abortableSleep, backoffDelayMs } from '../shared/retry.js';

export interface ProducerOptions {
  /** A batch is sent once it holds this many bytes (or lingerMs passed). */
  maxBatchBytes: number;
  /** How long the first message of a batch may wait for more. */
  lingerMs: number;
  /** Bytes held (queued + in flight) above which readers are paused. */
  maxBufferedBytes: number;
  compression: 'gzip' | 'none';
  /** Backoff between attempts of a failed batch; attempts never stop (lines are never dropped). */
  retryInitialDelayMs: number;
  retryMaxDelayMs: number;
  /** Lanes: idempotent producers with one request in flight each; a key always takes the same lane. */
  producers: number;
}

export interface OutgoingMessage {
  topic: string;
  key: string;
  value: Buffer | string;
  /** Bytes this message accounts for in the buffer bound. */
  size: number;
  headers?: Record<string, string>;
  /** Called once, after Kafka acknowledged the message. */
  onAck: () => void;
}

export interface ProducerStats {
  messagesAcked: number;
  bytesAcked: number;
  batchesSent: number;
  sendFailures: number;
}

/**
 * The agent's producer: `options.producers` lanes, each an idempotent kafkajs producer with one
 * request in flight. A pod's messages (one key) always take the same lane, so per-pod order holds
 * through retries; with more than one lane, one request is encoded and compressed while another
 * waits for the broker. The bound on buffered bytes is shared by all lanes.
 */
export class AgentProducer {
  readonly stats: ProducerStats = { messagesAcked: 0, bytesAcked: 0, batchesSent: 0, sendFailures: 0 };
  private readonly lanes: ProducerLane[];
  private readonly buffer: SharedBuffer;
  private closed = false;

  constructor(kafka: Kafka, options: ProducerOptions, logger: Logger, onSendFailure: (error: unknown) => void = () => undefined) {
    this.buffer = new SharedBuffer(options.maxBufferedBytes);
    const lanes = Math.max(1, options.producers);
    this.lanes = Array.from(
      { length: lanes },
      (_, lane) => new ProducerLane(kafka, options, lanes === 1 ? logger : logger.child({ lane }), this.buffer, this.stats, onSendFailure),
    );
  }

  async connect(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.connect()));
  }

  /** Every lane's kafkajs producer is connected. */
  get isConnected(): boolean {
    return this.lanes.every((lane) => lane.connected);
  }

  /** Bytes queued or in flight. */
  get bufferedBytes(): number {
    return this.buffer.bytes;
  }

  hasCapacity(): boolean {
    return this.buffer.hasCapacity();
  }

  /** Resolves when the buffer has room again (or at once if it has). */
  waitForCapacity(): Promise<void> {
    return this.buffer.waitForCapacity();
  }

  /** Queues a message; the caller should have waited for capacity. */
  enqueue(message: OutgoingMessage): void {
    if (this.closed) throw new Error('producer closed');
    this.laneFor(message.key).enqueue(message);
  }

  /** Sends everything queued now and resolves once all of it was acknowledged. */
  async flush(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.flush()));
  }

  /** Stops: waits for queued messages for at most as long as `signal` allows, then disconnects. */
  async close(signal?: AbortSignal): Promise<void> {
    if (!this.closed) {
      const flushed = this.flush();
      await (signal ? Promise.race([flushed, abortPromise(signal)]) : flushed);
    }
    this.closed = true;
    this.buffer.close();
    await Promise.all(this.lanes.map((lane) => lane.close()));
  }

  private laneFor(key: string): ProducerLane {
    return this.lanes[laneIndex(key, this.lanes.length)] as ProducerLane;
  }
}

/** The lane of a key: FNV-1a over its UTF-16 code units, modulo the number of lanes. */
export function laneIndex(key: string, lanes: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % lanes;
}

/** The bytes all lanes hold (queued + in flight), and the readers waiting for room. */
class SharedBuffer {
  bytes = 0;
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(private readonly maxBytes: number) {}

  hasCapacity(): boolean {
    return this.bytes < this.maxBytes;
  }

  /** Resolves when there is room again, or at once if there is (or the producer closed). */
  waitForCapacity(): Promise<void> {
    if (this.hasCapacity() || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  add(bytes: number): void {
    this.bytes += bytes;
  }

  release(bytes: number): void {
    this.bytes -= bytes;
    this.wake();
  }

  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    if (!this.hasCapacity() && !this.closed) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}

/**
 * One idempotent kafkajs producer behind an accumulator that batches messages by bytes and linger
 * time and sends one batch at a time; a failed batch is retried with backoff, never dropped.
 */
class ProducerLane {
  connected = false;
  private queue: OutgoingMessage[] = [];
  private queuedBytes = 0;
  private sending = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private readonly producer: Producer;
  private readonly stopSending = new AbortController();

  constructor(
    kafka: Kafka,
    private readonly options: ProducerOptions,
    private readonly logger: Logger,
    private readonly buffer: SharedBuffer,
    private readonly stats: ProducerStats,
    private readonly onSendFailure: (error: unknown) => void,
  ) {
    this.producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: true,
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: options.retryInitialDelayMs, maxRetryTime: options.retryMaxDelayMs },
    });
    this.producer.on(this.producer.events.CONNECT, () => (this.connected = true));
    this.producer.on(this.producer.events.DISCONNECT, () => (this.connected = false));
  }

  async connect(): Promise<void> {
    await this.producer.connect();
    this.connected = true;
  }

  enqueue(message: OutgoingMessage): void {
    this.queue.push(message);
    this.queuedBytes += message.size;
    this.buffer.add(message.size);
    if (this.queuedBytes >= this.options.maxBatchBytes) this.kick();
    else this.lingerTimer ??= setTimeout(() => this.kick(), this.options.lingerMs);
  }

  async flush(): Promise<void> {
    this.kick();
    if (this.queue.length === 0 && !this.sending) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.stopSending.abort();
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    await this.producer.disconnect();
  }

  private kick(): void {
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
    if (this.sending || this.queue.length === 0) return;
    this.sending = true;
    void this.sendLoop();
  }

  /** One batch at a time until the queue is empty. */
  private async sendLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.stopSending.signal.aborted) {
        const batch = this.takeBatch();
        let attempt = 0;
        for (;;) {
          try {
            await this.producer.sendBatch({
              topicMessages: toTopicMessages(batch),
              acks: -1,
              compression: this.options.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
            });
            break;
          } catch (error) {
            this.stats.sendFailures++;
            this.onSendFailure(error);
            const delayMs = backoffDelayMs(attempt++, { initialDelayMs: this.options.retryInitialDelayMs, maxDelayMs: this.options.retryMaxDelayMs });
            this.logger.warn({ err: error, attempt, delayMs, messages: batch.length }, `send to Kafka failed, retrying: ${describeError(error)}`);
            try {
              await abortableSleep(delayMs, this.stopSending.signal);
            } catch {
              return;
            }
          }
        }
        let bytes = 0;
        for (const message of batch) {
          bytes += message.size;
          message.onAck();
        }
        this.stats.messagesAcked += batch.length;
        this.stats.bytesAcked += bytes;
        this.stats.batchesSent++;
        this.buffer.release(bytes);
        // Wait for a fuller batch unless there is already enough, or the linger time runs out.
        if (this.queue.length > 0 && this.queuedBytes < this.options.maxBatchBytes && this.idleWaiters.length === 0) {
          this.lingerTimer ??= setTimeout(() => this.kick(), this.options.lingerMs);
          return;
        }
      }
    } finally {
      this.sending = false;
      if (this.queue.length === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      } else if (this.idleWaiters.length > 0 && !this.stopSending.signal.aborted) {
        this.kick();
      }
    }
  }

  private takeBatch(): OutgoingMessage[] {
    let bytes = 0;
    let count = 0;
    while (count < this.queue.length && (count === 0 || bytes < this.options.maxBatchBytes)) {
      bytes += (this.queue[count] as OutgoingMessage).size;
      count++;
    }
    const batch = this.queue.slice(0, count);
    this.queue = this.queue.slice(count);
    this.queuedBytes -= bytes;
    return batch;
  }
}

function toTopicMessages(batch: OutgoingMessage[]): TopicMessages[] {
  const byTopic = new Map<string, Message[]>();
  for (const m of batch) {
    let messages = byTopic.get(m.topic);
    if (!messages) {
      messages = [];
      byTopic.set(m.topic, messages);
    }
    messages.push({ key: m.key, value: m.value, headers: m.headers });
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}

function abortPromise(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

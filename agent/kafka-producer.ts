/**
 * The agent's producer: kafkajs behind a small accumulator that batches messages by bytes and linger
 * time, sends one batch at a time (idempotent, acks=all, so per-partition order holds), calls each
 * message's `onAck` once Kafka acknowledged it, and bounds the bytes it holds: when Kafka is slow or
 * away, `waitForCapacity` makes the readers wait instead of memory growing.
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

export class AgentProducer {
  private queue: OutgoingMessage[] = [];
  private queuedBytes = 0;
  private inFlightBytes = 0;
  private sending = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private capacityWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private closed = false;
  private connected = false;
  readonly stats: ProducerStats = { messagesAcked: 0, bytesAcked: 0, batchesSent: 0, sendFailures: 0 };
  private readonly producer: Producer;
  private readonly stopSending = new AbortController();

  constructor(
    kafka: Kafka,
    private readonly options: ProducerOptions,
    private readonly logger: Logger,
    private readonly onSendFailure: (error: unknown) => void = () => undefined,
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

  get isConnected(): boolean {
    return this.connected;
  }

  /** Bytes queued or in flight. */
  get bufferedBytes(): number {
    return this.queuedBytes + this.inFlightBytes;
  }

  hasCapacity(): boolean {
    return this.bufferedBytes < this.options.maxBufferedBytes;
  }

  /** Resolves when the buffer has room again (or at once if it has). */
  waitForCapacity(): Promise<void> {
    if (this.hasCapacity() || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.capacityWaiters.push(resolve));
  }

  /** Queues a message; the caller should have waited for capacity. */
  enqueue(message: OutgoingMessage): void {
    if (this.closed) throw new Error('producer closed');
    this.queue.push(message);
    this.queuedBytes += message.size;
    if (this.queuedBytes >= this.options.maxBatchBytes) this.kick();
    else this.lingerTimer ??= setTimeout(() => this.kick(), this.options.lingerMs);
  }

  /** Sends everything queued now and resolves once all of it was acknowledged. */
  async flush(): Promise<void> {
    this.kick();
    if (this.queue.length === 0 && !this.sending) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops: waits for queued messages for at most as long as `signal` allows, then disconnects. */
  async close(signal?: AbortSignal): Promise<void> {
    if (!this.closed) {
      const flushed = this.flush();
      await (signal ? Promise.race([flushed, abortPromise(signal)]) : flushed);
    }
    this.closed = true;
    this.stopSending.abort();
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.wakeCapacityWaiters();
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

  /** One batch at a time until the queue is empty; a failed batch is retried with backoff, never dropped. */
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
        this.inFlightBytes -= bytes;
        this.stats.messagesAcked += batch.length;
        this.stats.bytesAcked += bytes;
        this.stats.batchesSent++;
        this.wakeCapacityWaiters();
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
    this.inFlightBytes += bytes;
    return batch;
  }

  private wakeCapacityWaiters(): void {
    if (!this.hasCapacity() && !this.closed) return;
    const waiters = this.capacityWaiters;
    this.capacityWaiters = [];
    for (const resolve of waiters) resolve();
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

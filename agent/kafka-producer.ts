/**
 * The agent's producer: kafkajs behind a small accumulator that batches messages by bytes and linger
 * time, calls each message's `onAck` once Kafka acknowledged it, and bounds the bytes it holds: when
 * Kafka is slow or away, `waitForCapacity` makes the readers wait instead of memory growing.
 *
 * An idempotent kafkajs producer has one request in flight per broker, and compresses a batch only
 * once the previous one was acknowledged: alone, it leaves the agent's core idle for every round trip.
 * So messages are spread over `parallelProducers` lanes, each an idempotent producer sending one batch
 * at a time (acks=all), while the others compress or wait for the broker. A message's lane follows
 * from its key (the pod uid): one pod's messages always take the same lane, in order, so per-pod
 * (per-partition) order holds as with a single producer.
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
  /** Idempotent producers sending in parallel, each with one request in flight. */
  parallelProducers: number;
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
  private readonly lanes: ProducerLane[];
  private capacityWaiters: (() => void)[] = [];
  private closed = false;
  readonly stats: ProducerStats = { messagesAcked: 0, bytesAcked: 0, batchesSent: 0, sendFailures: 0 };
  /** Aborted on close: lanes stop retrying. */
  readonly stopSending = new AbortController();

  constructor(
    kafka: Kafka,
    readonly options: ProducerOptions,
    readonly logger: Logger,
    readonly onSendFailure: (error: unknown) => void = () => undefined,
  ) {
    const lanes = Math.max(1, options.parallelProducers);
    this.lanes = Array.from({ length: lanes }, () => new ProducerLane(this, kafka));
  }

  async connect(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.connect()));
  }

  get isConnected(): boolean {
    return this.lanes.every((lane) => lane.connected);
  }

  /** Bytes queued or in flight. */
  get bufferedBytes(): number {
    let bytes = 0;
    for (const lane of this.lanes) bytes += lane.bufferedBytes;
    return bytes;
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
    this.laneOf(message.key).enqueue(message);
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
    this.stopSending.abort();
    for (const lane of this.lanes) lane.stopTimer();
    this.wakeCapacityWaiters();
    await Promise.all(this.lanes.map((lane) => lane.disconnect()));
  }

  /** Called by a lane when acknowledged messages left the buffer. */
  wakeCapacityWaiters(): void {
    if (!this.hasCapacity() && !this.closed) return;
    const waiters = this.capacityWaiters;
    this.capacityWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** The lane of a key: a string hash, so that a key always takes the same lane. */
  private laneOf(key: string): ProducerLane {
    const lanes = this.lanes;
    if (lanes.length === 1) return lanes[0] as ProducerLane;
    let hash = 0;
    for (let i = 0; i < key.length; i++) hash = (Math.imul(hash, 31) + key.charCodeAt(i)) | 0;
    return lanes[(hash >>> 0) % lanes.length] as ProducerLane;
  }
}

/** One idempotent kafkajs producer and the messages waiting for it; one batch in flight at a time. */
class ProducerLane {
  private queue: OutgoingMessage[] = [];
  private queuedBytes = 0;
  private inFlightBytes = 0;
  private sending = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  connected = false;
  private readonly producer: Producer;

  constructor(
    private readonly parent: AgentProducer,
    kafka: Kafka,
  ) {
    const { retryInitialDelayMs, retryMaxDelayMs } = parent.options;
    this.producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: true,
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: retryInitialDelayMs, maxRetryTime: retryMaxDelayMs },
    });
    this.producer.on(this.producer.events.CONNECT, () => (this.connected = true));
    this.producer.on(this.producer.events.DISCONNECT, () => (this.connected = false));
  }

  async connect(): Promise<void> {
    await this.producer.connect();
    this.connected = true;
  }

  async disconnect(): Promise<void> {
    await this.producer.disconnect();
  }

  get bufferedBytes(): number {
    return this.queuedBytes + this.inFlightBytes;
  }

  enqueue(message: OutgoingMessage): void {
    this.queue.push(message);
    this.queuedBytes += message.size;
    if (this.queuedBytes >= this.parent.options.maxBatchBytes) this.kick();
    else this.lingerTimer ??= setTimeout(() => this.kick(), this.parent.options.lingerMs);
  }

  async flush(): Promise<void> {
    this.kick();
    if (this.queue.length === 0 && !this.sending) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  stopTimer(): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  private kick(): void {
    this.stopTimer();
    if (this.sending || this.queue.length === 0) return;
    this.sending = true;
    void this.sendLoop();
  }

  /** One batch at a time until the queue is empty; a failed batch is retried with backoff, never dropped. */
  private async sendLoop(): Promise<void> {
    const { parent } = this;
    const { options, stats, stopSending } = parent;
    try {
      while (this.queue.length > 0 && !stopSending.signal.aborted) {
        const batch = this.takeBatch();
        let attempt = 0;
        for (;;) {
          try {
            await this.producer.sendBatch({
              topicMessages: toTopicMessages(batch),
              acks: -1,
              compression: options.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
            });
            break;
          } catch (error) {
            stats.sendFailures++;
            parent.onSendFailure(error);
            const delayMs = backoffDelayMs(attempt++, { initialDelayMs: options.retryInitialDelayMs, maxDelayMs: options.retryMaxDelayMs });
            parent.logger.warn({ err: error, attempt, delayMs, messages: batch.length }, `send to Kafka failed, retrying: ${describeError(error)}`);
            try {
              await abortableSleep(delayMs, stopSending.signal);
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
        stats.messagesAcked += batch.length;
        stats.bytesAcked += bytes;
        stats.batchesSent++;
        parent.wakeCapacityWaiters();
        // Wait for a fuller batch unless there is already enough, or the linger time runs out.
        if (this.queue.length > 0 && this.queuedBytes < options.maxBatchBytes && this.idleWaiters.length === 0) {
          this.lingerTimer ??= setTimeout(() => this.kick(), options.lingerMs);
          return;
        }
      }
    } finally {
      this.sending = false;
      if (this.queue.length === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      } else if (this.idleWaiters.length > 0 && !stopSending.signal.aborted) {
        this.kick();
      }
    }
  }

  private takeBatch(): OutgoingMessage[] {
    const maxBatchBytes = this.parent.options.maxBatchBytes;
    let bytes = 0;
    let count = 0;
    while (count < this.queue.length && (count === 0 || bytes < maxBatchBytes)) {
      bytes += (this.queue[count] as OutgoingMessage).size;
      count++;
    }
    const batch = this.queue.slice(0, count);
    this.queue = this.queue.slice(count);
    this.queuedBytes -= bytes;
    this.inFlightBytes += bytes;
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

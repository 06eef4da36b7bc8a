/**
 * The agent's producer: kafkajs behind small accumulators that batch messages by bytes and linger
 * time, send them idempotently with acks=all, call each message's `onAck` once Kafka acknowledged it,
 * and bound the bytes they hold: when Kafka is slow or away, `waitForCapacity` makes the readers wait
 * instead of memory growing.
 *
 * One topic that cannot take messages (missing while the brokers do not create topics, not
 * authorized, or rejecting a message as too large) holds back only its own messages: see
 * {@link AgentProducer} and docs/kafka-topics.md.
 */
import { CompressionTypes, type Kafka, type Message, type Producer, type TopicMessages } from 'kafkajs';
import { describeError } from '../shared/errors.js';
import { RateLimitedLog, type Logger } from '../shared/logger.js';
import { Field, LogField, RecordFlag } from '../shared/record.js';
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
  /** Whether a metadata request may create a missing topic (when the brokers allow it). Default true. */
  autoCreateTopics?: boolean;
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

/** Why a send failed: a small fixed set, used as a metric label. */
export const SEND_ERROR_REASONS = ['unknown_topic', 'not_authorized', 'message_too_large', 'other'] as const;
export type SendErrorReason = (typeof SEND_ERROR_REASONS)[number];

export interface ProducerStats {
  messagesAcked: number;
  bytesAcked: number;
  batchesSent: number;
  sendFailures: number;
  /** Failed sends by reason. */
  sendErrors: Record<SendErrorReason, number>;
  /** Messages cut in two (at a record boundary) because the broker found them too large. */
  messagesSplit: number;
  /** Records whose message was cut (and flagged `truncated`) because the broker found the record too large. */
  recordsTruncated: number;
  /** Records the broker refused even with an empty message: dropped, counted, logged. */
  recordsDropped: number;
}

/** A topic whose messages are held aside until it takes messages again. */
export interface StalledTopicInfo {
  topic: string;
  reason: SendErrorReason;
  /** Messages and bytes held. */
  messages: number;
  bytes: number;
  sinceMs: number;
}

/** Attempts kafkajs makes inside one send before the error reaches our loop (its own backoff). */
const CLIENT_RETRIES = 2;
/** Longest wait for a kafkajs client to disconnect; a broker that does not answer must not hold up a stop. */
const DISCONNECT_TIMEOUT_MS = 2_000;
/** A send error of one reason and topic is logged at most once per this interval. */
const ERROR_LOG_INTERVAL_MS = 30_000;

/** kafkajs error types that concern one topic, not the connection: the topic is set aside. */
const TOPIC_ERRORS: Readonly<Record<string, SendErrorReason>> = {
  UNKNOWN_TOPIC_OR_PARTITION: 'unknown_topic',
  LEADER_NOT_AVAILABLE: 'unknown_topic',
  INVALID_TOPIC_EXCEPTION: 'unknown_topic',
  TOPIC_AUTHORIZATION_FAILED: 'not_authorized',
  MESSAGE_TOO_LARGE: 'message_too_large',
  RECORD_LIST_TOO_LARGE: 'message_too_large',
};
/** Errors after which the idempotent producer's sequence state is unusable: a new client is made. */
const RENEW_ERRORS = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);

export interface SendFailure {
  reason: SendErrorReason;
  /** The error concerns the batch's topic(s), not the connection: retrying the same thing will not help. */
  topicScoped: boolean;
  /** The client's sequence state may no longer match the broker's: continue with a new client. */
  renewClient: boolean;
  /** The kafkajs error type, if any. */
  type: string | undefined;
}

/** Reads a kafkajs error (its type may sit on a cause: kafkajs wraps what it gives up on). */
export function classifySendError(error: unknown): SendFailure {
  let type: string | undefined;
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const t = (e as { type?: unknown }).type;
    if (typeof t === 'string') {
      type = t;
      break;
    }
    e = (e as { cause?: unknown; originalError?: unknown }).cause ?? (e as { originalError?: unknown }).originalError;
  }
  const topicReason = type === undefined ? undefined : TOPIC_ERRORS[type];
  return {
    reason: topicReason ?? 'other',
    topicScoped: topicReason !== undefined,
    // A missing or forbidden topic may stay in the client's metadata (kafkajs keeps the topics it was
    // asked for and fails every later refresh with them): a new client forgets it. A batch too large
    // was refused whole, and kafkajs rolled the sequence numbers of its request back: the same client
    // sends the healthy topics' messages again as duplicates the broker recognises.
    renewClient: (topicReason !== undefined && topicReason !== 'message_too_large') || (type !== undefined && RENEW_ERRORS.has(type)),
    type,
  };
}

/**
 * The agent's producer: `options.producers` lanes, each an idempotent kafkajs producer with one
 * request in flight. A pod's messages (one key) always take the same lane, so per-pod order holds
 * through retries; with more than one lane, one request is encoded and compressed while another
 * waits for the broker. The bound on buffered bytes is shared by all lanes.
 *
 * A batch that fails for one topic's reason is sent again topic by topic with a fresh client, so the
 * healthy topics' messages are acknowledged; a topic that still fails is *stalled*: its messages
 * leave the lanes (and the shared bound) for a queue of their own, retried with capped, jittered
 * backoff through a client of their own, and `isStalled` tells the readers to leave its files alone
 * until the queue drained. A message too large for the broker is split at record boundaries, and a
 * single record too large has its message cut and flagged: never retried as it is.
 */
export class AgentProducer {
  readonly stats: ProducerStats = {
    messagesAcked: 0,
    bytesAcked: 0,
    batchesSent: 0,
    sendFailures: 0,
    sendErrors: { unknown_topic: 0, not_authorized: 0, message_too_large: 0, other: 0 },
    messagesSplit: 0,
    recordsTruncated: 0,
    recordsDropped: 0,
  };
  private readonly lanes: ProducerLane[];
  private readonly buffer: SharedBuffer;
  private readonly stalled = new Map<string, StalledTopic>();
  private readonly stopSending = new AbortController();
  private readonly errorLog: RateLimitedLog;
  private closed = false;

  constructor(
    private readonly kafka: Kafka,
    private readonly options: ProducerOptions,
    private readonly logger: Logger,
    private readonly onSendFailure: (error: unknown, failure: SendFailure) => void = () => undefined,
  ) {
    this.buffer = new SharedBuffer(options.maxBufferedBytes);
    this.errorLog = new RateLimitedLog(logger, ERROR_LOG_INTERVAL_MS);
    const lanes = Math.max(1, options.producers);
    this.lanes = Array.from({ length: lanes }, (_, lane) => new ProducerLane(this, lanes === 1 ? logger : logger.child({ lane })));
  }

  async connect(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.client.connect()));
  }

  /** Every lane's kafkajs producer is connected. */
  get isConnected(): boolean {
    return this.lanes.every((lane) => lane.client.connected);
  }

  /** Bytes queued or in flight (not counting stalled topics' held messages). */
  get bufferedBytes(): number {
    return this.buffer.bytes;
  }

  /** Bytes held aside for stalled topics. */
  get stalledBytes(): number {
    let bytes = 0;
    for (const stall of this.stalled.values()) bytes += stall.bytes;
    return bytes;
  }

  hasCapacity(): boolean {
    return this.buffer.hasCapacity();
  }

  /** Resolves when the buffer has room again (or at once if it has). */
  waitForCapacity(): Promise<void> {
    return this.buffer.waitForCapacity();
  }

  /** Lets readers waiting for room go (they are stopping): later waits resolve at once. */
  stopWaiting(): void {
    this.buffer.close();
  }

  /** Whether `topic` is stalled: its files should not be read until it takes messages again. */
  isStalled(topic: string): boolean {
    return this.stalled.size > 0 && this.stalled.has(topic);
  }

  get anyStalled(): boolean {
    return this.stalled.size > 0;
  }

  /** The stalled topics, for metrics and health. */
  stalledTopics(): StalledTopicInfo[] {
    return [...this.stalled.values()].map((s) => ({ topic: s.topic, reason: s.reason, messages: s.held.length, bytes: s.bytes, sinceMs: s.sinceMs }));
  }

  /** Queues a message; the caller should have waited for capacity. */
  enqueue(message: OutgoingMessage): void {
    if (this.closed) throw new Error('producer closed');
    this.laneFor(message.key).enqueue(message);
  }

  /** Sends everything queued now and resolves once all of it was acknowledged or held aside for a stalled topic. */
  async flush(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.flush()));
  }

  /**
   * Stops: waits for queued messages for at most as long as `signal` allows, then stops every send
   * and disconnects (each client given at most a couple of seconds: an unreachable broker never
   * holds the stop up).
   */
  async close(signal?: AbortSignal): Promise<void> {
    if (!this.closed) {
      const flushed = this.flush();
      await (signal ? Promise.race([flushed, abortPromise(signal)]) : flushed);
    }
    this.closed = true;
    this.stopSending.abort();
    this.buffer.close();
    const clients = [...this.lanes.map((lane) => lane.client), ...[...this.stalled.values()].map((s) => s.client)];
    for (const stall of this.stalled.values()) clearTimeout(stall.timer);
    for (const lane of this.lanes) lane.stop();
    await Promise.all(clients.map((client) => client.disconnect()));
  }

  // ---- used by the lanes and the stalled topics ------------------------------------------------

  get producerOptions(): ProducerOptions {
    return this.options;
  }

  get signal(): AbortSignal {
    return this.stopSending.signal;
  }

  get sharedBuffer(): SharedBuffer {
    return this.buffer;
  }

  newClient(): ProducerClient {
    return new ProducerClient(this.kafka, this.options, this.logger);
  }

  /** Counts and logs (rate-limited per reason and topic) a failed send. */
  reportFailure(error: unknown, failure: SendFailure, topics: string[], messages: number): void {
    this.stats.sendFailures++;
    this.stats.sendErrors[failure.reason]++;
    this.onSendFailure(error, failure);
    const topic = topics.length === 1 ? topics[0] : undefined;
    this.errorLog.warn(`${failure.reason}:${topic ?? '*'}`, { err: error, topics, messages, kafkaError: failure.type }, `send to Kafka failed (${failure.reason}): ${describeError(error)}`);
  }

  /** Messages acknowledged: their callbacks, the stats, and (for lane messages) the shared bound. */
  acknowledge(messages: OutgoingMessage[], fromBuffer: boolean): void {
    let bytes = 0;
    for (const message of messages) {
      bytes += message.size;
      message.onAck();
    }
    this.stats.messagesAcked += messages.length;
    this.stats.bytesAcked += bytes;
    this.stats.batchesSent++;
    if (fromBuffer) this.buffer.release(bytes);
  }

  /**
   * Sets `messages` (all of `topic`, in order, taken from a lane) aside: they leave the shared bound
   * and queue behind the topic's earlier held messages.
   */
  hold(topic: string, messages: OutgoingMessage[], reason: SendErrorReason): void {
    if (messages.length === 0) return;
    let stall = this.stalled.get(topic);
    if (!stall) {
      stall = new StalledTopic(topic, reason, this.newClient());
      this.stalled.set(topic, stall);
      this.logger.warn({ topic, reason }, `topic ${topic} stalled (${reason}): its messages are held and its files paused; other topics keep flowing`);
      this.scheduleRetry(stall);
    }
    let bytes = 0;
    for (const message of messages) bytes += message.size;
    stall.held.push(...messages);
    stall.bytes += bytes;
    this.buffer.release(bytes);
  }

  private scheduleRetry(stall: StalledTopic): void {
    if (this.stopSending.signal.aborted) return;
    const delayMs = backoffDelayMs(stall.attempt++, { initialDelayMs: this.options.retryInitialDelayMs, maxDelayMs: this.options.retryMaxDelayMs });
    stall.timer = setTimeout(() => void this.retryStalled(stall), delayMs);
  }

  /** Sends a stalled topic's held messages in batches, oldest first; back to the backoff at its first failure. */
  private async retryStalled(stall: StalledTopic): Promise<void> {
    const signal = this.stopSending.signal;
    while (stall.held.length > 0 && !signal.aborted) {
      let bytes = 0;
      let count = 0;
      while (count < stall.held.length && (count === 0 || bytes < this.options.maxBatchBytes)) bytes += (stall.held[count++] as OutgoingMessage).size;
      const batch = stall.held.splice(0, count);
      stall.bytes -= bytes;
      const outcome = await sendTopic(this, stall.client, stall.topic, batch, signal, false);
      if (outcome.kind === 'acked') {
        stall.attempt = 0;
        continue;
      }
      // Back at the head of the queue, in order, with whatever arrived meanwhile behind them.
      let restBytes = 0;
      for (const message of outcome.rest) restBytes += message.size;
      stall.held.unshift(...outcome.rest);
      stall.bytes += restBytes;
      if (outcome.kind === 'held') stall.reason = outcome.reason;
      this.scheduleRetry(stall);
      return;
    }
    if (signal.aborted) return;
    this.stalled.delete(stall.topic);
    this.logger.info({ topic: stall.topic, stalledMs: Date.now() - stall.sinceMs }, `topic ${stall.topic} takes messages again`);
    void stall.client.disconnect();
    // The lanes may have messages queued to wait for fuller batches: nothing holds them now.
    for (const lane of this.lanes) lane.kick();
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

class StalledTopic {
  held: OutgoingMessage[] = [];
  bytes = 0;
  attempt = 0;
  timer: NodeJS.Timeout | undefined;
  readonly sinceMs = Date.now();

  constructor(
    readonly topic: string,
    public reason: SendErrorReason,
    /** Its own client: a topic the broker refuses must not enter the lanes' clients' metadata. */
    public client: ProducerClient,
  ) {}
}

/**
 * One idempotent kafkajs producer, connected on first use, replaceable: after an error that concerns
 * a topic, its client may keep that topic in the metadata it refreshes (kafkajs then fails every
 * send), and the idempotent sequence numbers of a request that failed halfway may no longer match the
 * broker's, so the sender continues with a new one (`renew`).
 */
class ProducerClient {
  connected = false;
  private producer: Producer;
  private ready: Promise<void> | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly options: ProducerOptions,
    private readonly logger: Logger,
  ) {
    this.producer = this.create();
  }

  connect(): Promise<void> {
    this.ready ??= this.producer.connect().then(
      () => {
        this.connected = true;
      },
      (error: unknown) => {
        this.ready = undefined;
        throw error;
      },
    );
    return this.ready;
  }

  async send(topicMessages: TopicMessages[]): Promise<void> {
    await this.connect();
    await this.producer.sendBatch({
      topicMessages,
      acks: -1,
      compression: this.options.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
    });
  }

  /** Continues with a new kafkajs producer, connecting now (a failure is retried at the next send); the old one is disconnected in the background. */
  renew(): void {
    const old = this.producer;
    this.producer = this.create();
    this.ready = undefined;
    this.connected = false;
    void disconnectWithin(old, this.logger);
    this.connect().catch((error: unknown) => this.logger.debug({ err: error }, 'Kafka client connect failed; retried at the next send'));
  }

  async disconnect(): Promise<void> {
    this.ready = undefined;
    await disconnectWithin(this.producer, this.logger);
  }

  private create(): Producer {
    const producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: this.options.autoCreateTopics ?? true,
      // Few attempts inside kafkajs: our own loop retries (the same batch, so the broker's
      // idempotence still drops what a timed-out attempt may have written), and sees topic errors.
      retry: { retries: CLIENT_RETRIES, initialRetryTime: Math.min(this.options.retryInitialDelayMs, 300), maxRetryTime: this.options.retryMaxDelayMs },
    });
    producer.on(producer.events.CONNECT, () => {
      if (this.producer === producer) this.connected = true;
    });
    producer.on(producer.events.DISCONNECT, () => {
      if (this.producer === producer) this.connected = false;
    });
    return producer;
  }
}

async function disconnectWithin(producer: Producer, logger: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      logger.warn({ timeoutMs: DISCONNECT_TIMEOUT_MS }, 'Kafka client did not disconnect in time; going on');
      resolve();
    }, DISCONNECT_TIMEOUT_MS);
    timer.unref();
  });
  await Promise.race([producer.disconnect().catch((error: unknown) => logger.debug({ err: error }, 'Kafka client disconnect failed')), timedOut]);
  clearTimeout(timer);
}

type TopicOutcome =
  | { kind: 'acked' }
  /** The topic refuses messages: `rest` (in order) were not sent. */
  | { kind: 'held'; reason: SendErrorReason; rest: OutgoingMessage[] }
  /** Stopped (shutdown) before `rest` were sent. */
  | { kind: 'stopped'; rest: OutgoingMessage[] };

/**
 * Sends one topic's messages until acknowledged. Connection-type failures are retried with backoff
 * (the same messages, so the broker's idempotence drops duplicates); a message too large is split, or
 * its record cut, and sent again; any other topic error returns the messages not sent.
 */
async function sendTopic(owner: AgentProducer, client: ProducerClient, topic: string, messages: OutgoingMessage[], signal: AbortSignal, fromBuffer: boolean): Promise<TopicOutcome> {
  const options = owner.producerOptions;
  for (let attempt = 0; ; ) {
    if (signal.aborted) return { kind: 'stopped', rest: messages };
    try {
      await client.send(toTopicMessages(messages));
      owner.acknowledge(messages, fromBuffer);
      return { kind: 'acked' };
    } catch (error) {
      const failure = classifySendError(error);
      owner.reportFailure(error, failure, [topic], messages.length);
      // (A function: the early return above narrowed `signal.aborted`, which the send may have changed.)
      if (failure.renewClient && !isAborted(signal)) client.renew();
      if (failure.reason === 'message_too_large') return sendSmaller(owner, client, topic, messages, signal, fromBuffer);
      if (failure.topicScoped) return { kind: 'held', reason: failure.reason, rest: messages };
      const delayMs = backoffDelayMs(attempt++, { initialDelayMs: options.retryInitialDelayMs, maxDelayMs: options.retryMaxDelayMs });
      try {
        await abortableSleep(delayMs, signal);
      } catch {
        return { kind: 'stopped', rest: messages };
      }
    }
  }
}

/** The broker found `messages` too large: send them in halves, a single message split in two, or a single record cut. */
async function sendSmaller(owner: AgentProducer, client: ProducerClient, topic: string, messages: OutgoingMessage[], signal: AbortSignal, fromBuffer: boolean): Promise<TopicOutcome> {
  let parts: OutgoingMessage[][];
  if (messages.length > 1) {
    const half = Math.ceil(messages.length / 2);
    parts = [messages.slice(0, half), messages.slice(half)];
  } else {
    const message = messages[0] as OutgoingMessage;
    const halves = splitMessage(message);
    if (halves) {
      owner.stats.messagesSplit++;
      parts = [[halves[0]], [halves[1]]];
    } else {
      const cut = cutRecord(message);
      if (!cut) {
        owner.stats.recordsDropped++;
        owner.reportFailure(new Error(`record refused as too large even with an empty message; dropped`), { reason: 'message_too_large', topicScoped: true, renewClient: false, type: 'MESSAGE_TOO_LARGE' }, [topic], 1);
        owner.acknowledge([message], fromBuffer);
        return { kind: 'acked' };
      }
      owner.stats.recordsTruncated++;
      parts = [[cut]];
    }
  }
  for (const [i, part] of parts.entries()) {
    const outcome = await sendTopic(owner, client, topic, part, signal, fromBuffer);
    if (outcome.kind !== 'acked') return { ...outcome, rest: [...outcome.rest, ...parts.slice(i + 1).flat()] };
  }
  return { kind: 'acked' };
}

/**
 * Splits a message of several NDJSON records at the record boundary nearest its middle; the halves
 * share its acknowledgement (the original `onAck` runs once both are acknowledged) and its size.
 */
export function splitMessage(message: OutgoingMessage): [OutgoingMessage, OutgoingMessage] | undefined {
  const value = typeof message.value === 'string' ? Buffer.from(message.value) : message.value;
  const middle = value.length >> 1;
  // A record boundary is the byte after a newline, strictly inside the value.
  let cut = value.lastIndexOf(0x0a, middle - 1) + 1;
  if (cut <= 0) cut = value.indexOf(0x0a, middle) + 1;
  if (cut <= 0 || cut >= value.length) return undefined;
  let pending = 2;
  const onAck = (): void => {
    if (--pending === 0) message.onAck();
  };
  const firstSize = Math.min(message.size, Math.round((message.size * cut) / value.length));
  return [
    { ...message, value: value.subarray(0, cut), size: firstSize, onAck },
    { ...message, value: value.subarray(cut), size: message.size - firstSize, onAck },
  ];
}

/**
 * A single record (one NDJSON line) with its message cut to half its length and flagged `truncated`;
 * undefined when there is nothing left to cut (or the value is not a record).
 */
export function cutRecord(message: OutgoingMessage): OutgoingMessage | undefined {
  const text = typeof message.value === 'string' ? message.value : message.value.toString('utf8');
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const body = record[Field.MESSAGE];
  if (typeof body !== 'string' || body.length === 0) return undefined;
  let end = body.length >> 1;
  // Never between the two halves of a surrogate pair.
  if (end > 0 && /[\uD800-\uDBFF]/.test(body.charAt(end - 1))) end--;
  record[Field.MESSAGE] = body.slice(0, end);
  const log = (typeof record[Field.LOG] === 'object' && record[Field.LOG] !== null ? record[Field.LOG] : (record[Field.LOG] = {})) as Record<string, unknown>;
  const flags = Array.isArray(log[LogField.FLAGS]) ? (log[LogField.FLAGS] as unknown[]) : [];
  if (!flags.includes(RecordFlag.TRUNCATED)) log[LogField.FLAGS] = [...flags, RecordFlag.TRUNCATED];
  const newline = text.endsWith('\n') ? '\n' : '';
  return { ...message, value: Buffer.from(`${JSON.stringify(record)}${newline}`) };
}

/**
 * One idempotent kafkajs producer behind an accumulator that batches messages by bytes and linger
 * time and sends one batch at a time; a failed batch is retried with backoff, never dropped.
 */
class ProducerLane {
  readonly client: ProducerClient;
  private queue: OutgoingMessage[] = [];
  private queuedBytes = 0;
  private sending = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private readonly options: ProducerOptions;
  private readonly buffer: SharedBuffer;

  constructor(
    private readonly owner: AgentProducer,
    private readonly logger: Logger,
  ) {
    this.options = owner.producerOptions;
    this.buffer = owner.sharedBuffer;
    this.client = owner.newClient();
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
    if ((this.queue.length === 0 && !this.sending) || this.owner.signal.aborted) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops the linger timer (the producer is closing). */
  stop(): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  kick(): void {
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
    if (this.sending || this.queue.length === 0 || this.owner.signal.aborted) return;
    this.sending = true;
    void this.sendLoop();
  }

  /** One batch at a time until the queue is empty. */
  private async sendLoop(): Promise<void> {
    const signal = this.owner.signal;
    try {
      while (this.queue.length > 0 && !signal.aborted) {
        const batch = this.takeBatch();
        if (batch.length > 0 && !(await this.deliver(batch, signal))) return;
        // Wait for a fuller batch unless there is already enough, or the linger time runs out.
        if (this.queue.length > 0 && this.queuedBytes < this.options.maxBatchBytes && this.idleWaiters.length === 0) {
          this.lingerTimer ??= setTimeout(() => this.kick(), this.options.lingerMs);
          return;
        }
      }
    } finally {
      if (signal.aborted) clearTimeout(this.lingerTimer);
      this.sending = false;
      if (this.queue.length === 0 || signal.aborted) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      } else if (this.idleWaiters.length > 0) {
        this.kick();
      }
    }
  }

  /**
   * Sends a batch until every message is acknowledged or held aside for its stalled topic. Returns
   * false when stopped first. A failure that concerns a topic sends the batch again topic by topic.
   */
  private async deliver(batch: OutgoingMessage[], signal: AbortSignal): Promise<boolean> {
    for (let attempt = 0; ; ) {
      try {
        await this.client.send(toTopicMessages(batch));
        this.owner.acknowledge(batch, true);
        return true;
      } catch (error) {
        const failure = classifySendError(error);
        const groups = groupByTopic(batch);
        this.owner.reportFailure(error, failure, [...groups.keys()], batch.length);
        if (failure.renewClient && !signal.aborted) this.client.renew();
        if (failure.topicScoped) return this.deliverByTopic(groups, signal);
        const delayMs = backoffDelayMs(attempt++, { initialDelayMs: this.options.retryInitialDelayMs, maxDelayMs: this.options.retryMaxDelayMs });
        this.logger.debug({ attempt, delayMs, messages: batch.length }, 'retrying a batch');
        try {
          await abortableSleep(delayMs, signal);
        } catch {
          return false;
        }
      }
    }
  }

  /** Each topic's messages on their own: acknowledged, or held aside with their topic. */
  private async deliverByTopic(groups: Map<string, OutgoingMessage[]>, signal: AbortSignal): Promise<boolean> {
    for (const [topic, messages] of groups) {
      if (this.owner.isStalled(topic)) {
        this.owner.hold(topic, messages, 'other');
        continue;
      }
      const outcome = await sendTopic(this.owner, this.client, topic, messages, signal, true);
      if (outcome.kind === 'stopped') return false;
      if (outcome.kind === 'held') this.owner.hold(topic, outcome.rest, outcome.reason);
    }
    return true;
  }

  /**
   * The next batch: queued messages up to maxBatchBytes. Messages of a stalled topic join its held
   * queue instead (in order, behind the ones held before).
   */
  private takeBatch(): OutgoingMessage[] {
    let bytes = 0;
    let count = 0;
    while (count < this.queue.length && (count === 0 || bytes < this.options.maxBatchBytes)) {
      bytes += (this.queue[count] as OutgoingMessage).size;
      count++;
    }
    let batch = this.queue.slice(0, count);
    this.queue = this.queue.slice(count);
    this.queuedBytes -= bytes;
    if (this.owner.anyStalled && batch.some((m) => this.owner.isStalled(m.topic))) {
      const kept: OutgoingMessage[] = [];
      for (const [topic, messages] of groupByTopic(batch)) {
        if (this.owner.isStalled(topic)) this.owner.hold(topic, messages, 'other');
        else kept.push(...messages);
      }
      batch = kept;
    }
    return batch;
  }
}

function groupByTopic(batch: OutgoingMessage[]): Map<string, OutgoingMessage[]> {
  const byTopic = new Map<string, OutgoingMessage[]>();
  for (const m of batch) {
    let messages = byTopic.get(m.topic);
    if (!messages) {
      messages = [];
      byTopic.set(m.topic, messages);
    }
    messages.push(m);
  }
  return byTopic;
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

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

function abortPromise(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

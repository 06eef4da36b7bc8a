/**
 * The dead-letter destination: a Kafka topic receiving every record the pipeline cannot deliver
 * (poison messages, records a sink refused for good), each with the reason and where it came from.
 * A dead letter is written (acks=all) before the offsets it covers are acknowledged, so a record is
 * never dropped silently: it is in a sink or in the dead-letter topic.
 */
import kafkajs, { type Kafka, type Producer } from 'kafkajs';
import { SinkError, ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { retry } from '../shared/retry.js';
import type { DeadLetterReason } from './sink.js';

// kafkajs is CommonJS; its enums are read from the default export.
const { ConfigResourceTypes } = kafkajs;

export interface DeadLetter {
  readonly reason: DeadLetterReason;
  readonly detail: string;
  /** The sink that refused the record; absent when it never reached one (poison). */
  readonly sink?: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly index: number;
  readonly line: Buffer;
}

export interface DeadLetterOptions {
  readonly topic: string;
  /** The original record is cut to this many bytes (flagged `record_truncated`). */
  readonly maxRecordBytes: number;
  /** Bytes of letters per produce request at most; lowered to the topic's `max.message.bytes`. */
  readonly maxRequestBytes: number;
  readonly retryInitialDelayMs: number;
  readonly retryMaxDelayMs: number;
}

/** Where letters go when Kafka refuses them for good (an S3 prefix). */
export interface DeadLetterFallback {
  /** Writes rendered letters (one JSON line each) durably; throws when it cannot. */
  write(key: string, lines: readonly string[], signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export interface DeadLetterDeps {
  readonly fallback?: DeadLetterFallback;
  /** Letters written to the fallback instead of the topic. */
  readonly onFallback?: (letters: number) => void;
}

/**
 * The key names the source record (and the sink that refused it). Dead letters are written at least
 * once: a partition re-read after a crash or rebalance dead-letters its poison again, under the same
 * key, so consumers (or log compaction) can drop the repeats.
 */
export function deadLetterKey(letter: DeadLetter): string {
  return `${letter.topic}/${String(letter.partition)}/${String(letter.offset)}/${String(letter.index)}/${letter.sink ?? ''}`;
}

/** Messages per produce request at most. */
const CHUNK = 500;
/** The broker's default `message.max.bytes` (a topic without its own `max.message.bytes`). */
export const DEFAULT_MESSAGE_MAX_BYTES = 1_048_588;
/** Room per request for the record batch header and per record for its framing (lengths, attributes, deltas). */
const BATCH_OVERHEAD_BYTES = 1_024;
const RECORD_OVERHEAD_BYTES = 64;
/** How long the topic's message limit is trusted before it is read again (dead letters are rare). */
const LIMIT_REFRESH_MS = 60_000;

/** A Kafka produce error that no retry can fix (a message too large, an authorization failure…). */
export function isPermanentProduceError(error: unknown): boolean {
  for (let e = error as { name?: unknown; retriable?: unknown; cause?: unknown; originalError?: unknown } | undefined, depth = 0; e && depth < 8; depth++) {
    if (e.name === 'KafkaJSNonRetriableError' && e.originalError === undefined) return true;
    if (e.name === 'KafkaJSProtocolError' && e.retriable === false) return true;
    e = (e.originalError ?? e.cause) as typeof e;
  }
  return false;
}

export class DeadLetterQueue {
  private readonly producer: Producer;
  private messageMaxBytes = DEFAULT_MESSAGE_MAX_BYTES;
  private limitReadAtMs = -Infinity;

  constructor(
    private readonly kafka: Kafka,
    private readonly options: DeadLetterOptions,
    private readonly logger: Logger,
    private readonly deps: DeadLetterDeps = {},
  ) {
    this.producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
  }

  get topic(): string {
    return this.options.topic;
  }

  /** Bytes of one produce request at most: the configured bound, under the topic's message limit. */
  get requestBytes(): number {
    return Math.min(this.options.maxRequestBytes, this.messageMaxBytes) - BATCH_OVERHEAD_BYTES;
  }

  async connect(): Promise<void> {
    await this.producer.connect();
    await this.readMessageLimit();
  }

  /** The topic's `max.message.bytes` (a whole record batch must fit it); the broker default when unknown. */
  async readMessageLimit(): Promise<void> {
    this.limitReadAtMs = Date.now();
    const admin = this.kafka.admin();
    try {
      await admin.connect();
      const described = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: this.options.topic, configNames: ['max.message.bytes'] }], includeSynonyms: false });
      const value = described.resources[0]?.configEntries.find((e) => e.configName === 'max.message.bytes')?.configValue;
      const bytes = Number(value);
      if (Number.isSafeInteger(bytes) && bytes > 4 * BATCH_OVERHEAD_BYTES) this.messageMaxBytes = bytes;
    } catch (error) {
      // Not created yet (it is on the first write) or not allowed to describe: the broker default.
      this.logger.debug({ err: error, topic: this.options.topic }, 'dead-letter topic limit unknown; assuming the broker default');
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  /**
   * Writes the letters in requests under the topic's message limit, each letter cut to fit, retrying
   * until Kafka acknowledges or `signal` aborts (then it throws). Letters Kafka refuses for good go to
   * the fallback destination (counted); without one, they are retried.
   */
  async send(letters: readonly DeadLetter[], signal: AbortSignal): Promise<void> {
    // Read again now and then: the topic may have been created (or changed) since.
    if (Date.now() - this.limitReadAtMs > LIMIT_REFRESH_MS) await this.readMessageLimit();
    const limit = this.requestBytes;
    const letterLimit = limit - RECORD_OVERHEAD_BYTES;
    let chunk: { key: string; value: string }[] = [];
    let bytes = 0;
    for (const letter of letters) {
      const key = deadLetterKey(letter);
      const value = this.render(letter, letterLimit - Buffer.byteLength(key));
      const size = Buffer.byteLength(key) + Buffer.byteLength(value) + RECORD_OVERHEAD_BYTES;
      if (chunk.length > 0 && (chunk.length >= CHUNK || bytes + size > limit)) {
        await this.produce(chunk, signal);
        chunk = [];
        bytes = 0;
      }
      chunk.push({ key, value });
      bytes += size;
    }
    if (chunk.length > 0) await this.produce(chunk, signal);
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
    await this.deps.fallback?.close();
  }

  private async produce(messages: { key: string; value: string }[], signal: AbortSignal): Promise<void> {
    const { fallback } = this.deps;
    let permanent: unknown;
    await retry(
      async () => {
        permanent = undefined;
        try {
          await this.producer.send({ topic: this.options.topic, acks: -1, messages });
        } catch (error) {
          if (isPermanentProduceError(error) && fallback !== undefined) {
            permanent = error;
            return;
          }
          throw error;
        }
      },
      {
        maxAttempts: Infinity,
        initialDelayMs: this.options.retryInitialDelayMs,
        maxDelayMs: this.options.retryMaxDelayMs,
        shouldRetry: () => true,
        signal,
        onRetry: (error, attempt, delayMs) => {
          this.logger.warn({ err: error, attempt, delayMs, topic: this.options.topic, permanent: isPermanentProduceError(error) }, 'dead-letter write failed; retrying');
        },
      },
    ).catch((error: unknown) => {
      throw new SinkError('dead-letter write abandoned', { code: ErrorCode.SINK_UNAVAILABLE, retriable: true, cause: error });
    });
    if (permanent === undefined || fallback === undefined) return;
    const first = messages[0];
    // Deterministic: a repeat of the same letters overwrites the same object.
    const key = `${(first?.key ?? 'letters').replaceAll('/', '+')}+${String(messages.length)}.ndjson`;
    this.logger.error({ err: permanent, topic: this.options.topic, letters: messages.length, key }, 'Kafka refused dead letters for good; writing them to the fallback destination');
    await retry(() => fallback.write(key, messages.map((m) => m.value), signal), {
      maxAttempts: Infinity,
      initialDelayMs: this.options.retryInitialDelayMs,
      maxDelayMs: this.options.retryMaxDelayMs,
      shouldRetry: () => true,
      signal,
      onRetry: (error, attempt, delayMs) => {
        this.logger.warn({ err: error, attempt, delayMs }, 'dead-letter fallback write failed; retrying');
      },
    }).catch((error: unknown) => {
      throw new SinkError('dead-letter fallback write abandoned', { code: ErrorCode.SINK_UNAVAILABLE, retriable: true, cause: error });
    });
    this.deps.onFallback?.(messages.length);
  }

  /** The letter as JSON of at most `maxBytes` bytes: the record is cut further when its escaping makes it longer. */
  private render(letter: DeadLetter, maxBytes: number): string {
    let recordBytes = Math.min(letter.line.length, this.options.maxRecordBytes);
    for (;;) {
      const truncated = letter.line.length > recordBytes;
      const text = JSON.stringify({
        reason: letter.reason,
        detail: letter.detail.length > 1_000 ? `${letter.detail.slice(0, 1_000)}…` : letter.detail,
        sink: letter.sink,
        source: { topic: letter.topic, partition: letter.partition, offset: letter.offset, index: letter.index },
        at: new Date().toISOString(),
        record: letter.line.subarray(0, recordBytes).toString('utf8'),
        record_truncated: truncated || undefined,
        record_bytes: letter.line.length,
      });
      const size = Buffer.byteLength(text);
      if (size <= maxBytes || recordBytes === 0) return text;
      // Each record byte cut removes at least one byte of JSON (escaping makes some six): cut by the
      // excess, plus a little for a character split at the cut, and check again.
      recordBytes = Math.max(0, recordBytes - (size - maxBytes) - 16);
    }
  }
}

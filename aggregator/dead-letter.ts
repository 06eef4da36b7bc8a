/**
 * The dead-letter destination: a Kafka topic receiving every record the pipeline cannot deliver
 * (poison messages, records a sink refused for good), each with the reason and where it came from.
 * A dead letter is written (acks=all) before the offsets it covers are acknowledged, so a record is
 * never dropped silently: it is in a sink or in the dead-letter topic.
 */
import type { Kafka, Producer } from 'kafkajs';
import { SinkError, ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { retry } from '../shared/retry.js';
import type { DeadLetterReason } from './sink.js';

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
  readonly retryInitialDelayMs: number;
  readonly retryMaxDelayMs: number;
}

/**
 * The key names the source record (and the sink that refused it). Dead letters are written at least
 * once: a partition re-read after a crash or rebalance dead-letters its poison again, under the same
 * key, so consumers (or log compaction) can drop the repeats.
 */
export function deadLetterKey(letter: DeadLetter): string {
  return `${letter.topic}/${String(letter.partition)}/${String(letter.offset)}/${String(letter.index)}/${letter.sink ?? ''}`;
}

/** Messages per produce request. */
const CHUNK = 500;

export class DeadLetterQueue {
  private readonly producer: Producer;

  constructor(
    kafka: Kafka,
    private readonly options: DeadLetterOptions,
    private readonly logger: Logger,
  ) {
    this.producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
  }

  get topic(): string {
    return this.options.topic;
  }

  async connect(): Promise<void> {
    await this.producer.connect();
  }

  /** Writes the letters, retrying until Kafka acknowledges or `signal` aborts (then it throws). */
  async send(letters: readonly DeadLetter[], signal: AbortSignal): Promise<void> {
    for (let i = 0; i < letters.length; i += CHUNK) {
      const messages = letters.slice(i, i + CHUNK).map((letter) => ({ key: deadLetterKey(letter), value: this.render(letter) }));
      await retry(
        async () => {
          await this.producer.send({ topic: this.options.topic, acks: -1, messages });
        },
        {
          maxAttempts: Infinity,
          initialDelayMs: this.options.retryInitialDelayMs,
          maxDelayMs: this.options.retryMaxDelayMs,
          shouldRetry: () => true,
          signal,
          onRetry: (error, attempt, delayMs) => {
            this.logger.warn({ err: error, attempt, delayMs, topic: this.options.topic }, 'dead-letter write failed; retrying');
          },
        },
      ).catch((error: unknown) => {
        throw new SinkError('dead-letter write abandoned', { code: ErrorCode.SINK_UNAVAILABLE, retriable: true, cause: error });
      });
    }
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }

  private render(letter: DeadLetter): string {
    const truncated = letter.line.length > this.options.maxRecordBytes;
    const record = (truncated ? letter.line.subarray(0, this.options.maxRecordBytes) : letter.line).toString('utf8');
    return JSON.stringify({
      reason: letter.reason,
      detail: letter.detail,
      sink: letter.sink,
      source: { topic: letter.topic, partition: letter.partition, offset: letter.offset, index: letter.index },
      at: new Date().toISOString(),
      record,
      record_truncated: truncated || undefined,
      record_bytes: letter.line.length,
    });
  }
}

/**
 * The project's one entry to kafkajs: connection settings (brokers, TLS, SASL) shared by the agent's
 * producer and the aggregator's consumer, and a factory that wires kafkajs logs into ours.
 */
import { promisify } from 'node:util';
import { unzip } from 'node:zlib';
import kafkajs, { Kafka, logLevel as KafkaLogLevel, type KafkaConfig, type SASLOptions } from 'kafkajs';
import Encoder from 'kafkajs/src/protocol/encoder.js';
import { BufferPool, type BufferPoolStats } from './buffer-pool.js';
import { GzipEngines } from './gzip-engines.js';

// kafkajs is CommonJS and builds these two exports in a way Node cannot detect as named ESM exports.
const { CompressionCodecs, CompressionTypes } = kafkajs;
import { z } from 'zod';
import { csvList } from './config.js';
import type { Logger } from './logger.js';
import { readTlsFile, resolveSecret, secretSchema } from './secrets.js';

/** The connection settings as a field set, so a binary can extend them with its own (producer, consumer). */
export const kafkaConnectionFields = {
    brokers: csvList(z.string().regex(/^[^:\s]+:\d+$/, 'expected host:port')).pipe(z.array(z.string()).min(1, 'at least one broker is required')).describe('Bootstrap brokers, host:port.'),
    clientId: z.string().min(1).default('logship').describe('Client id sent to the brokers (shows in broker logs and quotas).'),
    connectionTimeoutMs: z.number().int().min(100).default(10_000).describe('Time to establish a broker connection.'),
    requestTimeoutMs: z.number().int().min(100).default(30_000).describe('Time to wait for a broker response.'),
    tls: z
      .strictObject({
        enabled: z.boolean().default(false).describe('Connect with TLS.'),
        caFile: z.string().optional().describe('PEM file of the CA that signed the brokers\' certificates (default: system CAs).'),
        certFile: z.string().optional().describe('PEM client certificate, for mutual TLS.'),
        keyFile: z.string().optional().describe('PEM client key, for mutual TLS.'),
        rejectUnauthorized: z.boolean().default(true).describe('Verify the brokers\' certificates. Turn off only in tests.'),
        servername: z.string().optional().describe('Server name to verify, when it differs from the broker host.'),
      })
      .prefault({})
      .describe('TLS to the brokers.'),
    sasl: z
      .strictObject({
        mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).describe('SASL mechanism.'),
        username: z.string().min(1).describe('SASL user name.'),
        password: secretSchema.describe('SASL password: `value` (from an env override) or `file`.'),
      })
      .optional()
      .describe('SASL authentication; off when absent.'),
};

type KafkaConnectionShape = z.output<z.ZodObject<typeof kafkaConnectionFields>>;

/** Cross-field rules of the connection settings; apply with `.superRefine` wherever the fields are used. */
export function checkKafkaConnection(c: KafkaConnectionShape, ctx: z.RefinementCtx): void {
  if ((c.tls.certFile === undefined) !== (c.tls.keyFile === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['tls', c.tls.certFile === undefined ? 'certFile' : 'keyFile'], message: 'certFile and keyFile go together' });
  }
  if (c.sasl && c.sasl.password.value === undefined && c.sasl.password.file === undefined) {
    ctx.addIssue({ code: 'custom', path: ['sasl', 'password'], message: 'a SASL password is required (value or file)' });
  }
}

export const kafkaConnectionSchema = z.strictObject(kafkaConnectionFields).superRefine(checkKafkaConnection);

export type KafkaConnectionConfig = KafkaConnectionShape;

/** What kafkajs logs at warn level for every idempotent producer whose retries are bounded. */
const LIMITED_RETRIES_WARNING = 'Limiting retries for the idempotent producer may invalidate EoS guarantees';

export function createKafka(config: KafkaConnectionConfig, logger: Logger, settingPath = 'kafka'): Kafka {
  poolEncoderBuffers();
  const kafkaLogger = logger.child({ component: 'kafkajs' });
  const ssl = config.tls.enabled
    ? {
        rejectUnauthorized: config.tls.rejectUnauthorized,
        ca: readTlsFile(config.tls.caFile, `${settingPath}.tls.caFile`),
        cert: readTlsFile(config.tls.certFile, `${settingPath}.tls.certFile`),
        key: readTlsFile(config.tls.keyFile, `${settingPath}.tls.keyFile`),
        servername: config.tls.servername,
      }
    : undefined;
  let sasl: SASLOptions | undefined;
  if (config.sasl) {
    const password = resolveSecret(config.sasl.password, `${settingPath}.sasl.password`) ?? '';
    sasl = { mechanism: config.sasl.mechanism, username: config.sasl.username, password };
  }
  const kafkaConfig: KafkaConfig = {
    clientId: config.clientId,
    brokers: config.brokers,
    connectionTimeout: config.connectionTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    ssl,
    sasl,
    logLevel: KafkaLogLevel.WARN,
    logCreator: () => (entry) => {
      const { message, ...rest } = entry.log;
      const fields = { ...rest, namespace: entry.namespace };
      // The agent's producer bounds kafkajs's own retries on purpose and retries the same batch
      // itself (see agent/kafka-producer.ts): this warning, repeated per client, says nothing new.
      if (message === LIMITED_RETRIES_WARNING) {
        kafkaLogger.debug(fields, message);
        return;
      }
      switch (entry.level) {
        case KafkaLogLevel.ERROR:
          kafkaLogger.error(fields, message);
          break;
        case KafkaLogLevel.WARN:
          kafkaLogger.warn(fields, message);
          break;
        case KafkaLogLevel.INFO:
          kafkaLogger.info(fields, message);
          break;
        default:
          kafkaLogger.debug(fields, message);
      }
    },
  };
  return new Kafka(kafkaConfig);
}

/**
 * Output chunk of the reused gzip streams: a batch's compressed output fits one (log records
 * compress 5-30 times), and a stream writes into the rest of its chunk until it is full.
 */
const GZIP_CHUNK_BYTES = 64 * 1024;
/** gzip streams kept between batches (kafkajs compresses a request's partitions one after another). */
const GZIP_IDLE_STREAMS = 2;
const unzipAsync = promisify(unzip);

/** zlib's own default level (6), which kafkajs's built-in codec uses, until `setGzipLevel`. */
let gzipEngines = new GzipEngines({ level: -1, chunkBytes: GZIP_CHUNK_BYTES, maxIdle: GZIP_IDLE_STREAMS });

/**
 * Sets the gzip level kafkajs compresses with (process-wide; kafkajs has no per-producer setting).
 * Its built-in codec uses zlib's default, level 6; level 1 compresses about twice as fast for log
 * records at a slightly larger size. Decompression is the same for any level.
 */
export function setGzipLevel(level: number): void {
  gzipEngines.close();
  gzipEngines = new GzipEngines({ level, chunkBytes: GZIP_CHUNK_BYTES, maxIdle: GZIP_IDLE_STREAMS });
  installGzipCodec();
}

/** Encoder buffers at least this large come from `encoderBuffers`; smaller ones are cheap (malloc's heap). */
const POOLED_ENCODER_MIN_BYTES = 64 * 1024;
/**
 * Free encoder buffers kept between produce requests: a request's records (up to `maxBatchBytes`,
 * 1 MiB by default), their messages' encoders and the compressed batch's few copies fit several times.
 */
const POOLED_ENCODER_MAX_FREE_BYTES = 8 * 1024 * 1024;
const encoderBuffers = new BufferPool({ minBytes: POOLED_ENCODER_MIN_BYTES, maxFreeBytes: POOLED_ENCODER_MAX_FREE_BYTES });

/**
 * Makes kafkajs encode produce requests in reused memory, and write the records of a batch into a
 * buffer sized once.
 *
 * kafkajs builds a request as nested encoders, each a buffer that grows by doubling: every message
 * value is copied into a record encoder, the records into the batch, and the compressed batch through
 * five more encoders up to the request. Each of those buffers was fresh memory, and its first touch a
 * page fault per 4 KiB: that, not the copying, made kafkajs the largest part of the agent's CPU (the
 * agent runs with a low MALLOC_MMAP_THRESHOLD_ so that freed memory goes back to the system). Now:
 * - an encoder that grows to 64 KiB or more takes its buffer from a pool;
 * - an encoder written into another one (`writeEncoder`, `writeEncoderArray`) is never read again in
 *   kafkajs (each is built, measured and written once), so its buffer goes back to the pool then, and
 *   a compressed batch's input goes back once gzip is done with it;
 * - `writeEncoderArray` sizes its buffer once for the total instead of doubling and copying
 *   (for a 1 MiB batch that was ~2 MiB copied and ~4 MiB of fresh buffers).
 * Same bytes and the same checks as kafkajs's own methods. `releaseKafkaMemory` empties the pool.
 */
export function poolEncoderBuffers(): void {
  if (Encoder.prototype.writeEncoderArray === writeEncoderArrayPooled) return;
  Encoder.prototype.ensureAvailable = ensureAvailablePooled;
  Encoder.prototype.writeEncoder = writeEncoderPooled;
  Encoder.prototype.writeEncoderArray = writeEncoderArrayPooled;
}

/** Lets go of the free encoder buffers and the idle gzip streams (the agent is idle). */
export function releaseKafkaMemory(): void {
  encoderBuffers.clear();
  gzipEngines.close();
}

/** How often a large encoder buffer was reused or allocated; for tests and benchmarks. */
export function encoderBufferStats(): BufferPoolStats {
  return encoderBuffers.stats;
}

/** kafkajs's growth (the next power of two above what is needed), from the pool when large. */
function ensureAvailablePooled(this: Encoder, length: number): void {
  const needed = this.offset + length;
  if (needed <= this.buf.length) return;
  const size = Encoder.nextPowerOfTwo(needed);
  const grown = size >= POOLED_ENCODER_MIN_BYTES ? encoderBuffers.take(size) : Buffer.alloc(size);
  this.buf.copy(grown, 0, 0, this.offset);
  // The outgrown buffer is left to the collector: a view of it (`buffer`) may still be held.
  this.buf = grown;
}

function writeEncoderPooled(this: Encoder, value: unknown): Encoder {
  if (!isEncoder(value)) throw new Error('value should be an instance of Encoder');
  this.writeBufferInternal(value.buffer);
  encoderBuffers.give(value.buf);
  return this;
}

function writeEncoderArrayPooled(this: Encoder, value: unknown): Encoder {
  if (!Array.isArray(value) || !value.every(isEncoder)) throw new Error('all values should be an instance of Encoder[]');
  let total = 0;
  for (const encoder of value) total += encoder.offset;
  this.ensureAvailable(total);
  for (const encoder of value) {
    this.writeBufferInternal(encoder.buffer);
    encoderBuffers.give(encoder.buf);
  }
  return this;
}

/** kafkajs's own test of an encoder. */
function isEncoder(value: unknown): value is Encoder {
  return typeof value === 'object' && value !== null && Buffer.isBuffer((value as { buf?: unknown }).buf);
}

/** Installs our gzip codec for decompression (consumers): kafkajs's own inflates in 16 KiB chunks and joins them. */
export function useGzipDecompression(): void {
  installGzipCodec();
}

function installGzipCodec(): void {
  CompressionCodecs[CompressionTypes.GZIP] = () => ({
    compress: async (encoder: Encoder) => {
      const compressed = await gzipEngines.compress(encoder.buffer);
      encoderBuffers.give(encoder.buf);
      return compressed;
    },
    decompress: decompressGzip,
  });
}

/** zlib's smallest output chunk, and its default one. */
const MIN_CHUNK_BYTES = 64;
const DEFAULT_CHUNK_BYTES = 16 * 1024;
/** Deflate expands at most about 1032 times: a larger size claimed by a trailer is not believed. */
const MAX_DEFLATE_RATIO = 1032;
const MAX_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Inflates a fetched batch into one buffer of its exact size. A gzip stream ends with its
 * uncompressed size (ISIZE, RFC 1952): used as zlib's output chunk, the result comes back in one
 * chunk, without the copy that joins 16 KiB chunks (and their garbage). The size is only a hint:
 * a wrong one still inflates correctly, and a result much smaller than its chunk is copied out so
 * that it does not pin the larger allocation for as long as its messages are held.
 */
export async function decompressGzip(buffer: Buffer): Promise<Buffer> {
  const result = await unzipAsync(buffer, { chunkSize: outputChunkBytes(buffer) });
  return result.byteLength * 2 < result.buffer.byteLength && result.buffer.byteLength > DEFAULT_CHUNK_BYTES ? Buffer.from(result) : result;
}

function outputChunkBytes(buffer: Buffer): number {
  if (buffer.length < 18 || buffer[0] !== 0x1f || buffer[1] !== 0x8b) return DEFAULT_CHUNK_BYTES;
  const size = buffer.readUInt32LE(buffer.length - 4);
  if (size === 0 || size > buffer.length * MAX_DEFLATE_RATIO) return DEFAULT_CHUNK_BYTES;
  return Math.min(Math.max(size, MIN_CHUNK_BYTES), MAX_CHUNK_BYTES);
}

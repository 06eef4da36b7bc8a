/**
 * The project's one entry to kafkajs: connection settings (brokers, TLS, SASL) shared by the agent's
 * producer and the aggregator's consumer, and a factory that wires kafkajs logs into ours.
 */
import { promisify } from 'node:util';
import { gzip, unzip } from 'node:zlib';
import kafkajs, { Kafka, logLevel as KafkaLogLevel, type KafkaConfig, type SASLOptions } from 'kafkajs';

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

export function createKafka(config: KafkaConnectionConfig, logger: Logger, settingPath = 'kafka'): Kafka {
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

const gzipAsync = promisify(gzip);
/** Output chunk of the gzip stream: larger chunks mean fewer round trips from the zlib thread to JS. */
const GZIP_CHUNK_BYTES = 256 * 1024;
const unzipAsync = promisify(unzip);

/**
 * Sets the gzip level kafkajs compresses with (process-wide; kafkajs has no per-producer setting).
 * Its built-in codec uses zlib's default, level 6; level 1 compresses about twice as fast for log
 * records at a slightly larger size. Decompression is the same for any level.
 */
export function setGzipLevel(level: number): void {
  CompressionCodecs[CompressionTypes.GZIP] = () => ({
    compress: (encoder: { buffer: Buffer }) => gzipAsync(encoder.buffer, { level, chunkSize: GZIP_CHUNK_BYTES }),
    decompress: (buffer: Buffer) => unzipAsync(buffer),
  });
}

/**
 * The dead letters' fallback destination: gzip NDJSON objects under `<prefix>/_deadletter/` of an S3 sink's
 * bucket, for letters Kafka refuses for good. `_` keeps Hive and Athena out of the folder.
 */
import { gzipSync } from 'node:zlib';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../shared/s3.js';
import type { DeadLetterFallback } from './dead-letter.js';
import type { S3SinkOptions } from './sinks/s3-options.js';

export const DEAD_LETTER_FOLDER = '_deadletter';

export function deadLetterPrefix(prefix: string): string {
  return prefix === '' ? DEAD_LETTER_FOLDER : `${prefix}/${DEAD_LETTER_FOLDER}`;
}

export function createS3DeadLetterFallback(options: S3SinkOptions, settingPath: string): DeadLetterFallback {
  const client = createS3Client(options.connection, settingPath);
  const prefix = deadLetterPrefix(options.prefix);
  return {
    async write(key, lines, signal) {
      const body = gzipSync(`${lines.join('\n')}\n`);
      await client.send(new PutObjectCommand({ Bucket: options.bucket, Key: `${prefix}/${key}.gz`, Body: body, ContentType: 'application/gzip' }), { abortSignal: signal });
    },
    close() {
      client.destroy();
      return Promise.resolve();
    },
  };
}

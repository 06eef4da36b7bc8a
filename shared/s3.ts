/**
 * The project's one entry to the S3 SDK: endpoint, region, addressing and credentials, shared by the
 * S3 sink and the tools that read what it wrote.
 */
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import type { S3ConnectionConfig } from './s3-connection.js';
import { resolveSecret } from './secrets.js';

export function createS3Client(config: S3ConnectionConfig, settingPath = 's3'): S3Client {
  const options: S3ClientConfig = {
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    maxAttempts: config.maxAttempts,
    requestChecksumCalculation: config.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
    responseChecksumValidation: config.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
  };
  if (config.endpoint !== undefined) options.endpoint = config.endpoint;
  if (config.accessKeyId !== undefined) {
    options.credentials = {
      accessKeyId: config.accessKeyId,
      secretAccessKey: resolveSecret(config.secretAccessKey, `${settingPath}.secretAccessKey`) ?? '',
    };
  }
  return new S3Client(options);
}

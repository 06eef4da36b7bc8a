/**
 * The S3 connection settings (endpoint, region, addressing, credentials) as a config schema, apart
 * from the SDK: a config can be checked without loading the SDK.
 */
import { z } from 'zod';
import { secretSchema } from './secrets.js';

export const s3ConnectionSchema = z
  .strictObject({
    region: z.string().min(1).default('us-east-1').describe('AWS region of the bucket.'),
    endpoint: z.url().optional().describe('Custom endpoint for S3-compatible servers (MinIO, versitygw…); default is AWS.'),
    forcePathStyle: z.boolean().default(false).describe('Address buckets as `endpoint/bucket` instead of `bucket.endpoint`; needed by most S3-compatible servers.'),
    accessKeyId: z.string().min(1).optional().describe('Static access key id; when absent the default AWS credential chain is used (env, web identity / IRSA, instance profile).'),
    secretAccessKey: secretSchema.optional().describe('Static secret key, with accessKeyId: `value` (from an env override) or `file`.'),
    checksums: z
      .enum(['when_supported', 'when_required'])
      .default('when_supported')
      .describe('Request checksum calculation and response validation; `when_required` for servers that reject the SDK default CRC32 checksums.'),
    maxAttempts: z.number().int().min(1).default(3).describe('Attempts the SDK makes per request before the caller\'s own retry takes over.'),
  })
  .superRefine((c, ctx) => {
    const hasSecret = c.secretAccessKey?.value !== undefined || c.secretAccessKey?.file !== undefined;
    if ((c.accessKeyId !== undefined) !== hasSecret) {
      ctx.addIssue({ code: 'custom', path: [c.accessKeyId === undefined ? 'accessKeyId' : 'secretAccessKey'], message: 'accessKeyId and secretAccessKey go together' });
    }
  });

export type S3ConnectionConfig = z.output<typeof s3ConnectionSchema>;

/**
 * The S3 sink's settings as a config schema, apart from the sink: checking a config does not load the
 * AWS SDK, and an aggregator without an S3 sink never does (aggregator/pipeline.ts).
 */
import { z } from 'zod';
import { s3ConnectionSchema } from '../../shared/s3-connection.js';
import { BUCKET_NAME_PATTERN, defaultStatePrefix, KEY_PREFIX_PATTERN, PARTITION_COLUMNS } from '../s3-layout.js';

const MIB = 1024 * 1024;
/** S3's smallest part (all but the last) of a multipart upload. */
const MIN_PART_BYTES = 5 * MIB;
/** S3's largest part. */
const MAX_PART_BYTES = 5 * 1024 * MIB;

export const s3SinkOptionsSchema = z
  .strictObject({
    bucket: z.string().regex(BUCKET_NAME_PATTERN, 'not a valid S3 bucket name').describe('Bucket the objects are written to.'),
    prefix: z
      .string()
      .regex(KEY_PREFIX_PATTERN, 'segments of letters, digits and !_.*()- separated by single "/", without a leading or trailing "/"')
      .default('logs')
      .describe('Key prefix of the partition folders (the Athena table\'s LOCATION); empty for the bucket\'s root.'),
    statePrefix: z
      .string()
      .min(1)
      .regex(KEY_PREFIX_PATTERN, 'segments of letters, digits and !_.*()- separated by single "/", without a leading or trailing "/"')
      .optional()
      .describe('Key prefix of the per-partition state objects (the replay high-water marks); default `<prefix>/_state`. Must lie outside the partition folders.'),
    connection: s3ConnectionSchema.prefault({}).describe('Endpoint, region and credentials.'),
    gzipLevel: z
      .number()
      .int()
      .min(1)
      .max(9)
      .default(6)
      .describe('gzip level of the objects. Measured on records of real server logs: 6 makes objects 10-20% smaller than 3 for about three times the compression CPU (objects are stored, and scanned by Athena per byte, for their whole retention); 3 for the most records per core (1 is no faster and larger).'),
    multipartThresholdBytes: z
      .number()
      .int()
      .min(MIN_PART_BYTES)
      .default(16 * MIB)
      .describe('Objects larger than this (compressed) are written with a multipart upload.'),
    partSizeBytes: z.number().int().min(MIN_PART_BYTES).max(MAX_PART_BYTES).default(8 * MIB).describe('Part size of multipart uploads (at least 5 MiB).'),
    uploadConcurrency: z
      .number()
      .int()
      .min(1)
      .max(64)
      .default(4)
      .describe('Objects of one batch written in parallel; also the parts in flight per multipart upload.'),
  })
  .superRefine((o, ctx) => {
    const statePrefix = o.statePrefix ?? defaultStatePrefix(o.prefix);
    const partitionFolders = `${o.prefix === '' ? '' : `${o.prefix}/`}${PARTITION_COLUMNS[0]}=`;
    if (statePrefix === o.prefix || statePrefix.startsWith(partitionFolders)) {
      ctx.addIssue({ code: 'custom', path: ['statePrefix'], message: `must lie outside the partition folders (${partitionFolders}…) and differ from prefix` });
    }
  });

export type S3SinkOptions = z.output<typeof s3SinkOptionsSchema>;

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { createS3Client } from '../../shared/s3.js';
import { s3Config, uniqueName } from '../helpers/stack.js';

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

describe('S3 server (real MinIO) through shared/s3', () => {
  const config = s3Config();
  const s3 = createS3Client(config);
  const Bucket = config.bucket;
  const prefix = `${uniqueName('it-s3')}/`;

  after(async () => {
    const listed = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: prefix }));
    const keys = (listed.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (keys.length > 0) await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys } }));
    s3.destroy();
  });

  it('puts, lists and gets objects', async () => {
    const bodies = new Map<string, string>();
    for (const hour of ['00', '01', '02']) {
      const Key = `${prefix}dt=2026-11-22/hour=${hour}/part.ndjson`;
      const body = `{"hour":"${hour}"}\n`;
      bodies.set(Key, body);
      await s3.send(new PutObjectCommand({ Bucket, Key, Body: body, ContentType: 'application/x-ndjson' }));
    }
    const listed = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: `${prefix}dt=2026-11-22/` }));
    assert.deepEqual((listed.Contents ?? []).map((o) => o.Key).sort(), [...bodies.keys()].sort());
    for (const [Key, body] of bodies) {
      const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
      assert.equal(await got.Body?.transformToString(), body);
    }
  });

  it('assembles a multipart upload from its parts', async () => {
    const Key = `${prefix}big.bin`;
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(1024 * 1024 + 17)];
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }));
    assert.ok(created.UploadId);
    const etags = [];
    for (const [i, Body] of parts.entries()) {
      const part = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId: created.UploadId, PartNumber: i + 1, Body }));
      etags.push({ ETag: part.ETag, PartNumber: i + 1 });
    }
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: created.UploadId, MultipartUpload: { Parts: etags } }));
    assert.match(done.ETag ?? '', /-2"?$/, 'a multipart ETag names its part count');
    const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
    const bytes = await got.Body?.transformToByteArray();
    assert.ok(bytes);
    assert.equal(bytes.length, parts.reduce((sum, p) => sum + p.length, 0));
    assert.equal(sha256(bytes), sha256(Buffer.concat(parts)));
  });

  it('overwrites an object put again under the same key (replays do not add objects)', async () => {
    const Key = `${prefix}replay/topic+0+100.ndjson.gz`;
    await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'first\n' }));
    await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'second\n' }));
    const listed = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: `${prefix}replay/` }));
    assert.equal(listed.KeyCount, 1);
    assert.equal(await (await s3.send(new GetObjectCommand({ Bucket, Key }))).Body?.transformToString(), 'second\n');
  });
});

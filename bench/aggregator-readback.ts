/** Reading back what a run wrote (S3 lines, Elasticsearch documents) and cleaning it up. */
import { gunzipSync } from 'node:zlib';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';

// ---- reading back ---------------------------------------------------------------------------------

export async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<{ key: string; size: number }[]> {
  const keys: { key: string; size: number }[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push({ key: o.Key, size: o.Size ?? 0 });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

/** Every data object under the prefix is read and its lines counted. */
export async function countS3Lines(client: S3Client, bucket: string, prefix: string): Promise<{ lines: number; objects: number; compressedBytes: number }> {
  const objects = (await listKeys(client, bucket, prefix)).filter((o) => o.key.endsWith('.ndjson.gz'));
  let lines = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let o = objects[next++]; o !== undefined; o = objects[next++]) {
      const body = await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.key }));
      const text = gunzipSync(await (body.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
      for (let i = text.indexOf(0x0a); i !== -1; i = text.indexOf(0x0a, i + 1)) lines++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { lines, objects: objects.length, compressedBytes: objects.reduce((sum, o) => sum + o.size, 0) };
}

export async function deleteS3Prefix(client: S3Client, bucket: string, prefix: string): Promise<void> {
  for (let pass = 0; pass < 1_000; pass++) {
    const keys = await listKeys(client, bucket, prefix);
    if (keys.length === 0) return;
    for (let i = 0; i < keys.length; i += 1_000) {
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1_000).map((k) => ({ Key: k.key })) } }));
    }
  }
}

export async function countDocuments(client: Client, pattern: string): Promise<number> {
  await client.indices.refresh({ index: pattern, ignore_unavailable: true, allow_no_indices: true });
  return (await client.count({ index: pattern, ignore_unavailable: true, allow_no_indices: true })).count;
}

export async function deleteIndices(client: Client, prefix: string): Promise<void> {
  await client.indices.delete({ index: `${prefix}-*`, ignore_unavailable: true, allow_no_indices: true }).catch(() => undefined);
  await client.indices.deleteIndexTemplate({ name: prefix }).catch(() => undefined);
}

/** Reading back what landed: records in Kafka, rows in S3, documents in Elasticsearch, consumer lag. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Client as ElasticsearchClient } from '@elastic/elasticsearch';
import type { Admin, Consumer } from 'kafkajs';
import type { LogRecord } from '../../shared/record.js';
import type { RunNames } from './run-names.js';


/** Records (NDJSON lines) in the run's topics, read by a consumer group of its own. */
export class KafkaCounter {
  records = 0;
  private readonly byKey = new Map<string, number>();
  /** `topic/partition/offset` of every message counted: a message delivered again is not counted twice. */
  private readonly seen = new Set<string>();

  constructor(private readonly consumer: Consumer) {}

  async start(topics: string[]): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const position = `${topic}/${String(partition)}/${message.offset}`;
        if (this.seen.has(position)) return;
        this.seen.add(position);
        const value = message.value?.toString('utf8') ?? '';
        let count = 0;
        for (const line of value.split('\n')) if (line !== '') count++;
        this.records += count;
        const key = message.key?.toString('utf8') ?? '';
        this.byKey.set(key, (this.byKey.get(key) ?? 0) + count);
      },
    });
  }

  /** The agent keys messages by pod uid. */
  shipped(podUid: string): boolean {
    return (this.byKey.get(podUid) ?? 0) > 0;
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}

interface S3Object {
  etag: string;
  gzipped: Buffer;
  lines: string[];
}

/** Every NDJSON object under the run's prefix; only new or changed objects are downloaded again. */
export class S3Rows {
  private readonly objects = new Map<string, S3Object>();

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly prefix: string,
  ) {}

  async refresh(): Promise<void> {
    let token: string | undefined;
    const seen = new Set<string>();
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}/`, ContinuationToken: token }));
      for (const object of page.Contents ?? []) {
        const key = object.Key;
        if (key === undefined || !key.endsWith('.ndjson.gz')) continue;
        seen.add(key);
        const etag = object.ETag ?? '';
        if (this.objects.get(key)?.etag === etag) continue;
        const body = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
        const gzipped = Buffer.from(await (body.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
        this.objects.set(key, { etag, gzipped, lines: gunzipSync(gzipped).toString('utf8').split('\n').filter((l) => l !== '') });
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    for (const key of this.objects.keys()) if (!seen.has(key)) this.objects.delete(key);
  }

  get objectCount(): number {
    return this.objects.size;
  }

  get rowCount(): number {
    let rows = 0;
    for (const object of this.objects.values()) rows += object.lines.length;
    return rows;
  }

  *records(): Generator<LogRecord> {
    for (const object of this.objects.values()) for (const line of object.lines) yield JSON.parse(line) as LogRecord;
  }

  /** Writes the objects under `dir`, keeping their keys (and so the Hive layout). */
  async download(dir: string): Promise<void> {
    for (const [key, object] of this.objects) {
      const file = join(dir, key);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, object.gzipped);
    }
  }

  async deleteAll(): Promise<void> {
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}/` }));
      const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
      if (keys.length === 0) return;
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys } }));
    }
  }
}

export async function countDocuments(es: ElasticsearchClient, pattern: string, refresh = false): Promise<number> {
  if (refresh) await es.indices.refresh({ index: pattern, ignore_unavailable: true, allow_no_indices: true });
  return (await es.count({ index: pattern, ignore_unavailable: true, allow_no_indices: true })).count;
}

/** Messages between each partition's committed offset (or its start) and its end. */
async function consumerLag(admin: Admin, groupId: string, topics: string[]): Promise<number> {
  const committed = new Map<string, number>();
  for (const t of await admin.fetchOffsets({ groupId, topics })) {
    for (const p of t.partitions) committed.set(`${t.topic}/${String(p.partition)}`, Number(p.offset));
  }
  let lag = 0;
  for (const topic of topics) {
    for (const p of await admin.fetchTopicOffsets(topic)) {
      const from = Math.max(committed.get(`${topic}/${String(p.partition)}`) ?? -1, Number(p.low));
      lag += Math.max(0, Number(p.high) - from);
    }
  }
  return lag;
}

/** The group's lag once it reached 0, or as last measured after 20 s (null when it could not be read). */
export async function settledLag(admin: Admin, names: RunNames, signal: AbortSignal): Promise<number | null> {
  let lag: number | null = null;
  const deadline = Date.now() + 20_000;
  while (lag !== 0 && Date.now() < deadline) {
    lag = await consumerLag(admin, names.groupId, names.topics).catch(() => null);
    if (lag !== 0) await sleep(250, undefined, { signal });
  }
  return lag;
}

/** Deletes consumer groups that exist (a group whose consumer never joined has nothing to delete). */
export async function deleteGroups(admin: Admin, groupIds: string[]): Promise<void> {
  const existing = new Set((await admin.listGroups()).groups.map((g) => g.groupId));
  const present = groupIds.filter((id) => existing.has(id));
  if (present.length > 0) await admin.deleteGroups(present);
}

/** Messages in a topic (0 when it does not exist): each dead letter is one message. */
export async function topicMessages(admin: Admin, topic: string): Promise<number> {
  if (!(await admin.listTopics()).includes(topic)) return 0;
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
}

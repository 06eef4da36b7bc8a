/**
 * What aggregator tests need: records in the topic format the agent writes, a config file for the
 * real binary, and readers of what landed in S3, Elasticsearch and the dead-letter topic.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';
import type { Kafka, Producer } from 'kafkajs';
import { stringify } from 'yaml';
import { deleteTopics as deleteStackTopics } from '../../scripts/stack/topics.js';
import { createKafka } from '../../shared/kafka.js';
import type { LogRecord } from '../../shared/record.js';
import { createS3Client } from '../../shared/s3.js';
import { startLogshipProcess, type LogshipProcess } from './process.js';
import { elasticsearchConfig, kafkaConfig, s3Config, stack, testLogger, uniqueName, waitFor } from './stack.js';

export const TEST_CLUSTER = 'it';

/** A record as the agent writes it; `n` makes its event_id and message unique. */
export function logRecord(n: number, namespace: string, timeMs: number, extra: { pod?: string; labels?: Record<string, string> } = {}): LogRecord {
  const pod = extra.pod ?? `api-${String(n % 4)}`;
  return {
    '@timestamp': new Date(timeMs).toISOString().replace('Z', '123456Z'),
    message: `message ${String(n)}`,
    stream: 'stdout',
    event_id: `ev-${String(n)}`,
    kubernetes: {
      cluster: TEST_CLUSTER,
      node: 'it-node',
      namespace,
      pod,
      pod_uid: `uid-${pod}`,
      container: 'app',
      labels: extra.labels ?? { app: 'api' },
      annotations: {},
      namespace_labels: {},
    },
    log: { file: `/var/log/pods/${namespace}_${pod}_uid/app/0.log`, offset: n * 100 },
  };
}

/** Produces records in the agent's topic format: each message holds `perMessage` NDJSON lines. */
export class RecordProducer {
  private readonly kafka: Kafka = createKafka(kafkaConfig({ clientId: 'logship-it-producer' }), testLogger());
  private readonly producer: Producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });

  async connect(): Promise<void> {
    await this.producer.connect();
  }

  async createTopics(topics: { topic: string; partitions: number }[]): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: topics.map((t) => ({ topic: t.topic, numPartitions: t.partitions })), waitForLeaders: true });
    } finally {
      await admin.disconnect();
    }
  }

  async deleteTopics(topics: string[]): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      await deleteStackTopics(admin, { names: topics });
    } finally {
      await admin.disconnect();
    }
  }

  async send(topic: string, records: readonly LogRecord[], perMessage = 10): Promise<void> {
    const messages: { key: string; value: string }[] = [];
    for (let i = 0; i < records.length; i += perMessage) {
      const group = records.slice(i, i + perMessage);
      messages.push({ key: group[0]?.kubernetes.pod_uid ?? 'k', value: group.map((r) => `${JSON.stringify(r)}\n`).join('') });
    }
    for (let i = 0; i < messages.length; i += 500) {
      await this.producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500) });
    }
  }

  async sendRaw(topic: string, values: (string | Buffer)[]): Promise<void> {
    await this.producer.send({ topic, acks: -1, messages: values.map((value) => ({ value })) });
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }
}

export interface AggregatorTestConfig {
  groupId: string;
  topicPattern?: string;
  topics?: string[];
  s3Prefix?: string;
  esIndexPrefix?: string;
  deadLetterTopic: string;
  /** Extra settings merged into each sink (e.g. routing, batch). */
  s3Sink?: Record<string, unknown>;
  esSink?: Record<string, unknown>;
  extra?: Record<string, unknown>;
}

export function aggregatorConfigFile(options: AggregatorTestConfig): string {
  const s3 = stack().s3;
  const sinks: Record<string, unknown>[] = [];
  if (options.s3Prefix !== undefined) {
    sinks.push({
      name: 'archive',
      type: 's3',
      batch: { maxAgeMs: 1_000 },
      retry: { initialDelayMs: 100, maxDelayMs: 1_000 },
      s3: {
        bucket: s3.bucket,
        prefix: options.s3Prefix,
        gzipLevel: 1,
        connection: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: { file: s3.secretAccessKeyFile }, maxAttempts: 1 },
      },
      ...options.s3Sink,
    });
  }
  if (options.esIndexPrefix !== undefined) {
    sinks.push({
      name: 'search',
      type: 'elasticsearch',
      batch: { maxAgeMs: 200 },
      retry: { initialDelayMs: 100, maxDelayMs: 1_000 },
      elasticsearch: {
        connection: { nodes: [stack().elasticsearch.url] },
        index: `${options.esIndexPrefix}-{namespace}-{yyyy.MM.dd}`,
        templateName: options.esIndexPrefix,
        numberOfReplicas: 0,
        refreshIntervalMs: 1_000,
      },
      ...options.esSink,
    });
  }
  const config = {
    logLevel: 'info',
    ops: { host: '127.0.0.1', port: 0 },
    kafka: {
      brokers: stack().kafka.brokers,
      clientId: 'logship-aggregator-it',
      groupId: options.groupId,
      ...(options.topicPattern === undefined ? {} : { topicPattern: options.topicPattern }),
      topics: options.topics ?? [],
      topicRefreshIntervalMs: 1_000,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 1_000,
      rebalanceTimeoutMs: 20_000,
      maxWaitTimeMs: 100,
      commitIntervalMs: 500,
    },
    deadLetter: { topic: options.deadLetterTopic },
    sinks,
    shutdown: { timeoutMs: 20_000 },
    ...options.extra,
  };
  const file = join(mkdtempSync(join(tmpdir(), 'logship-aggregator-config-')), 'aggregator.yaml');
  writeFileSync(file, stringify(config));
  return file;
}

export function startAggregatorProcess(configFile: string, env: NodeJS.ProcessEnv = {}): LogshipProcess {
  return startLogshipProcess('aggregator', configFile, env);
}

/** Every object under a prefix: its key and its gunzipped NDJSON lines. */
export async function readS3Objects(client: S3Client, prefix: string): Promise<{ key: string; lines: string[] }[]> {
  const bucket = stack().s3.bucket;
  const result: { key: string; lines: string[] }[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
    for (const object of page.Contents ?? []) {
      if (object.Key === undefined || !object.Key.endsWith('.ndjson.gz')) continue;
      const body = await client.send(new GetObjectCommand({ Bucket: bucket, Key: object.Key }));
      const bytes = Buffer.from(await (body.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
      result.push({ key: object.Key, lines: gunzipSync(bytes).toString('utf8').split('\n').filter((l) => l !== '') });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return result;
}

export async function deleteS3Prefix(client: S3Client, prefix: string): Promise<void> {
  const bucket = stack().s3.bucket;
  for (;;) {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length === 0) return;
    await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
  }
}

export function testS3Client(): S3Client {
  return createS3Client(s3Config());
}

/** Documents in indices matching `pattern`, after a refresh. */
export async function countDocuments(client: Client, pattern: string): Promise<number> {
  await client.indices.refresh({ index: pattern, ignore_unavailable: true, allow_no_indices: true });
  const response = await client.count({ index: pattern, ignore_unavailable: true, allow_no_indices: true });
  return response.count;
}

export async function deleteIndices(client: Client, prefix: string): Promise<void> {
  await client.indices.delete({ index: `${prefix}-*`, ignore_unavailable: true, allow_no_indices: true }).catch(() => undefined);
  await client.indices.deleteIndexTemplate({ name: prefix }).catch(() => undefined);
}

export { elasticsearchConfig, uniqueName, waitFor };

/** Reads every message of a topic from the beginning until `count` arrived. */
/**
 * Reads a topic's JSON messages from the beginning until `done` says it has what it waits for
 * (`what` names that in the timeout's message).
 */
export async function readTopic(topic: string, what: string, done: (values: readonly Record<string, unknown>[]) => boolean, timeoutMs = 60_000): Promise<Record<string, unknown>[]> {
  const kafka = createKafka(kafkaConfig({ clientId: 'logship-it-reader' }), testLogger());
  const consumer = kafka.consumer({ groupId: uniqueName('it-reader'), maxWaitTimeInMs: 100 });
  const values: Record<string, unknown>[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: ({ message }) => {
        values.push(JSON.parse(message.value?.toString('utf8') ?? 'null') as Record<string, unknown>);
        return Promise.resolve();
      },
    });
    await waitFor(`${what} in ${topic} (have ${String(values.length)} messages)`, () => done(values), timeoutMs);
  } finally {
    await consumer.disconnect();
  }
  return values;
}

/** Committed offsets of a group per topic-partition (`-1` when none). */
export async function committedOffsets(groupId: string, topics: string[]): Promise<Map<string, number>> {
  const admin = createKafka(kafkaConfig({ clientId: 'logship-it-admin' }), testLogger()).admin();
  await admin.connect();
  try {
    const result = new Map<string, number>();
    for (const t of await admin.fetchOffsets({ groupId, topics })) {
      for (const p of t.partitions) result.set(`${t.topic}/${String(p.partition)}`, Number(p.offset));
    }
    return result;
  } finally {
    await admin.disconnect();
  }
}

/** The next offset of every partition of the topics (their high watermarks). */
export async function topicEndOffsets(topics: string[]): Promise<Map<string, number>> {
  const admin = createKafka(kafkaConfig({ clientId: 'logship-it-admin' }), testLogger()).admin();
  await admin.connect();
  try {
    const result = new Map<string, number>();
    for (const topic of topics) {
      for (const p of await admin.fetchTopicOffsets(topic)) result.set(`${topic}/${String(p.partition)}`, Number(p.high));
    }
    return result;
  } finally {
    await admin.disconnect();
  }
}

/**
 * The aggregator's configuration: one schema holding defaults, descriptions and units; it also
 * generates the aggregator's section of docs/configuration.md.
 */
import { z } from 'zod';
import { checkKafkaConnection, kafkaConnectionFields } from '../shared/kafka.js';
import { routingSchema } from './routing.js';
import { elasticsearchSinkOptionsSchema } from './sinks/elasticsearch-options.js';
import { s3SinkOptionsSchema } from './sinks/s3-options.js';

const KIB = 1024;
const MIB = 1024 * KIB;

/** Batch limits per sink type when the config leaves them out: large objects for S3, modest bulks for Elasticsearch. */
export const BATCH_DEFAULTS = {
  s3: { maxBytes: 32 * MIB, maxRecords: 250_000, maxAgeMs: 60_000, concurrency: 4 },
  elasticsearch: { maxBytes: 8 * MIB, maxRecords: 20_000, maxAgeMs: 1_000, concurrency: 4 },
} as const;

export const SINK_TYPES = ['s3', 'elasticsearch'] as const;
export type SinkType = (typeof SINK_TYPES)[number];

const sinkSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'lower-case letters, digits, "_" and "-"').describe('The sink\'s name: metric label and log field.'),
    type: z.enum(SINK_TYPES).describe('Which sink: `s3` (gzip NDJSON objects) or `elasticsearch` (bulk).'),
    batch: z
      .strictObject({
        maxBytes: z.number().int().min(KIB).max(1024 * MIB).optional().describe(`Record bytes per batch (per topic-partition) at most. Default ${String(BATCH_DEFAULTS.s3.maxBytes / MIB)} MiB for s3, ${String(BATCH_DEFAULTS.elasticsearch.maxBytes / MIB)} MiB for elasticsearch.`),
        maxRecords: z.number().int().min(1).optional().describe(`Records per batch at most. Default ${String(BATCH_DEFAULTS.s3.maxRecords)} for s3, ${String(BATCH_DEFAULTS.elasticsearch.maxRecords)} for elasticsearch.`),
        maxAgeMs: z.number().int().min(10).optional().describe(`A batch is sent at the latest this long after its first record. Default ${String(BATCH_DEFAULTS.s3.maxAgeMs)} for s3, ${String(BATCH_DEFAULTS.elasticsearch.maxAgeMs)} for elasticsearch. Offsets are committed only after every sink wrote, so the largest maxAgeMs bounds how far commits trail.`),
      })
      .prefault({})
      .describe('When a batch is sent.'),
    concurrency: z.number().int().min(1).max(64).optional().describe('Partitions with a batch in flight at once (one batch per partition at a time, in offset order). Default 4.'),
    retry: z
      .strictObject({
        initialDelayMs: z.number().int().min(1).default(200).describe('First wait after a retryable failure, before jitter.'),
        maxDelayMs: z.number().int().min(1).default(30_000).describe('Longest wait between attempts. Retries never stop: a batch is written or its records dead-lettered.'),
      })
      .prefault({})
      .describe('Retries of failed sends.'),
    routing: routingSchema,
    s3: s3SinkOptionsSchema.optional().describe('Settings of an `s3` sink.'),
    elasticsearch: elasticsearchSinkOptionsSchema.optional().describe('Settings of an `elasticsearch` sink.'),
  })
  .superRefine((sink, ctx) => {
    for (const type of SINK_TYPES) {
      const present = sink[type] !== undefined;
      if (type === sink.type && !present) ctx.addIssue({ code: 'custom', path: [type], message: `required for a sink of type ${type}` });
      if (type !== sink.type && present) ctx.addIssue({ code: 'custom', path: [type], message: `only allowed for a sink of type ${type}` });
    }
  });

export type SinkConfig = z.output<typeof sinkSchema>;

export const aggregatorConfigSchema = z
  .strictObject({
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info').describe('Level of the aggregator\'s own logs.'),
    ops: z
      .strictObject({
        host: z.string().default('0.0.0.0').describe('Address of the /metrics, /healthz and /readyz server.'),
        port: z.number().int().min(0).max(65535).default(9103).describe('Port of the ops server (0 picks a free one).'),
      })
      .prefault({})
      .describe('Metrics and health endpoints.'),
    kafka: z
      .strictObject({
        ...kafkaConnectionFields,
        groupId: z.string().min(1).default('logship-aggregator').describe('Consumer group; every aggregator replica of one deployment uses the same.'),
        topics: z.array(z.string().min(1)).default([]).describe('Topics to consume by name.'),
        topicPattern: z
          .string()
          .optional()
          .refine((p) => p === undefined || isValidRegExp(p), 'not a valid regular expression')
          .describe('Regular expression of topics to consume, e.g. `^logs\\.`; topics created later that match are picked up without a restart.'),
        topicRefreshIntervalMs: z.number().int().min(100).default(30_000).describe('How often the broker\'s topic list is checked for new matching topics.'),
        fromBeginning: z.boolean().default(true).describe('Where a partition without a committed offset starts: the oldest retained message (true) or new messages only.'),
        sessionTimeoutMs: z.number().int().min(1_000).default(10_000).describe('Time without heartbeat after which the group reassigns this member\'s partitions: how long the partitions of a member killed with `kill -9` (OOM) wait, since kafkajs has no static membership (measured: back to steady state 11-12 s after the kill at 10 s, 34 s at 30 s). The broker\'s `group.min.session.timeout.ms` (6 s by default) bounds it from below.'),
        rebalanceTimeoutMs: z.number().int().min(1_000).default(60_000).describe('Time members get to rejoin during a rebalance.'),
        heartbeatIntervalMs: z.number().int().min(100).default(1_000).describe('Heartbeat interval; at most a third of sessionTimeoutMs.'),
        maxBytesPerPartition: z.number().int().min(KIB).default(256 * KIB).describe('Bytes fetched per partition per request at most. Counted compressed: gzip log batches inflate 10-20 times in memory.'),
        maxFetchBytes: z.number().int().min(KIB).default(1 * MIB).describe('Bytes fetched per request at most, counted compressed; a fetched response is inflated whole before its records are handed on, so this bounds memory next to records.maxInFlightBytes (1 MiB of gzip logs is ~20 MiB, ~40,000 records).'),
        maxWaitTimeMs: z.number().int().min(0).default(500).describe('How long a fetch waits on the broker for data.'),
        commitIntervalMs: z.number().int().min(10).default(1_000).describe('How often offsets every sink acknowledged are committed.'),
        commitThreshold: z.number().int().min(0).default(0).describe('Also commit as soon as this many acknowledged messages are uncommitted; 0 turns it off.'),
      })
      .superRefine(checkKafkaConnection)
      .superRefine((k, ctx) => {
        if (k.topics.length === 0 && k.topicPattern === undefined) ctx.addIssue({ code: 'custom', path: ['topics'], message: 'set topics or topicPattern (or both)' });
        if (k.heartbeatIntervalMs * 3 > k.sessionTimeoutMs) ctx.addIssue({ code: 'custom', path: ['heartbeatIntervalMs'], message: 'must be at most a third of sessionTimeoutMs' });
      })
      .describe('Kafka connection and consumer group.'),
    records: z
      .strictObject({
        maxRecordBytes: z.number().int().min(KIB).default(1 * MIB).describe('A record longer than this goes to the dead letter (`too_large`).'),
        maxInFlightBytes: z.number().int().min(MIB).default(32 * MIB).describe('Bytes of fetched messages held until every sink wrote them; fetching pauses above (backpressure) and the largest open batches are sent early. Bounds memory across all partitions: measured peak RSS draining a backlog about 270 MiB at 32 MiB, 310-330 MiB at 64 MiB. Raise it (with the memory limit) for larger S3 objects when input bytes/s × the S3 batch maxAgeMs exceeds it.'),
      })
      .prefault({})
      .describe('Record handling and memory.'),
    replayDetection: z
      .strictObject({
        enabled: z.boolean().default(true).describe('Drop records a sink already wrote when a producer sends them again (an agent restarted from its checkpoint), counted in `logship_aggregator_replays_dropped_total`. Recognised by the agent\'s `event_id` (file and byte offset); records of other producers are never dropped.'),
        forgetAfterMs: z.number().int().min(60_000).default(86_400_000).describe('A file (and stream) not seen for this long is forgotten; a replay of it after that is written again. Keep it above the longest time an agent may be down.'),
        maxOriginsPerPartition: z.number().int().min(16).max(100_000).default(4_096).describe('Files (times streams) remembered per topic-partition at most; beyond, the least recently seen are forgotten. Costs about 70 bytes each in every S3 state object and in memory.'),
      })
      .prefault({})
      .describe('Replay detection (exactly-once rows across agent restarts).'),
    deadLetter: z
      .strictObject({
        topic: z.string().regex(/^[a-zA-Z0-9._-]+$/, 'a Kafka topic name').default('logship.deadletter').describe('Kafka topic receiving records that cannot be delivered, with the reason.'),
        maxRecordBytes: z.number().int().min(KIB).default(256 * KIB).describe('The original record kept in a dead letter is cut to this size (flagged `record_truncated`), and further when the letter would not fit the topic\'s `max.message.bytes`.'),
        maxRequestBytes: z.number().int().min(16 * KIB).default(1 * MIB).describe('Bytes of letters per produce request at most; lowered to the topic\'s `max.message.bytes` (read at start).'),
        fallbackToS3: z.boolean().default(true).describe('Letters Kafka refuses for good (too large, not authorized) are written to the first S3 sink\'s bucket under `<prefix>/_deadletter/` and counted in `logship_aggregator_dead_letter_fallbacks_total`. Without an S3 sink, or when off, they are retried.'),
      })
      .prefault({})
      .describe('Dead-letter destination.'),
    sinks: z.array(sinkSchema).min(1, 'at least one sink is required').describe('Where records go; each sink gets every record its routing accepts.'),
    shutdown: z
      .strictObject({
        timeoutMs: z.number().int().min(100).default(30_000).describe('Time allowed to flush the sinks and commit on SIGTERM before exiting anyway (nothing is lost: uncommitted data is re-read).'),
      })
      .prefault({})
      .describe('Graceful shutdown.'),
  })
  .superRefine((c, ctx) => {
    const names = new Set<string>();
    c.sinks.forEach((sink, i) => {
      if (names.has(sink.name)) ctx.addIssue({ code: 'custom', path: ['sinks', i, 'name'], message: `duplicate sink name "${sink.name}"` });
      names.add(sink.name);
    });
    // Two S3 sinks writing the same keys would overwrite each other's objects.
    const s3Targets = new Map<string, { index: number; name: string }>();
    c.sinks.forEach((sink, i) => {
      if (sink.s3 === undefined) return;
      const target = `${sink.s3.connection.endpoint ?? ''}\u0000${sink.s3.bucket}\u0000${sink.s3.prefix}`;
      const other = s3Targets.get(target);
      if (other !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['sinks', i, 's3', 'prefix'],
          message: `sinks "${other.name}" (sinks[${other.index}]) and "${sink.name}" (sinks[${i}]) both write bucket "${sink.s3.bucket}" under prefix "${sink.s3.prefix}"; give each its own bucket or prefix`,
        });
      } else s3Targets.set(target, { index: i, name: sink.name });
    });
    const dlq = c.deadLetter.topic;
    if (c.kafka.topics.includes(dlq)) ctx.addIssue({ code: 'custom', path: ['deadLetter', 'topic'], message: 'the dead-letter topic must not be one of kafka.topics' });
  });

export type AggregatorConfig = z.output<typeof aggregatorConfigSchema>;

function isValidRegExp(pattern: string): boolean {
  try {
    new RegExp(pattern);
    return true;
  } catch {
    return false;
  }
}

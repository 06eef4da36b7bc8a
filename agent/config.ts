/**
 * The agent's configuration: one schema holding defaults, descriptions and units; it also generates
 * the agent's section of docs/configuration.md.
 */
import { z } from 'zod';
import { checkKafkaConnection, kafkaConnectionFields } from '../shared/kafka.js';
import { kubernetesConnectionSchema } from '../shared/kube.js';

const KIB = 1024;
const MIB = 1024 * KIB;

/** Kafka topic names allow [a-zA-Z0-9._-]; `{cluster}` and `{namespace}` are substituted. */
const TOPIC_TEMPLATE = /^(?:[a-zA-Z0-9._-]|\{cluster\}|\{namespace\})+$/;

const multilineRuleSchema = z.strictObject({
  preset: z.enum(['java', 'python', 'go', 'default']).optional().describe('A built-in start pattern.'),
  startPattern: z
    .string()
    .optional()
    .refine((p) => p === undefined || isValidRegExp(p), 'not a valid regular expression')
    .describe('A line matching this regular expression starts a new event; others continue it. Overrides the preset.'),
});

export const agentConfigSchema = z
  .strictObject({
    cluster: z.string().regex(/^[a-zA-Z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only').describe('Cluster name, written into every record and topic names.'),
    nodeName: z.string().min(1).describe('This node\'s name; set it from the downward API (`LOGSHIP_NODE_NAME` from `spec.nodeName`).'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info').describe('Level of the agent\'s own logs.'),
    ops: z
      .strictObject({
        host: z.string().default('0.0.0.0').describe('Address of the /metrics, /healthz and /readyz server.'),
        port: z.number().int().min(0).max(65535).default(9102).describe('Port of the ops server (0 picks a free one).'),
      })
      .prefault({})
      .describe('Metrics and health endpoints.'),
    files: z
      .strictObject({
        root: z.string().default('/var/log/pods').describe('Folder holding `<namespace>_<pod>_<uid>/<container>/<n>.log`.'),
        containerLinksRoot: z
          .string()
          .default('/var/log/containers')
          .describe(
            "The kubelet's folder of `<pod>_<namespace>_<container>-<id>.log` symlinks into root, read (never written) to give a container's first lines its id before the pod's status has it. Empty: lines wait for the status.",
          ),
        include: z.array(z.string()).default([]).describe('Globs (relative to root) of files to tail; empty means all.'),
        exclude: z.array(z.string()).default([]).describe('Globs (relative to root) of files never to tail.'),
        namespaces: z
          .strictObject({
            include: z.array(z.string()).default([]).describe('Namespace globs to tail; empty means all.'),
            exclude: z.array(z.string()).default([]).describe('Namespace globs never to tail.'),
          })
          .prefault({}),
        startAt: z
          .enum(['beginning', 'end'])
          .default('beginning')
          .describe(
            'Where to start in the files on disk at the agent\'s first start on a node (an empty checkpoint folder). After that, every file without a checkpoint, including those written while the agent was down, is read from its beginning.',
          ),
        readBufferBytes: z.number().int().min(4 * KIB).max(16 * MIB).default(256 * KIB).describe('Bytes read from a file at once.'),
        maxOpenFiles: z.number().int().min(1).default(1024).describe('Descriptors held open at most; further files wait for a slot.'),
        pollIntervalMs: z.number().int().min(10).default(250).describe('How often open files are checked for growth, rotation, truncation and deletion.'),
        rescanIntervalMs: z.number().int().min(100).default(10_000).describe('How often the root is rescanned for files the watcher missed.'),
        rotateWaitMs: z.number().int().min(0).default(5_000).describe('How long a rotated (renamed) file keeps being read after its last growth.'),
      })
      .prefault({})
      .describe('Which files to tail and how.'),
    parse: z
      .strictObject({
        format: z.enum(['auto', 'cri', 'docker']).default('auto').describe('Log file format; `auto` decides per file from its first line.'),
        maxLineBytes: z.number().int().min(1 * KIB).max(64 * MIB).default(256 * KIB).describe('Longest message kept after merging partial lines; the rest is cut and the record flagged `truncated`.'),
        partialTimeoutMs: z
          .number()
          .int()
          .min(100)
          .default(10_000)
          .describe('How long the first chunks of a line the runtime split (`P`) wait for the last one (`F`); then they are shipped flagged `partial`, and so is the rest if it comes. Chunks pending when a file ends are shipped flagged `partial` at once.'),
        multiline: z
          .strictObject({
            containers: z
              .record(z.string(), multilineRuleSchema)
              .default({})
              .describe('Multiline joining per container: keys are `<namespace>/<pod glob>/<container>` globs. Pods can also ask for it with the annotation `logship.io/multiline: <preset>`.'),
            maxLines: z.number().int().min(2).default(500).describe('Lines joined into one event at most.'),
            maxBytes: z.number().int().min(KIB).default(256 * KIB).describe('Bytes joined into one event at most.'),
            timeoutMs: z.number().int().min(10).default(1_000).describe('An event with no new line for this long is shipped.'),
          })
          .prefault({}),
      })
      .prefault({})
      .describe('Parsing.'),
    kubernetes: kubernetesConnectionSchema
      .extend({
        enabled: z.boolean().default(true).describe('Enrich records from the Kubernetes API; when off, metadata comes from file paths only.'),
        deletedPodGraceMs: z.number().int().min(0).default(300_000).describe('How long a deleted pod\'s metadata is kept for its last lines.'),
      })
      .prefault({})
      .describe('Kubernetes API access for metadata.'),
    kafka: z
      .strictObject({
          ...kafkaConnectionFields,
          topicTemplate: z.string().regex(TOPIC_TEMPLATE, 'only [a-zA-Z0-9._-], {cluster} and {namespace}').default('logs.{cluster}.{namespace}').describe('Topic of each record.'),
          compression: z.enum(['gzip', 'none']).default('gzip').describe('Compression of record batches.'),
          compressionLevel: z.number().int().min(1).max(9).default(1).describe('gzip level: 1 is about twice as fast as 6 on log records, for slightly larger batches.'),
          maxMessageBytes: z.number().int().min(16 * KIB).default(256 * KIB).describe('Largest Kafka message value; keep under the topic\'s `max.message.bytes`. Records are grouped into messages up to this size, and a record larger than it is cut and flagged.'),
          maxRecordsPerMessage: z.number().int().min(1).default(256).describe('Records (NDJSON lines) per Kafka message at most; 1 gives one record per message.'),
          maxBatchBytes: z.number().int().min(16 * KIB).default(MIB).describe('A produce request is sent once this many bytes are queued (or lingerMs passed).'),
          lingerMs: z.number().int().min(0).default(50).describe('How long a message may wait for others to fill a batch.'),
          maxBufferedBytes: z.number().int().min(MIB).default(8 * MIB).describe('Bytes queued or in flight above which reading pauses (backpressure).'),
          producers: z
            .number()
            .int()
            .min(1)
            .max(8)
            .default(2)
            .describe("Idempotent producers (lanes), each with one produce request in flight: with two, one request is encoded and compressed while the broker handles another. A pod's messages always take the same lane, so per-pod order holds."),
          autoCreateTopics: z
            .boolean()
            .default(true)
            .describe('Let the brokers create a missing topic (when their `auto.create.topics.enable` allows it). Off: a missing topic stalls until an operator creates it, while other topics keep flowing.'),
          retryInitialDelayMs: z.number().int().min(1).default(200).describe('First backoff after a failed batch.'),
          retryMaxDelayMs: z.number().int().min(1).default(30_000).describe('Longest backoff between attempts; attempts never stop (a topic that refuses messages is retried on its own, see docs/kafka-topics.md).'),
      })
      .superRefine(checkKafkaConnection)
      .describe('Kafka connection and producer.'),
    checkpoints: z
      .strictObject({
        dir: z.string().default('/var/lib/logship-agent').describe('State folder (a hostPath in Kubernetes) for checkpoints.'),
        intervalMs: z.number().int().min(100).default(1_000).describe('How often checkpoints are written.'),
        orphanTtlMs: z.number().int().min(0).default(3_600_000).describe('A checkpoint matching no file for this long is dropped.'),
      })
      .prefault({})
      .describe('Checkpoint storage.'),
    idle: z
      .strictObject({
        reclaimAfterMs: z
          .number()
          .int()
          .min(100)
          .default(5_000)
          .describe('Quiet time (nothing read, nothing to send) after which pooled buffers are dropped and the heap is collected and compacted, once per quiet spell.'),
        pageOutAfterMs: z
          .number()
          .int()
          .min(0)
          .default(30_000)
          .describe(
            'Quiet time after which the kernel is asked to reclaim the pages of node\'s binary and libraries the agent holds (madvise MADV_PAGEOUT, Linux 5.4 and later) and glibc\'s free heap, once per quiet spell; what work needs again is read back when it resumes. 0 turns it off. Kept above reclaimAfterMs.',
          ),
        pageOutRepeatMs: z
          .number()
          .int()
          .min(0)
          .default(300_000)
          .describe('While the quiet spell lasts, the page-out is repeated this long after the previous one: code run every few minutes (the API server watches reconnecting) is given back too. 0: once per quiet spell.'),
      })
      .prefault({})
      .describe('Giving memory back when there is nothing to do.'),
    shutdown: z
      .strictObject({
        timeoutMs: z.number().int().min(100).default(25_000).describe('Time allowed for a graceful stop (stop reading, flush, checkpoint); keep below terminationGracePeriodSeconds.'),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.kafka.maxBatchBytes < c.kafka.maxMessageBytes) {
      ctx.addIssue({ code: 'custom', path: ['kafka', 'maxBatchBytes'], message: 'must be at least kafka.maxMessageBytes' });
    }
    if (c.kafka.maxBufferedBytes < c.kafka.maxBatchBytes) {
      ctx.addIssue({ code: 'custom', path: ['kafka', 'maxBufferedBytes'], message: 'must be at least kafka.maxBatchBytes' });
    }
    if (c.idle.pageOutAfterMs !== 0 && c.idle.pageOutAfterMs < c.idle.reclaimAfterMs) {
      ctx.addIssue({ code: 'custom', path: ['idle', 'pageOutAfterMs'], message: 'must be 0 (off) or at least idle.reclaimAfterMs' });
    }
    if (c.idle.pageOutRepeatMs !== 0 && c.idle.pageOutRepeatMs < c.idle.reclaimAfterMs) {
      ctx.addIssue({ code: 'custom', path: ['idle', 'pageOutRepeatMs'], message: 'must be 0 (once) or at least idle.reclaimAfterMs' });
    }
    if (c.kafka.retryMaxDelayMs < c.kafka.retryInitialDelayMs) {
      ctx.addIssue({ code: 'custom', path: ['kafka', 'retryMaxDelayMs'], message: 'must be at least kafka.retryInitialDelayMs' });
    }
  });

export type AgentConfig = z.output<typeof agentConfigSchema>;

function isValidRegExp(pattern: string): boolean {
  try {
    new RegExp(pattern);
    return true;
  } catch {
    return false;
  }
}

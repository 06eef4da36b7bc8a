/**
 * Running the real agent binary in tests, writing CRI logs the way a container runtime does, and
 * reading back what reached Kafka.
 */
import { appendFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Admin, Consumer, Kafka } from 'kafkajs';
import { stringify } from 'yaml';
import { fetchMetricSum } from '../../scripts/metrics-text.js';
import { deleteTopics } from '../../scripts/stack/topics.js';
import { createKafka } from '../../shared/kafka.js';
import type { LogRecord } from '../../shared/record.js';
import { startLogshipProcess, type LogshipProcess, type ProcessUser } from './process.js';
import { kafkaConfig, stack, testLogger, uniqueName, waitFor } from './stack.js';

export interface PodDir {
  namespace: string;
  pod: string;
  uid: string;
  container: string;
  dir: string;
}

export function makeRoot(): string {
  return mkdtempSync(join(tmpdir(), 'logship-agent-root-'));
}

export function podDir(root: string, namespace: string, pod: string, uid: string, container: string): PodDir {
  const dir = join(root, `${namespace}_${pod}_${uid}`, container);
  mkdirSync(dir, { recursive: true });
  return { namespace, pod, uid, container, dir };
}

/** A CRI line as containerd writes it. */
export function cri(message: string, options: { stream?: 'stdout' | 'stderr'; partial?: boolean; time?: string } = {}): string {
  return `${options.time ?? new Date().toISOString().replace('Z', '000000Z')} ${options.stream ?? 'stdout'} ${options.partial ? 'P' : 'F'} ${message}\n`;
}

export function appendLines(file: string, lines: string[]): void {
  appendFileSync(file, lines.join(''));
}

export type AgentProcess = LogshipProcess;

export interface AgentTestConfig {
  root: string;
  stateDir: string;
  topicPrefix: string;
  kubernetes?: { enabled: boolean; kubeconfig?: string; deletedPodGraceMs?: number };
  extra?: Record<string, unknown>;
}

export function agentConfigFile(options: AgentTestConfig): string {
  const config = {
    cluster: 'it',
    nodeName: 'it-node',
    logLevel: 'info',
    ops: { host: '127.0.0.1', port: 0 },
    files: { root: options.root, pollIntervalMs: 100, rescanIntervalMs: 1_000, rotateWaitMs: 1_000 },
    kubernetes: options.kubernetes ?? { enabled: false },
    kafka: {
      brokers: stack().kafka.brokers,
      clientId: 'logship-agent-it',
      topicTemplate: `${options.topicPrefix}.{namespace}`,
      retryInitialDelayMs: 100,
      retryMaxDelayMs: 1_000,
    },
    checkpoints: { dir: options.stateDir, intervalMs: 200 },
    shutdown: { timeoutMs: 10_000 },
    ...options.extra,
  };
  const file = join(mkdtempSync(join(tmpdir(), 'logship-agent-config-')), 'agent.yaml');
  writeFileSync(file, stringify(config));
  return file;
}

export type AgentProcessUser = ProcessUser;

/**
 * Starts `logship-agent --config <file>` as a child process (through tsx, from the source). With
 * `user`, it runs under that uid/gid (the runner must be root), so file permissions really apply; the
 * config file, the log root and the state folder must then be reachable by that user.
 */
export function startAgentProcess(configFile: string, env: NodeJS.ProcessEnv = {}, user: AgentProcessUser = {}): AgentProcess {
  return startLogshipProcess('agent', configFile, env, user);
}

/** Reads a Prometheus metric value (sum over label sets matching `labels`) from an ops server. */
export function metricValue(opsUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return fetchMetricSum(opsUrl, name, labels);
}

export interface ReceivedRecord {
  record: LogRecord;
  topic: string;
  partition: number;
  offset: string;
}

/** Collects every record (NDJSON lines of each message) from the given topics, from the beginning. */
export class RecordCollector {
  readonly records: ReceivedRecord[] = [];
  /** Records received so far (also those not kept). */
  received = 0;
  private readonly kafka: Kafka = createKafka(kafkaConfig({ clientId: 'logship-it-collector' }), testLogger());
  private consumer: Consumer | undefined;
  private admin: Admin | undefined;

  /**
   * `onRecord` sees every record as it arrives; with `keep: false` they are not kept in `records`
   * (long runs check each record on arrival and keep only a tally).
   */
  constructor(private readonly options: { onRecord?: (received: ReceivedRecord) => void; keep?: boolean } = {}) {}

  async start(topics: string[]): Promise<void> {
    this.admin = this.kafka.admin();
    await this.admin.connect();
    await this.admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true });
    // Short retries: outage tests restart the broker and the collector must follow promptly.
    this.consumer = this.kafka.consumer({ groupId: uniqueName('it-collector'), maxWaitTimeInMs: 100, retry: { initialRetryTime: 100, maxRetryTime: 1_000, retries: 1_000 } });
    await this.consumer.connect();
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const text = message.value?.toString('utf8') ?? '';
        for (const line of text.split('\n')) {
          if (line === '') continue;
          const received: ReceivedRecord = { record: JSON.parse(line) as LogRecord, topic, partition, offset: message.offset };
          this.received++;
          if (this.options.keep !== false) this.records.push(received);
          this.options.onRecord?.(received);
        }
      },
    });
  }

  async waitForCount(count: number, timeoutMs = 60_000): Promise<void> {
    await waitFor(`${count} records in Kafka (have ${this.records.length})`, () => this.records.length >= count, timeoutMs);
  }

  async stop(topics: string[]): Promise<void> {
    await this.consumer?.disconnect();
    if (this.admin) await deleteTopics(this.admin, { names: topics }).catch(() => undefined);
    await this.admin?.disconnect();
  }
}

/**
 * The agent's tailing stages in this process, over real files, with a producer that acknowledges
 * every message at once and keeps the records: for tests of discovery, rotation and restarts that
 * need no broker. A "restart" is a new harness over the same root and state folder.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointStore } from '../../agent/checkpoint-store.js';
import type { AgentProducer } from '../../agent/kafka-producer.js';
import { MessageBuilder } from '../../agent/message-builder.js';
import { PodMetadataCache } from '../../agent/pod-metadata.js';
import { TailManager, type LossReason, type TailManagerOptions } from '../../agent/tail-manager.js';
import { newTailCounters, type TailEnvironment, type TailSettings } from '../../agent/tailed-file.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import type { LogRecord } from '../../shared/record.js';
import { waitFor } from './stack.js';

export interface Loss {
  reason: LossReason;
  bytes: number;
  path: string;
  source: string;
  fromOffset: number;
  toOffset: number;
}

/**
 * A tailing environment whose producer acknowledges every message at once, after handing its value to
 * `onMessage`; path-derived metadata, one topic. `settings` override the defaults below.
 */
export function acknowledgingEnvironment(logger: Logger, settings: Partial<TailSettings>, onMessage: (value: Buffer) => void): TailEnvironment {
  const producer = {
    hasCapacity: () => true,
    isStalled: () => false,
    waitForCapacity: () => Promise.resolve(),
    enqueue: (message: { value: Buffer; onAck: () => void }) => {
      onMessage(message.value);
      message.onAck();
    },
  } as unknown as AgentProducer;
  const metadata = new PodMetadataCache({ nodeName: 'node', cluster: 'c', deletedPodGraceMs: 0 });
  const all: TailSettings = { cluster: 'c', node: 'node', format: 'cri', maxLineBytes: 16 * 1024, maxMessageBytes: 1024 * 1024, maxRecordsPerMessage: 500, rotateWaitMs: 100, partialTimeoutMs: 10_000, ...settings };
  return {
    settings: all,
    producer,
    messages: new MessageBuilder({ maxMessageBytes: all.maxMessageBytes, maxRecordsPerMessage: all.maxRecordsPerMessage, slabBytes: 2 * all.maxMessageBytes }),
    logger,
    lookupMetadata: (path) => metadata.lookup(path),
    metadataSynced: () => false,
    topicFor: () => 'topic',
    multilineFor: () => undefined,
    counters: newTailCounters(),
  };
}

export class TailHarness {
  readonly records: LogRecord[] = [];
  readonly losses: Loss[] = [];
  readonly errors: { reason: string; context: Record<string, unknown> }[] = [];
  private manager: TailManager | undefined;
  private store: CheckpointStore | undefined;

  constructor(
    readonly root: string,
    readonly stateDir: string = mkdtempSync(join(tmpdir(), 'logship-tail-state-')),
    private readonly options: Partial<TailManagerOptions> = {},
  ) {}

  async start(): Promise<this> {
    const logger = createLogger({ name: 'tail-harness', level: 'silent' });
    const env = acknowledgingEnvironment(logger, { format: 'auto', maxLineBytes: 256 * 1024, maxRecordsPerMessage: 100, rotateWaitMs: 200 }, (value) => {
      for (const line of value.toString('utf8').split('\n')) if (line !== '') this.records.push(JSON.parse(line) as LogRecord);
    });
    const checkpoints = await CheckpointStore.open(this.stateDir, logger);
    this.store = checkpoints;
    this.manager = new TailManager(
      env,
      checkpoints,
      {
        root: this.root,
        include: [],
        exclude: [],
        namespaces: { include: [], exclude: [] },
        startAt: 'beginning',
        readBufferBytes: 64 * 1024,
        maxOpenFiles: 100,
        pollIntervalMs: 50,
        rescanIntervalMs: 60_000,
        checkpointIntervalMs: 100,
        orphanCheckpointTtlMs: 3_600_000,
        ...this.options,
      },
      {
        onError: (reason, _error, context) => this.errors.push({ reason, context }),
        onBackpressure: () => undefined,
        onLost: (reason, bytes, context) => this.losses.push({ reason, bytes, ...context }),
      },
      logger,
    );
    await this.manager.start();
    return this;
  }

  /** Messages in the order they were shipped. */
  messages(): string[] {
    return this.records.map((record) => record.message);
  }

  /** Waits until `count` records arrived (or fails at the deadline). */
  async waitForRecords(count: number, timeoutMs = 10_000): Promise<void> {
    await waitFor(`${count} records`, () => this.records.length >= count, timeoutMs, 20);
  }

  /** The offsets of the checkpoint entries (written every `checkpointIntervalMs`). */
  checkpointOffsets(): number[] {
    return [...(this.store?.all() ?? [])].map((entry) => entry.offset);
  }

  /** A clean stop: reading stops, checkpoints are written. */
  async stop(): Promise<void> {
    await this.manager?.stopReading();
    await this.manager?.close();
  }
}

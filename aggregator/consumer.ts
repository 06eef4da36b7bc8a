/**
 * The aggregator's Kafka consumer: a kafkajs consumer group behind the project's own interface.
 * It subscribes by topic list and/or regex and re-checks the topics periodically: kafkajs resolves a
 * regex only when subscribing, so when new matching topics appear the consumer re-subscribes (a
 * rebalance), without a restart of the process. Offsets are committed only when asked (never
 * automatically), with the balanced assigner spreading all topic-partitions over the members.
 */
import type { Admin, Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { BalancedAssigner } from './balanced-assigner.js';

export interface ConsumerOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  readonly topicPattern?: RegExp;
  /** Never consumed even when the pattern matches (the dead-letter topic). */
  readonly excludeTopics: readonly string[];
  readonly topicRefreshIntervalMs: number;
  readonly fromBeginning: boolean;
  readonly sessionTimeoutMs: number;
  readonly rebalanceTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly maxBytesPerPartition: number;
  readonly maxBytes: number;
  readonly maxWaitTimeMs: number;
}

export interface FetchedMessage {
  readonly offset: number;
  readonly value: Buffer | null;
}

export interface FetchedBatch {
  readonly topic: string;
  readonly partition: number;
  readonly highWatermark: number;
  readonly messages: readonly FetchedMessage[];
  /** Marks messages up to `offset` as taken, so the next fetch continues after it (not a commit). */
  resolveOffset(offset: number): void;
  heartbeat(): Promise<void>;
  /** False once the consumer stops or the group rebalances: stop handling this batch. */
  isActive(): boolean;
}

export interface ConsumerHandlers {
  onBatch(batch: FetchedBatch): Promise<void>;
  /** The group assigned this member these partitions (a new generation). */
  onAssignment(assignment: Record<string, number[]>): void;
  /** Everything not committed is about to be re-read: a rebalance started, the consumer crashed or re-subscribes. */
  onReset(reason: string): void;
}

export class LogConsumer {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  private subscribed: string[] = [];
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastMissing = '';
  /** When the group last confirmed this member (a heartbeat answered, a join): `performance.now()` ms. */
  private confirmedAtMs = -Infinity;

  constructor(
    kafka: Kafka,
    private readonly options: ConsumerOptions,
    private readonly handlers: ConsumerHandlers,
    private readonly logger: Logger,
  ) {
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      partitionAssigners: [BalancedAssigner],
      sessionTimeout: options.sessionTimeoutMs,
      rebalanceTimeout: options.rebalanceTimeoutMs,
      heartbeatInterval: options.heartbeatIntervalMs,
      maxBytesPerPartition: options.maxBytesPerPartition,
      maxBytes: options.maxBytes,
      maxWaitTimeInMs: options.maxWaitTimeMs,
      allowAutoTopicCreation: false,
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 30_000 },
    });
    this.admin = kafka.admin();
    const { GROUP_JOIN, REBALANCING, CRASH, HEARTBEAT } = this.consumer.events;
    this.consumer.on(HEARTBEAT, () => {
      this.confirmedAtMs = performance.now();
    });
    this.consumer.on(GROUP_JOIN, (event) => {
      this.confirmedAtMs = performance.now();
      this.handlers.onReset('group join');
      this.handlers.onAssignment(event.payload.memberAssignment);
      this.logger.info({ leader: event.payload.isLeader, assignment: event.payload.memberAssignment }, 'joined the consumer group');
    });
    this.consumer.on(REBALANCING, () => {
      this.handlers.onReset('rebalance');
    });
    this.consumer.on(CRASH, (event) => {
      this.handlers.onReset('consumer crash');
      this.logger.error({ err: event.payload.error, restart: event.payload.restart }, 'consumer crashed');
    });
  }

  /**
   * True when the group confirmed this member within the last `withinMs`. A member paused past its
   * session timeout (and so possibly replaced) sees false as soon as it runs again, before any
   * heartbeat tells it so.
   */
  confirmedWithin(withinMs: number): boolean {
    return performance.now() - this.confirmedAtMs < withinMs;
  }

  get topics(): readonly string[] {
    return this.subscribed;
  }

  async start(): Promise<void> {
    await this.admin.connect();
    await this.consumer.connect();
    this.subscribed = await this.matchingTopics();
    await this.subscribeAndRun();
    this.refreshTimer = setInterval(() => {
      this.refreshing = this.refreshing.then(() => this.refreshTopics());
    }, this.options.topicRefreshIntervalMs);
    this.refreshTimer.unref();
  }

  /** Commits `offset` (the next offset to read) for each partition. Throws when Kafka refuses. */
  async commit(offsets: readonly { topic: string; partition: number; offset: number }[]): Promise<void> {
    if (offsets.length === 0) return;
    await this.consumer.commitOffsets(offsets.map((o) => ({ topic: o.topic, partition: o.partition, offset: String(o.offset) })));
  }

  /** Stops fetching without leaving the group (shutdown: flush and commit come next). */
  pauseAll(): void {
    this.stopped = true;
    if (this.subscribed.length > 0) this.consumer.pause(this.subscribed.map((topic) => ({ topic })));
  }

  /** Leaves the group and disconnects. */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    await this.refreshing;
    await this.consumer.disconnect();
    await this.admin.disconnect();
  }

  /** Read through a method: the flag changes while awaits are pending. */
  private isStopped(): boolean {
    return this.stopped;
  }

  /**
   * The listed topics that exist plus the existing topics matching the pattern. A listed topic that
   * does not exist yet is waited for (kafkajs would fail the whole group on it), not fatal.
   */
  private async matchingTopics(): Promise<string[]> {
    const existing = await this.admin.listTopics();
    const present = new Set(existing);
    const wanted = new Set<string>();
    const missing: string[] = [];
    for (const topic of this.options.topics) {
      if (present.has(topic)) wanted.add(topic);
      else missing.push(topic);
    }
    const pattern = this.options.topicPattern;
    if (pattern !== undefined) for (const topic of existing) if (pattern.test(topic)) wanted.add(topic);
    for (const excluded of this.options.excludeTopics) wanted.delete(excluded);
    const missingKey = missing.join(',');
    if (missingKey !== this.lastMissing) {
      if (missing.length > 0) this.logger.warn({ missing }, 'listed topics do not exist yet; they are consumed once created');
      this.lastMissing = missingKey;
    }
    return [...wanted].sort();
  }

  private async refreshTopics(): Promise<void> {
    if (this.stopped) return;
    try {
      const topics = await this.matchingTopics();
      const added = topics.filter((t) => !this.subscribed.includes(t));
      if (added.length === 0 || this.isStopped()) return;
      this.logger.info({ added }, 'new topics match the subscription; re-subscribing');
      await this.consumer.stop();
      this.handlers.onReset('re-subscribe');
      this.subscribed = topics;
      await this.subscribeAndRun();
    } catch (error) {
      this.logger.warn({ err: error }, `topic refresh failed: ${describeError(error)}`);
    }
  }

  private async subscribeAndRun(): Promise<void> {
    if (this.subscribed.length > 0) await this.consumer.subscribe({ topics: this.subscribed, fromBeginning: this.options.fromBeginning });
    else this.logger.warn({ topics: this.options.topics, pattern: this.options.topicPattern?.source }, 'no topic matches the subscription yet; waiting for one');
    if (this.subscribed.length === 0) return;
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.handlers.onBatch(toFetchedBatch(payload)),
    });
  }
}

function toFetchedBatch(payload: EachBatchPayload): FetchedBatch {
  const { batch } = payload;
  return {
    topic: batch.topic,
    partition: batch.partition,
    highWatermark: Number(batch.highWatermark),
    messages: batch.messages.map((m) => ({ offset: Number(m.offset), value: m.value })),
    resolveOffset: (offset) => {
      payload.resolveOffset(String(offset));
    },
    heartbeat: () => payload.heartbeat(),
    isActive: () => payload.isRunning() && !payload.isStale(),
  };
}

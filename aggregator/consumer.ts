/**
 * The aggregator's Kafka consumer: a kafkajs consumer group behind the project's own interface.
 * It subscribes by topic list and/or regex and re-checks the topics periodically: kafkajs resolves a
 * regex only when subscribing, so the consumer finds new matching topics itself. When it does, it
 * rejoins the group without leaving it, advertising the new topics (kafkajs-group.ts); every member
 * refreshes its topic list before each join, so one rebalance of the group picks a new topic up on
 * all of them, and the sticky balanced assigner moves only the partitions it must. Offsets are
 * committed only when asked (never automatically).
 */
import type { Admin, Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { balancedAssigner, type OwnedPartitions } from './balanced-assigner.js';
import { GroupControl, installGroupPatch, withGroupControl, type JoinInfo } from './kafkajs-group.js';

/** How long a join waits for the pipeline to stop its writes, and for the topic list, at most. */
const BEFORE_JOIN_TIMEOUT_MS = 10_000;

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
  /**
   * The group is rebalancing: partitions may move once it completes. Resolves when this member has
   * stopped writing; the join waits for it (up to a bound) so that no write of a partition that moves
   * overlaps its next owner's.
   */
  onRebalanceStart(reason: string): Promise<void>;
  /**
   * The group assigned this member these partitions (a new generation). `continuing` is true when the
   * member kept its membership from the generation before (same member id, the next generation): the
   * partitions it keeps were nobody else's meanwhile, so what it holds of them stays valid. Otherwise
   * everything not committed is re-read.
   */
  onAssignment(assignment: Record<string, number[]>, continuing: boolean): void;
  /** Everything not committed is about to be re-read: the consumer crashed or re-subscribes. */
  onReset(reason: string): void;
}

export class LogConsumer {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  /** Rejoins without leaving the group; undefined when kafkajs' internals are not the expected ones. */
  private readonly control: GroupControl | undefined;
  private subscribed: string[] = [];
  /** The topics the join under way advertises (listed right before it). */
  private advertised: readonly string[] = [];
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastMissing = '';
  /** When the group last confirmed this member (a heartbeat answered, a join): `performance.now()` ms. */
  private confirmedAtMs = -Infinity;
  /** The last JoinGroup answer (generation, member id). */
  private joining: JoinInfo | undefined;
  /** The generation and member id of the last completed join, and what it assigned. */
  private member: { generationId: number; memberId: string; owned: Record<string, number[]> } | undefined;

  constructor(
    kafka: Kafka,
    private readonly options: ConsumerOptions,
    private readonly handlers: ConsumerHandlers,
    private readonly logger: Logger,
  ) {
    this.control = this.groupControl();
    const assigner = balancedAssigner({ owned: () => this.owned() });
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      partitionAssigners: [this.control === undefined ? assigner : withGroupControl(assigner, this.control)],
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
      const { memberId, memberAssignment, isLeader } = event.payload;
      const previous = this.member;
      const generationId = this.joining?.memberId === memberId ? this.joining.generationId : undefined;
      const continuing =
        this.control !== undefined && previous !== undefined && generationId !== undefined && previous.memberId === memberId && generationId === previous.generationId + 1;
      this.member = generationId === undefined ? undefined : { generationId, memberId, owned: memberAssignment };
      // Before the runner fetches again: the pipeline seeks the partitions it keeps.
      this.handlers.onAssignment(memberAssignment, continuing);
      this.logger.info({ leader: isLeader, generation: generationId, assignment: memberAssignment, continuing }, 'joined the consumer group');
    });
    this.consumer.on(REBALANCING, () => {
      void this.handlers.onRebalanceStart('rebalance');
    });
    this.consumer.on(CRASH, (event) => {
      this.member = undefined;
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

  /** The group generation this member last joined; undefined before its first join. */
  get generation(): number | undefined {
    return this.member?.generationId;
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

  /** The next fetch of the partition starts at `offset` (call from `onAssignment`, before fetching resumes). */
  seek(topic: string, partition: number, offset: number): void {
    try {
      this.consumer.seek({ topic, partition, offset: String(offset) });
    } catch (error) {
      // Fetching then starts at the committed offset, and the pipeline skips what it already holds.
      this.logger.warn({ err: error, topic, partition, offset }, `seek failed: ${describeError(error)}`);
    }
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

  private groupControl(): GroupControl | undefined {
    try {
      installGroupPatch();
    } catch (error) {
      this.logger.warn({ err: error }, `new topics will cost a leave and a rejoin of every member: ${describeError(error)}`);
      return undefined;
    }
    return new GroupControl(
      {
        beforeJoin: () => this.beforeJoin(),
        joined: (info) => {
          this.joining = info;
          this.subscribed = [...info.topics].sort();
        },
        addFailed: (topics, error) => {
          this.advertised = [];
          this.logger.warn({ err: error, topics }, `new topics could not be added before joining; tried again at the next refresh: ${describeError(error)}`);
        },
      },
      this.options.fromBeginning,
    );
  }

  /** What this member owns, for the leader's sticky assignment. */
  private owned(): OwnedPartitions | undefined {
    const member = this.member;
    return member === undefined ? undefined : { generation: member.generationId, partitions: member.owned };
  }

  /** Before every JoinGroup: the pipeline stops writing, and the topic list is read again. */
  private async beforeJoin(): Promise<readonly string[] | undefined> {
    const stopped = this.handlers.onRebalanceStart('join').then(() => true);
    if (!(await within(stopped, BEFORE_JOIN_TIMEOUT_MS))) this.logger.warn({ timeoutMs: BEFORE_JOIN_TIMEOUT_MS }, 'writes still in flight when rejoining the group');
    try {
      const topics = await within(this.matchingTopics(), BEFORE_JOIN_TIMEOUT_MS);
      if (topics === false) return undefined;
      this.advertised = topics;
      return topics;
    } catch (error) {
      this.logger.warn({ err: error }, `topic list unavailable before joining; keeping the current one: ${describeError(error)}`);
      return undefined;
    }
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
      // A topic the join under way advertises needs no other one.
      const added = topics.filter((t) => !this.subscribed.includes(t) && !this.advertised.includes(t));
      if (added.length === 0 || this.isStopped()) return;
      if (this.control !== undefined && this.subscribed.length > 0) {
        // One rebalance: this member's next heartbeat fails as if the coordinator said
        // REBALANCE_IN_PROGRESS, it rejoins with the new topics, and every member rejoins with them.
        this.logger.info({ added }, 'new topics match the subscription; rejoining the group with them');
        this.control.requestRejoin();
        return;
      }
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

/** Resolves with the promise's value, or false when it did not settle within `timeoutMs`. */
async function within<T>(promise: Promise<T>, timeoutMs: number): Promise<T | false> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What kafkajs does not expose about a consumer group member, used so that a new matching topic costs
 * the group one rebalance, without any member leaving it. kafkajs resolves a subscription only when
 * `subscribe()` is called, and `subscribe()` refuses a running consumer, so the public route is
 * `stop()` (which sends LeaveGroup: a rebalance), `subscribe()`, `run()` (a JoinGroup: another one),
 * on every member. Instead, this module:
 *
 * - refreshes a member's topic list right before each JoinGroup it sends (whatever made it rejoin), so
 *   every member of a rebalance advertises the new topics in that same rebalance;
 * - makes the member that found new topics rejoin the way kafkajs rejoins when the coordinator answers
 *   REBALANCE_IN_PROGRESS: same member id, no LeaveGroup. Its JoinGroup carries changed metadata, which
 *   starts one rebalance of the group; the other members learn it from their next heartbeat.
 *
 * It relies on these internals of kafkajs **2.2.4** (the exact version package.json pins; kafkajs is
 * unmaintained). test/unit/aggregator/kafkajs-group.test.ts fails when any of them changes; at run
 * time, a kafkajs without them makes {@link installGroupPatch} throw, and the consumer falls back to
 * stop/subscribe/run.
 *
 * - src/consumer/consumerGroup.js exports the ConsumerGroup class (line 40); its private join method
 *   is keyed by `Symbol('private:ConsumerGroup:join')` (lines 34-38) and sends JoinGroup with each
 *   assigner's `protocol({ topics: this.topicsSubscribed })` (lines 164-186), then sets
 *   `this.generationId` and `this.memberId`.
 * - Its fields `cluster` (line 87), `topicsSubscribed` (line 90), `topicConfigurations` (line 91: the
 *   consumer's own `{ [topic]: { fromBeginning } }`, read when a partition has no committed offset,
 *   offsetManager/index.js lines 142 and 326) and `assigners` (line 95).
 * - The sync step (lines 251-275) drops assigned partitions of topics missing from `topicsSubscribed`,
 *   and partition metadata comes only for the cluster's target topics (cluster/index.js lines
 *   216-246, `addMultipleTargetTopics`): both must hold a new topic before the member joins.
 * - `heartbeat()` (lines 442-444) is what the runner calls after each batch and each empty fetch
 *   (runner.js lines 207-216, 371-373, 435-458) and what `eachBatch`'s `heartbeat()` calls.
 * - runner.js lines 107-129: an error whose `type` is REBALANCE_IN_PROGRESS (errors.js lines 268-271,
 *   `isRebalancing`) makes the runner emit REBALANCING and call `consumerGroup.joinAndSync()`, keeping
 *   its member id (LeaveGroup is sent only by `stop()`, runner.js lines 173-190).
 */
import { createRequire } from 'node:module';
import type { PartitionAssigner } from 'kafkajs';

/** The kafkajs version whose internals this module was written against. */
export const KAFKAJS_VERSION = '2.2.4';

const JOIN_SYMBOL = 'private:ConsumerGroup:join';
const REBALANCE_IN_PROGRESS_CODE = 27;
const PATCHED = Symbol.for('logship.kafkajs-group.patched');
const CONTROL = Symbol('logship.kafkajs-group.control');

/** kafkajs no longer has what this module uses. */
export class InternalsChangedError extends Error {
  constructor(what: string) {
    super(`kafkajs internals changed: ${what} (this module was written for kafkajs ${KAFKAJS_VERSION})`);
    this.name = 'InternalsChangedError';
  }
}

/** The fields of kafkajs' ConsumerGroup this module reads and writes. */
interface InternalConsumerGroup {
  cluster: { addMultipleTargetTopics(topics: string[]): Promise<void> };
  topicsSubscribed: string[];
  topicConfigurations: Record<string, { fromBeginning?: boolean } | undefined>;
  assigners: readonly object[];
  generationId: number | null;
  memberId: string | null;
}

type Method = (this: InternalConsumerGroup, ...args: unknown[]) => Promise<unknown>;

export interface JoinInfo {
  readonly generationId: number;
  readonly memberId: string;
  /** Every topic the member subscribes to after this join. */
  readonly topics: readonly string[];
}

export interface GroupHooks {
  /**
   * Right before each JoinGroup the member sends: stop what must stop before partitions move, and
   * say which topics to subscribe to (added to the current ones; undefined keeps them). Never throws.
   */
  beforeJoin(): Promise<readonly string[] | undefined>;
  /** JoinGroup answered: the generation the member is joining. The assignment follows (GROUP_JOIN). */
  joined(info: JoinInfo): void;
  /** New topics could not be added before a join (metadata refused): they are tried at the next one. */
  addFailed(topics: readonly string[], error: unknown): void;
}

/** One consumer's link to the patched kafkajs: its hooks, and a rejoin request. */
export class GroupControl {
  private rejoinWanted = false;

  constructor(
    readonly hooks: GroupHooks,
    /** Where partitions of topics added later start without a committed offset. */
    readonly fromBeginning: boolean,
  ) {}

  /** Makes the member rejoin the group (same member id, no LeaveGroup) at its next heartbeat. */
  requestRejoin(): void {
    this.rejoinWanted = true;
  }

  get rejoinRequested(): boolean {
    return this.rejoinWanted;
  }

  /** @internal The rejoin is under way. */
  clearRejoin(): void {
    this.rejoinWanted = false;
  }
}

/** The assigner factory, its assigners carrying `control` so that the patch finds the member's hooks. */
export function withGroupControl(factory: PartitionAssigner, control: GroupControl): PartitionAssigner {
  return (config) => Object.assign(factory(config), { [CONTROL]: control });
}

function controlOf(group: InternalConsumerGroup): GroupControl | undefined {
  if (!Array.isArray(group.assigners)) return undefined;
  for (const assigner of group.assigners) {
    const control = (assigner as Record<symbol, unknown>)[CONTROL];
    if (control instanceof GroupControl) return control;
  }
  return undefined;
}

interface KafkajsInternals {
  proto: Record<string | symbol, unknown>;
  join: symbol;
  rebalanceError: () => Error;
}

/** Finds the internals; throws {@link InternalsChangedError} when one is missing. */
export function kafkajsInternals(): KafkajsInternals {
  const require = createRequire(import.meta.url);
  const version = (require('kafkajs/package.json') as { version?: string }).version;
  if (version !== KAFKAJS_VERSION) throw new InternalsChangedError(`installed version is ${String(version)}`);
  let ConsumerGroup: unknown;
  let errors: { KafkaJSProtocolError?: new (e: unknown) => Error };
  let protocolErrors: { createErrorFromCode?: (code: number) => { type?: string } };
  try {
    ConsumerGroup = require('kafkajs/src/consumer/consumerGroup.js');
    errors = require('kafkajs/src/errors.js') as typeof errors;
    protocolErrors = require('kafkajs/src/protocol/error.js') as typeof protocolErrors;
  } catch (error) {
    throw new InternalsChangedError(`a source file is missing (${error instanceof Error ? error.message : String(error)})`);
  }
  if (typeof ConsumerGroup !== 'function') throw new InternalsChangedError('consumerGroup.js exports no class');
  const proto = (ConsumerGroup as { prototype: Record<string | symbol, unknown> }).prototype;
  const join = Object.getOwnPropertySymbols(proto).find((s) => s.description === JOIN_SYMBOL);
  if (join === undefined || typeof proto[join] !== 'function') throw new InternalsChangedError(`ConsumerGroup has no ${JOIN_SYMBOL}`);
  if (typeof proto.heartbeat !== 'function') throw new InternalsChangedError('ConsumerGroup has no heartbeat()');
  const { KafkaJSProtocolError } = errors;
  const { createErrorFromCode } = protocolErrors;
  if (typeof KafkaJSProtocolError !== 'function' || typeof createErrorFromCode !== 'function') throw new InternalsChangedError('no KafkaJSProtocolError or createErrorFromCode');
  if (createErrorFromCode(REBALANCE_IN_PROGRESS_CODE).type !== 'REBALANCE_IN_PROGRESS') throw new InternalsChangedError('error code 27 is not REBALANCE_IN_PROGRESS');
  return { proto, join, rebalanceError: () => new KafkaJSProtocolError(createErrorFromCode(REBALANCE_IN_PROGRESS_CODE)) };
}

/**
 * Patches kafkajs' ConsumerGroup (once per process). Consumers whose assigners carry no
 * {@link GroupControl} behave exactly as before. Throws {@link InternalsChangedError}.
 */
export function installGroupPatch(): void {
  const { proto, join, rebalanceError } = kafkajsInternals();
  if (proto[PATCHED] === true) return;
  const originalJoin = proto[join] as Method;
  const originalHeartbeat = proto.heartbeat as Method;

  proto[join] = async function patchedJoin(this: InternalConsumerGroup, ...args: unknown[]): Promise<unknown> {
    const control = controlOf(this);
    if (control === undefined) return originalJoin.apply(this, args);
    const wanted = await control.hooks.beforeJoin();
    // A request made until now is served by this join: it advertises the topics just listed.
    control.clearRejoin();
    const added = (wanted ?? []).filter((topic) => !this.topicsSubscribed.includes(topic));
    if (added.length > 0) {
      try {
        // Metadata first: a topic whose partitions the member does not know would be dropped at sync.
        await this.cluster.addMultipleTargetTopics(added);
        for (const topic of added) this.topicConfigurations[topic] ??= { fromBeginning: control.fromBeginning };
        this.topicsSubscribed = [...this.topicsSubscribed, ...added];
      } catch (error) {
        control.hooks.addFailed(added, error);
      }
    }
    const result = await originalJoin.apply(this, args);
    if (this.generationId !== null && this.memberId !== null) control.hooks.joined({ generationId: this.generationId, memberId: this.memberId, topics: [...this.topicsSubscribed] });
    return result;
  };

  proto.heartbeat = async function patchedHeartbeat(this: InternalConsumerGroup, ...args: unknown[]): Promise<unknown> {
    // Thrown until the rejoin starts (the join clears it): a caller that swallows one heartbeat's
    // error (a keep-alive timer) does not lose the request.
    if (controlOf(this)?.rejoinRequested === true) throw rebalanceError();
    return originalHeartbeat.apply(this, args);
  };

  proto[PATCHED] = true;
}

/**
 * kafkajs-group.ts reaches into kafkajs internals. These tests fail loudly when they change: the
 * pinned version, and a real kafkajs ConsumerGroup (its coordinator and cluster are stand-ins) joining
 * with topics added before the join, keeping their partitions at sync, and rejoining on request.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { balancedAssigner, decodeOwned } from '../../../aggregator/balanced-assigner.js';
import { GroupControl, installGroupPatch, KAFKAJS_VERSION, withGroupControl, type JoinInfo } from '../../../aggregator/kafkajs-group.js';
import { REPO_ROOT } from '../../../scripts/stack/context.js';

const require = createRequire(import.meta.url);
const { AssignerProtocol } = kafkajs;
/** What the runner tests before rejoining (runner.js line 115). */
const { isRebalancing } = require('kafkajs/src/errors.js') as { isRebalancing: (error: unknown) => boolean };

type ConsumerGroupClass = new (options: Record<string, unknown>) => {
  joinAndSync(): Promise<void>;
  heartbeat(options: { interval: number }): Promise<void>;
  assigned(): { topic: string; partitions: number[] }[];
  topicsSubscribed: string[];
};

const silent = { namespace: () => silent, info: () => undefined, debug: () => undefined, warn: () => undefined, error: () => undefined };

/** A one-member group: the coordinator answers JoinGroup with this member as leader. */
function standIns(partitions: Map<string, number[]>) {
  const joins: { topics: string[]; owned: ReturnType<typeof decodeOwned> }[] = [];
  let heartbeats = 0;
  let generationId = 4;
  const coordinator = {
    joinGroup: ({ groupProtocols }: { groupProtocols: { name: string; metadata: Buffer }[] }) => {
      const protocol = groupProtocols[0];
      if (protocol === undefined) throw new Error('no protocol');
      const metadata = AssignerProtocol.MemberMetadata.decode(protocol.metadata);
      joins.push({ topics: metadata?.topics ?? [], owned: decodeOwned(metadata?.userData) });
      generationId++;
      return Promise.resolve({ generationId, leaderId: 'member-1', memberId: 'member-1', groupProtocol: protocol.name, members: [{ memberId: 'member-1', memberMetadata: protocol.metadata }] });
    },
    syncGroup: ({ groupAssignment }: { groupAssignment: { memberAssignment: Buffer }[] }) => Promise.resolve({ memberAssignment: groupAssignment[0]?.memberAssignment }),
    heartbeat: () => {
      heartbeats++;
      return Promise.resolve();
    },
  };
  const targets = new Set<string>();
  const cluster = {
    findGroupCoordinator: () => Promise.resolve(coordinator),
    committedOffsets: () => ({}),
    refreshMetadata: () => Promise.resolve(),
    refreshMetadataIfNecessary: () => Promise.resolve(),
    addMultipleTargetTopics: (topics: string[]) => {
      for (const t of topics) targets.add(t);
      return Promise.resolve();
    },
    findTopicPartitionMetadata: (topic: string) => (targets.has(topic) ? (partitions.get(topic) ?? []).map((partitionId) => ({ partitionId })) : []),
  };
  return { cluster, joins, targets, heartbeats: () => heartbeats };
}

function consumerGroup(cluster: object, control: GroupControl | undefined, topicConfigurations: Record<string, unknown>) {
  const ConsumerGroup = require('kafkajs/src/consumer/consumerGroup.js') as ConsumerGroupClass;
  const Emitter = require('kafkajs/src/instrumentation/emitter.js') as new () => object;
  const factory = balancedAssigner();
  const assigner = (control === undefined ? factory : withGroupControl(factory, control))({ cluster, groupId: 'g', logger: silent } as never);
  return new ConsumerGroup({
    retry: { retries: 0 },
    cluster,
    groupId: 'g',
    topics: Object.keys(topicConfigurations),
    topicConfigurations,
    logger: silent,
    instrumentationEmitter: new Emitter(),
    assigners: [assigner],
    sessionTimeout: 10_000,
    rebalanceTimeout: 10_000,
    maxBytesPerPartition: 1024,
    minBytes: 1,
    maxBytes: 1024,
    maxWaitTimeInMs: 100,
    autoCommit: false,
    isolationLevel: 1,
    rackId: '',
    metadataMaxAge: 300_000,
  });
}

describe('kafkajs internals used by kafkajs-group.ts', () => {
  it(`pins kafkajs ${KAFKAJS_VERSION} exactly, and that is the version installed`, () => {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    assert.equal(pkg.dependencies.kafkajs, KAFKAJS_VERSION, 'package.json must pin the exact kafkajs version kafkajs-group.ts was written for');
    assert.equal((require('kafkajs/package.json') as { version: string }).version, KAFKAJS_VERSION);
  });

  it('the runner still rejoins (joinAndSync, same member) when a heartbeat says REBALANCE_IN_PROGRESS, and leaves only in stop()', () => {
    const runner = readFileSync(require.resolve('kafkajs/src/consumer/runner.js'), 'utf8');
    assert.match(runner, /if \(isRebalancing\(e\)\) \{[\s\S]{0,600}?this\.instrumentationEmitter\.emit\(REBALANCING[\s\S]{0,200}?await this\.consumerGroup\.joinAndSync\(\)\s*return/);
    assert.match(runner, /async heartbeat\(\) \{\s*try \{\s*await this\.consumerGroup\.heartbeat\(/);
    assert.equal(runner.match(/consumerGroup\.leave\(\)/g)?.length, 1, 'LeaveGroup only from stop()');
  });

  it('a join advertises the topics added just before it, keeps their partitions at sync, and reports the generation', async () => {
    installGroupPatch();
    installGroupPatch(); // once per process, whatever the callers
    const { cluster, joins, targets } = standIns(
      new Map([
        ['old', [0, 1]],
        ['new', [0]],
      ]),
    );
    targets.add('old');
    const joined: JoinInfo[] = [];
    const control = new GroupControl({ beforeJoin: () => Promise.resolve(['old', 'new']), joined: (info) => joined.push(info), addFailed: () => assert.fail('add failed') }, true);
    const configurations: Record<string, unknown> = { old: { fromBeginning: true } };
    const group = consumerGroup(cluster, control, configurations);
    await group.joinAndSync();
    assert.deepEqual(joins[0]?.topics, ['old', 'new'], 'JoinGroup metadata names the new topic');
    assert.deepEqual(
      group.assigned().sort((a, b) => a.topic.localeCompare(b.topic)),
      [
        { topic: 'new', partitions: [0] },
        { topic: 'old', partitions: [0, 1] },
      ],
      'the partitions of the new topic are not dropped at sync',
    );
    assert.deepEqual(configurations.new, { fromBeginning: true }, 'the new topic starts where the configuration says');
    assert.ok(targets.has('new'), 'partition metadata was asked for the new topic');
    assert.deepEqual(joined, [{ generationId: 5, memberId: 'member-1', topics: ['old', 'new'] }]);
  });

  it('a rejoin request fails heartbeats as REBALANCE_IN_PROGRESS until the member joins again', async () => {
    installGroupPatch();
    const { cluster, targets, heartbeats } = standIns(new Map([['old', [0]]]));
    targets.add('old');
    const control = new GroupControl({ beforeJoin: () => Promise.resolve(undefined), joined: () => undefined, addFailed: () => undefined }, false);
    const group = consumerGroup(cluster, control, { old: { fromBeginning: false } });
    await group.joinAndSync();
    await group.heartbeat({ interval: 0 });
    assert.equal(heartbeats(), 1);
    control.requestRejoin();
    for (let i = 0; i < 2; i++) {
      await assert.rejects(group.heartbeat({ interval: 0 }), (error: Error & { type?: string }) => isRebalancing(error) && error.type === 'REBALANCE_IN_PROGRESS');
    }
    await group.joinAndSync();
    await group.heartbeat({ interval: 0 });
    assert.equal(heartbeats(), 2, 'heartbeats go to the coordinator again after the rejoin');
  });

  it('leaves consumers without a GroupControl alone', async () => {
    installGroupPatch();
    const { cluster, joins, targets } = standIns(new Map([['old', [0]]]));
    targets.add('old');
    const group = consumerGroup(cluster, undefined, { old: { fromBeginning: false } });
    await group.joinAndSync();
    await group.heartbeat({ interval: 0 });
    assert.deepEqual(joins[0]?.topics, ['old']);
    assert.deepEqual(group.topicsSubscribed, ['old']);
  });
});

/**
 * Three aggregator members over five topics with uneven partition counts: the group's assignment, as
 * the broker reports it, gives each member a share within one partition of the others, every
 * partition to exactly one member.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import type { S3Client } from '@aws-sdk/client-s3';
import { createKafka } from '../../shared/kafka.js';
import { aggregatorConfigFile, deleteS3Prefix, RecordProducer, startAggregatorProcess, testS3Client } from '../helpers/aggregator.js';
import type { LogshipProcess } from '../helpers/process.js';
import { kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const { AssignerProtocol } = kafkajs;
const PARTITIONS = [1, 2, 3, 4, 6];

describe('aggregator: balanced assignment', () => {
  const name = uniqueName('agg-assign');
  const topics = PARTITIONS.map((_, i) => `${name}.ns-${String(i)}`);
  const groupId = `${name}-group`;
  const producer = new RecordProducer();
  const members: LogshipProcess[] = [];
  let s3: S3Client;

  before(async () => {
    s3 = testS3Client();
    await producer.connect();
    await producer.createTopics(topics.map((topic, i) => ({ topic, partitions: PARTITIONS[i] ?? 1 })));
  });

  after(async () => {
    await Promise.all(members.map((m) => m.stop()));
    await producer.deleteTopics([...topics, `${name}-deadletter`]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    s3.destroy();
  });

  it('spreads 16 partitions of 5 topics over 3 members as 5/5/6', async () => {
    const config = aggregatorConfigFile({ groupId, topicPattern: `^${name.replaceAll('-', '\\-')}\\.`, s3Prefix: name, deadLetterTopic: `${name}-deadletter` });
    for (let i = 0; i < 3; i++) members.push(startAggregatorProcess(config));
    await Promise.all(members.map((m) => m.opsUrl));

    const admin = createKafka(kafkaConfig({ clientId: 'logship-it-admin' }), testLogger()).admin();
    await admin.connect();
    try {
      const shares = await waitFor(
        'a stable group of 3 members holding all 16 partitions',
        async () => {
          const { groups } = await admin.describeGroups([groupId]);
          const group = groups[0];
          if (group?.state !== 'Stable' || group.members.length !== 3) return undefined;
          const owned = group.members.map((m) => {
            const assignment = AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment ?? {};
            return Object.entries(assignment).flatMap(([topic, partitions]) => partitions.map((p) => `${topic}/${String(p)}`));
          });
          return owned.flat().length === 16 ? owned : undefined;
        },
        90_000,
        500,
      );
      const sizes = shares.map((s) => s.length).sort((a, b) => a - b);
      assert.deepEqual(sizes, [5, 5, 6]);
      assert.equal(new Set(shares.flat()).size, 16, 'each partition owned by exactly one member');
    } finally {
      await admin.disconnect();
    }
  });
});

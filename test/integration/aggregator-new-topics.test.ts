/**
 * New matching topics while records flow, three aggregator members on a topic pattern: each new topic
 * costs the group exactly one rebalance (the generation the broker hands out rises by one per topic),
 * the members keep every partition they owned with its batches (none is revoked), and S3 holds every
 * record exactly once. Only the first member re-reads the topic list on a timer; the other two learn
 * the new topics only when they rejoin, in the rebalance the first one started. Then a fourth member
 * joins: one rebalance, and only the partitions it takes over leave their owners.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { parse, stringify } from 'yaml';
import type { S3Client } from '@aws-sdk/client-s3';
import { stackPaths } from '../../scripts/stack/context.js';
import { createKafka } from '../../shared/kafka.js';
import type { LogRecord } from '../../shared/record.js';
import { aggregatorConfigFile, deleteS3Prefix, logRecord, readS3Objects, RecordProducer, startAggregatorProcess, testS3Client } from '../helpers/aggregator.js';
import { metricValue } from '../helpers/agent.js';
import type { LogshipProcess } from '../helpers/process.js';
import { kafkaConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const { AssignerProtocol } = kafkajs;
const MEMBERS = 3;
const NEW_TOPICS = 3;
/** Bounds and pace of the background producer: a round of records per live topic every ROUND_MS. */
const MAX_RECORDS = 150_000;
const MAX_PRODUCE_MS = 180_000;
const RECORDS_PER_ROUND = 30;
const ROUND_MS = 25;

describe('aggregator: new topics while records flow', () => {
  const name = uniqueName('agg-newtopic');
  const groupId = `${name}-group`;
  const dlq = `${name}-deadletter`;
  const initial = [`${name}.ns-0`, `${name}.ns-1`];
  const added = Array.from({ length: NEW_TOPICS }, (_, i) => `${name}.new-${String(i)}`);
  const producer = new RecordProducer();
  const members: LogshipProcess[] = [];
  const admin = createKafka(kafkaConfig({ clientId: 'logship-it-admin' }), testLogger()).admin();
  let s3: S3Client;

  before(async () => {
    s3 = testS3Client();
    await producer.connect();
    await admin.connect();
    await producer.createTopics(initial.map((topic) => ({ topic, partitions: 3 })));
  });

  after(async () => {
    await Promise.all(members.map((m) => m.stop()));
    await admin.disconnect();
    await producer.deleteTopics([...initial, ...added, dlq]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    s3.destroy();
  });

  /** The partitions the group assigned, once it is stable with every member. */
  async function stableAssignment(size = MEMBERS): Promise<string[] | undefined> {
    const { groups } = await admin.describeGroups([groupId]);
    const group = groups[0];
    if (group?.state !== 'Stable' || group.members.length !== size) return undefined;
    return group.members.flatMap((m) => Object.entries(AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment ?? {}).flatMap(([t, ps]) => ps.map((p) => `${t}/${String(p)}`)));
  }

  /** The generation every member reports, once they all report the same one. */
  async function generation(): Promise<number | undefined> {
    const urls = await Promise.all(members.map((m) => m.opsUrl));
    const values = await Promise.all(urls.map((url) => metricValue(url, 'logship_aggregator_group_generation')));
    return values.every((v) => v > 0 && v === values[0]) ? values[0] : undefined;
  }

  async function sumOverMembers(metric: string, labels: Record<string, string> = {}): Promise<number> {
    const urls = await Promise.all(members.map((m) => m.opsUrl));
    const values = await Promise.all(urls.map((url) => metricValue(url, metric, labels)));
    return values.reduce((a, b) => a + b, 0);
  }

  /** Generations the broker stabilized for the group, from its own log: an observer independent of the members. */
  function brokerGenerations(): number[] {
    const log = readFileSync(join(stackPaths().logs, 'kafka.log'), 'utf8');
    return [...log.matchAll(new RegExp(`Stabilized group ${groupId} generation (\\d+)`, 'g'))].map((m) => Number(m[1]));
  }

  it(`costs one rebalance per new topic, keeps the partitions that stay, and writes every record once`, async (t) => {
    const config = aggregatorConfigFile({ groupId, topicPattern: `^${name.replaceAll('-', '\\-')}\\.`, s3Prefix: name, deadLetterTopic: dlq });
    // The others' timers do not fire during the test: only a join shows them the new topics.
    const quiet = config.replace(/\.yaml$/, '-quiet.yaml');
    const settings = parse(readFileSync(config, 'utf8')) as { kafka: Record<string, unknown> };
    writeFileSync(quiet, stringify({ ...settings, kafka: { ...settings.kafka, topicRefreshIntervalMs: 3_600_000 } }));
    for (let i = 0; i < MEMBERS; i++) members.push(startAggregatorProcess(i === 0 ? config : quiet));
    await Promise.all(members.map((m) => m.opsUrl));
    await waitFor('a stable group of 3 members holding the 6 initial partitions', async () => ((await stableAssignment())?.length === 6 ? true : undefined), 90_000, 250);
    const first = await waitFor('every member on the same generation', generation, 30_000, 250);
    const revokedBefore = await sumOverMembers('logship_aggregator_rebalance_partitions_total', { outcome: 'revoked' });
    const keptBefore = await sumOverMembers('logship_aggregator_rebalance_partitions_total', { outcome: 'kept' });

    // Records flow into every topic the whole time, new topics included as soon as they exist.
    const live = [...initial];
    const produced: LogRecord[] = [];
    const flow = { producing: true, cappedEarly: false };
    const started = performance.now();
    const production = (async () => {
      let n = 0;
      while (flow.producing && n < MAX_RECORDS && performance.now() - started < MAX_PRODUCE_MS) {
        for (const topic of [...live]) {
          const namespace = topic.slice(name.length + 1);
          const records = Array.from({ length: RECORDS_PER_ROUND }, () => {
            const i = n++;
            return logRecord(i, namespace, Date.UTC(2026, 10, 22, 4) + i, { pod: `api-${String(i % 16)}` });
          });
          await producer.send(topic, records, 5);
          produced.push(...records);
        }
        await new Promise((resolve) => setTimeout(resolve, ROUND_MS));
      }
      flow.cappedEarly = flow.producing;
    })();

    const generations = [first];
    let revokedByTopics = -1;
    let revokedByJoin = -1;
    let joinGeneration = -1;
    try {
      for (const [i, topic] of added.entries()) {
        await waitFor(`records flowing before ${topic}`, () => produced.length >= (i + 1) * 1_000 || undefined, 60_000, 50);
        await producer.createTopics([{ topic, partitions: 2 }]);
        live.push(topic);
        const partitions = 6 + 2 * (i + 1);
        await waitFor(`the group assigning ${topic}`, async () => ((await stableAssignment())?.length === partitions ? true : undefined), 60_000, 250);
        generations.push(await waitFor(`every member on the generation that assigned ${topic}`, generation, 30_000, 250));
      }
      revokedByTopics = (await sumOverMembers('logship_aggregator_rebalance_partitions_total', { outcome: 'revoked' })) - revokedBefore;
      // A fourth member: 12 partitions become 3 each, so exactly 3 leave their owners.
      const revokedBeforeJoin = await sumOverMembers('logship_aggregator_rebalance_partitions_total', { outcome: 'revoked' });
      members.push(startAggregatorProcess(quiet));
      await waitFor('a stable group of 4 members holding 12 partitions', async () => ((await stableAssignment(MEMBERS + 1))?.length === 12 ? true : undefined), 60_000, 250);
      joinGeneration = await waitFor('every member on the generation after the fourth joined', generation, 30_000, 250);
      revokedByJoin = (await sumOverMembers('logship_aggregator_rebalance_partitions_total', { outcome: 'revoked' })) - revokedBeforeJoin;
    } finally {
      flow.producing = false;
      await production;
    }

    const expected = new Set(produced.map((r) => r.event_id));
    assert.equal(expected.size, produced.length);
    const rows = await waitFor(
      `all ${String(produced.length)} records in S3`,
      async () => {
        const lines = (await readS3Objects(s3, name)).flatMap((o) => o.lines);
        return lines.length >= produced.length ? lines : undefined;
      },
      120_000,
      1_000,
    );
    // Written after the last records, several topic refreshes later: any late rebalance shows here.
    const last = await waitFor('every member on the same generation', generation, 30_000, 250);
    const steps = generations.slice(1).map((g, i) => g - (generations[i] ?? g));
    const broker = brokerGenerations().filter((g) => g > first);
    const kept = (await sumOverMembers('logship_aggregator_rebalance_partitions_total', { outcome: 'kept' })) - keptBefore;
    t.diagnostic(`${String(produced.length)} records; generations: first ${String(first)}, after each new topic ${generations.slice(1).join(', ')}, after the fourth member joined ${String(joinGeneration)} (${String(revokedByJoin)} partitions moved), at the end ${String(last)}; broker log stabilized ${broker.join(', ')}; partitions kept over the rebalances ${String(kept)}`);

    assert.ok(!flow.cappedEarly, 'records flowed until the last new topic was assigned');
    const ids = rows.map((line) => (JSON.parse(line) as LogRecord).event_id);
    assert.equal(new Set(ids).size, ids.length, 'no record twice in S3');
    assert.deepEqual([...new Set(ids)].sort(), [...expected].sort(), 'every record in S3');
    assert.deepEqual(steps, Array.from({ length: NEW_TOPICS }, () => 1), 'one rebalance per new topic');
    assert.equal(revokedByTopics, 0, 'no partition moved between members for a new topic');
    assert.equal(joinGeneration, first + NEW_TOPICS + 1, 'one rebalance for the new member');
    assert.equal(revokedByJoin, 3, 'only the partitions the new member took over moved');
    assert.equal(last, joinGeneration, 'no other rebalance');
    assert.ok(kept > 0, 'partitions were kept with their batches');
  });
});

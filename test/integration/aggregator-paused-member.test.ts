/**
 * A member paused past its session timeout (SIGSTOP: a long GC pause, a frozen node) while another
 * takes its partitions over, then resumed (SIGCONT) with batches in hand: against the real Kafka and
 * S3 server, S3 should end up with every record exactly once: the resumed member writes nothing until
 * the group confirms it again, and its late state writes are refused (If-Match).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import type { LogRecord } from '../../shared/record.js';
import { aggregatorConfigFile, committedOffsets, deleteS3Prefix, logRecord, readS3Objects, RecordProducer, startAggregatorProcess, testS3Client, topicEndOffsets } from '../helpers/aggregator.js';
import { metricValue } from '../helpers/agent.js';
import type { LogshipProcess } from '../helpers/process.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const PARTITIONS = 4;
const BASE = Date.UTC(2026, 10, 22, 6, 0);

describe('aggregator: a member paused past its session timeout, then resumed', () => {
  const name = uniqueName('paused');
  const topic = `${name}.ns-p`;
  const dlq = `${name}-deadletter`;
  const producer = new RecordProducer();
  let s3: S3Client;
  const members: LogshipProcess[] = [];

  before(async () => {
    s3 = testS3Client();
    await producer.connect();
    await producer.createTopics([{ topic, partitions: PARTITIONS }]);
  });

  after(async () => {
    for (const member of members) {
      if (member.child.pid !== undefined && member.child.exitCode === null) process.kill(member.child.pid, 'SIGCONT');
      await member.kill9();
    }
    await producer.deleteTopics([topic, dlq]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    s3.destroy();
  });

  // Passes when the pause lands anywhere but on an S3 PUT already on the wire: such a request lands
  // after the resume and can replace the new owner's object (docs/operating.md, "Known limit"), so the
  // test stays todo until object writes are fenced. It failed every time before members checked their
  // membership before writing, and passed in the runs since.
  it('loses and duplicates no row', { todo: 'a PUT on the wire when the member is paused still lands' }, async (t) => {
    // Batches sealed by size often, so the paused member holds some in flight.
    const config = aggregatorConfigFile({ groupId: `${name}-group`, topics: [topic], s3Prefix: name, deadLetterTopic: dlq, s3Sink: { batch: { maxAgeMs: 300, maxRecords: 200 } } });
    const first = startAggregatorProcess(config);
    members.push(first);
    const firstOps = await first.opsUrl;
    const second = startAggregatorProcess(config);
    members.push(second);
    const secondOps = await second.opsUrl;
    let n = 0;
    const send = async (count: number): Promise<void> => {
      const records: LogRecord[] = [];
      for (let i = 0; i < count; i++, n++) records.push(logRecord(n, 'ns-p', BASE + n, { pod: `pod-${String(n % 16)}` }));
      await producer.send(topic, records, 5);
    };
    // Both members consume (the gauge counts partitions with data in hand).
    await waitFor(
      'both members consuming',
      async () => {
        await send(500);
        return (await metricValue(firstOps, 'logship_aggregator_assigned_partitions')) > 0 && (await metricValue(secondOps, 'logship_aggregator_assigned_partitions')) > 0;
      },
      60_000,
      500,
    );
    await send(4_000);
    // Pause the first member in the middle of its work.
    const pid = first.child.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGSTOP');
    await send(4_000);
    await waitFor(
      'the second member consuming every partition',
      async () => {
        await send(200);
        return (await metricValue(secondOps, 'logship_aggregator_assigned_partitions')) === PARTITIONS;
      },
      60_000,
      500,
    );
    await send(4_000);
    // Let the new owner write past where the paused one stood, then wake the paused one up.
    await sleep(1_000);
    process.kill(pid, 'SIGCONT');
    t.diagnostic('first member resumed');
    await send(4_000);
    const total = n;

    const rowCounts = async (): Promise<Map<string, number>> => {
      const counts = new Map<string, number>();
      for (const object of await readS3Objects(s3, name)) {
        for (const line of object.lines) {
          const id = (JSON.parse(line) as LogRecord).event_id;
          counts.set(id, (counts.get(id) ?? 0) + 1);
        }
      }
      return counts;
    };
    await waitFor(`all ${total} records in S3`, async () => (await rowCounts()).size >= total, 120_000, 1_000);
    // Everything committed: no later rewrite can change what is read below.
    const ends = await topicEndOffsets([topic]);
    await waitFor('offsets committed to the end', async () => {
      const committed = await committedOffsets(`${name}-group`, [topic]);
      return [...ends].every(([key, end]) => committed.get(key) === end);
    }, 120_000, 500).catch(async (error: unknown) => {
      t.diagnostic(`ends ${JSON.stringify([...ends])} committed ${JSON.stringify([...(await committedOffsets(`${name}-group`, [topic]))])}`);
      for (const [i, member] of members.entries()) t.diagnostic(`member ${String(i)}:\n${member.logs().split('\n').filter((l) => /warn|error|reset|joined/i.test(l)).slice(-15).join('\n')}`);
      throw error;
    });
    const counts = await rowCounts();
    assert.equal(counts.size, total, 'no record missing');
    assert.deepEqual([...counts].filter(([, c]) => c > 1).slice(0, 5), [], 'no duplicate row');
  });
});

/**
 * A member paused past its session timeout (SIGSTOP: a long GC pause, a frozen node) in the middle of
 * an S3 PUT, while another takes its partitions over, then resumed (SIGCONT): against the real Kafka
 * and S3 server, S3 ends up with every record exactly once. The pause is timed on the member's own
 * writes: records are large and barely compressible, so objects are megabytes, and the member is
 * stopped as soon as its write counter (`/proc/<pid>/io`) jumps by a megabyte, that is while it
 * streams an object's body. The rest of that body, and so the object, lands only after the resume,
 * late: the object fence (If-None-Match, resume after what an object holds) keeps the rows exact.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
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
const MIB = 1024 * 1024;
/** A large record's message: random base64, which gzip shrinks by a quarter only. */
const LARGE_MESSAGE_BYTES = 128 * 1024;
/** Bytes written between two looks at the member's counter that mean "an object's body is being sent". */
const BODY_BURST_BYTES = 512 * 1024;

/** Bytes the process handed to write calls so far (files, pipes and sockets alike). */
function writtenBytes(pid: number): number {
  const match = /^wchar:\s*(\d+)$/m.exec(readFileSync(`/proc/${String(pid)}/io`, 'utf8'));
  if (match?.[1] === undefined) throw new Error(`no wchar in /proc/${String(pid)}/io`);
  return Number(match[1]);
}

/** Stops `pid` (SIGSTOP) as soon as it writes {@link BODY_BURST_BYTES} between two looks; false at the deadline. */
async function stopDuringLargeWrite(pid: number, deadlineMs: number): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  let last = writtenBytes(pid);
  while (Date.now() < end) {
    await sleep(1);
    let now: number;
    try {
      now = writtenBytes(pid);
    } catch {
      return false; // the process is gone
    }
    if (now - last >= BODY_BURST_BYTES) {
      process.kill(pid, 'SIGSTOP');
      return true;
    }
    last = now;
  }
  return false;
}

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

  it('loses and duplicates no row when the pause lands on an object PUT', async (t) => {
    // Objects of a few MiB. The members cut batches at other sizes, as members with other limits (or
    // other fetch timing) do: the paused member's late object holds fewer records than the new
    // owner's under the same key, so replacing one with the other would lose rows. Its objects are
    // small enough that what is left of the body when it is stopped goes out at once when it resumes,
    // before it learns it lost the partition (which aborts its sends).
    const config = (maxBytes: number): string =>
      aggregatorConfigFile({ groupId: `${name}-group`, topics: [topic], s3Prefix: name, deadLetterTopic: dlq, s3Sink: { batch: { maxAgeMs: 2_000, maxBytes } } });
    const first = startAggregatorProcess(config(2 * MIB));
    members.push(first);
    const firstOps = await first.opsUrl;
    const second = startAggregatorProcess(config(6 * MIB));
    members.push(second);
    const secondOps = await second.opsUrl;
    let n = 0;
    const send = async (count: number, messageBytes = 0): Promise<void> => {
      const records: LogRecord[] = [];
      for (let i = 0; i < count; i++, n++) {
        const record = logRecord(n, 'ns-p', BASE + n, { pod: `pod-${String(n % 16)}` });
        if (messageBytes > 0) record.message = randomBytes((messageBytes * 3) / 4).toString('base64');
        records.push(record);
      }
      await producer.send(topic, records, messageBytes > 0 ? 1 : 5);
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
    // Large records while the first member is watched: it is stopped in the middle of an object's body.
    const pid = first.child.pid;
    assert.ok(pid !== undefined);
    const stopping = stopDuringLargeWrite(pid, 90_000);
    const watch = { done: false };
    void stopping.finally(() => (watch.done = true));
    // Six at a time: a produce request's batch for one partition stays under the broker's 1 MB limit.
    for (let round = 0; round < 1_000 && !watch.done; round++) await send(6, LARGE_MESSAGE_BYTES);
    assert.ok(await stopping, 'the first member was stopped while it wrote a large object');
    t.diagnostic(`first member stopped after ${String(n)} records`);
    await send(2_000);
    await waitFor(
      'the second member consuming every partition',
      async () => {
        await send(200);
        return (await metricValue(secondOps, 'logship_aggregator_assigned_partitions')) === PARTITIONS;
      },
      60_000,
      500,
    );
    const takenOver = await metricValue(secondOps, 'logship_aggregator_sink_records_total');
    // The new owner writes (those of its partitions not waiting on the paused member's PUT), then the
    // paused member resumes: the rest of its body goes out and its object lands, late.
    await waitFor('the new owner writing', async () => (await metricValue(secondOps, 'logship_aggregator_sink_records_total')) > takenOver, 60_000, 200);
    process.kill(pid, 'SIGCONT');
    t.diagnostic('first member resumed');
    await send(2_000);
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
    // Everything committed: no later write can change what is read below.
    const ends = await topicEndOffsets([topic]);
    await waitFor('offsets committed to the end', async () => {
      const committed = await committedOffsets(`${name}-group`, [topic]);
      return [...ends].every(([key, end]) => committed.get(key) === end);
    }, 180_000, 500).catch(async (error: unknown) => {
      t.diagnostic(`ends ${JSON.stringify([...ends])} committed ${JSON.stringify([...(await committedOffsets(`${name}-group`, [topic]))])}`);
      for (const [i, member] of members.entries()) t.diagnostic(`member ${String(i)}:\n${member.logs().split('\n').filter((l) => /warn|error|reset|joined/i.test(l)).slice(-15).join('\n')}`);
      throw error;
    });
    const conflicts = async (ops: string): Promise<number> => metricValue(ops, 'logship_aggregator_s3_object_conflicts_total', { resolution: 'resumed' }).catch(() => 0);
    t.diagnostic(`writes that found an object and resumed after it: first member ${String(await conflicts(firstOps))}, second ${String(await conflicts(secondOps))}`);
    const counts = await rowCounts();
    assert.equal(counts.size, total, 'no record missing');
    assert.deepEqual([...counts].filter(([, c]) => c > 1).slice(0, 5), [], 'no duplicate row');
  });
});

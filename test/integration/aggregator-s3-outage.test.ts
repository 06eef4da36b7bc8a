/**
 * The S3 server stopped for 30 s while records keep coming: the aggregator waits with bounded memory
 * (fetching pauses at maxInFlightBytes), lag grows, no offset is committed past what S3 holds; once
 * the server is back everything lands, exactly once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import type { LogRecord } from '../../shared/record.js';
import {
  aggregatorConfigFile,
  committedOffsets,
  deleteS3Prefix,
  logRecord,
  readS3Objects,
  RecordProducer,
  startAggregatorProcess,
  testS3Client,
  topicEndOffsets,
} from '../helpers/aggregator.js';
import { metricValue } from '../helpers/agent.js';
import type { LogshipProcess } from '../helpers/process.js';
import { rssBytes, startStackServer, stopStackServer, uniqueName, waitFor } from '../helpers/stack.js';

const MIB = 1024 * 1024;
const MAX_IN_FLIGHT = 4 * MIB;
const OUTAGE_MS = 30_000;
const BEFORE = 20_000;
const DURING = 60_000;
const BASE = Date.UTC(2026, 10, 22, 5, 0);

async function s3Rows(s3: S3Client, prefix: string): Promise<string[]> {
  return (await readS3Objects(s3, prefix)).flatMap((o) => o.lines);
}

describe('aggregator: S3 server down for 30 s', () => {
  const name = uniqueName('agg-s3-outage');
  const topic = `${name}.ns-a`;
  const groupId = `${name}-group`;
  const producer = new RecordProducer();
  let s3: S3Client;
  let aggregator: LogshipProcess | undefined;
  let minioStopped = false;

  before(async () => {
    s3 = testS3Client();
    await producer.connect();
    await producer.createTopics([{ topic, partitions: 3 }]);
  });

  after(async () => {
    if (minioStopped) await startStackServer('minio');
    await aggregator?.stop();
    await producer.deleteTopics([topic, `${name}-deadletter`]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    s3.destroy();
  });

  it('waits with bounded memory, commits nothing unwritten, then delivers everything once', async (t) => {
    aggregator = startAggregatorProcess(
      aggregatorConfigFile({
        groupId,
        topics: [topic],
        s3Prefix: name,
        deadLetterTopic: `${name}-deadletter`,
        s3Sink: { batch: { maxAgeMs: 500 } },
        extra: { records: { maxInFlightBytes: MAX_IN_FLIGHT } },
      }),
    );
    const ops = await aggregator.opsUrl;
    const pid = aggregator.child.pid ?? 0;
    let n = 0;
    const make = (count: number): LogRecord[] => Array.from({ length: count }, () => logRecord(n++, 'ns-a', BASE + n * 10));

    await producer.send(topic, make(BEFORE));
    await waitFor(`${String(BEFORE)} rows before the outage`, async () => (await s3Rows(s3, name)).length >= BEFORE, 60_000, 500);

    const endsBefore = await topicEndOffsets([topic]);
    await waitFor(
      'offsets committed up to the pre-outage records',
      async () => {
        const committed = await committedOffsets(groupId, [topic]);
        return [...endsBefore].every(([key, end]) => committed.get(key) === (end === 0 ? -1 : end));
      },
      30_000,
      200,
    );
    await stopStackServer('minio');
    minioStopped = true;
    const stoppedAt = Date.now();
    const committedAtStop = await committedOffsets(groupId, [topic]);
    t.diagnostic(`S3 down; committed ${JSON.stringify([...committedAtStop])}`);

    // Records keep coming during the outage; memory and commits are sampled meanwhile.
    const writer = (async () => {
      for (let sent = 0; sent < DURING; sent += 5_000) {
        await producer.send(topic, make(5_000));
        await sleep(1_000);
      }
    })();
    let peakRss = 0;
    let peakHeld = 0;
    while (Date.now() - stoppedAt < OUTAGE_MS) {
      peakRss = Math.max(peakRss, rssBytes(pid));
      peakHeld = Math.max(peakHeld, await metricValue(ops, 'logship_aggregator_held_bytes'));
      await sleep(500);
    }
    await writer;
    const lagDuringOutage = await metricValue(ops, 'logship_aggregator_consumer_lag');
    const pausedSeconds = await metricValue(ops, 'logship_aggregator_fetch_paused_seconds_total');
    const committedDuringOutage = await committedOffsets(groupId, [topic]);
    t.diagnostic(`outage: peak RSS ${String(Math.round(peakRss / MIB))} MiB, peak held ${String(Math.round(peakHeld / 1024))} KiB, lag ${String(lagDuringOutage)}, fetch paused ${pausedSeconds.toFixed(1)} s`);

    assert.deepEqual(committedDuringOutage, committedAtStop, 'no offset committed while S3 was down');
    assert.ok(lagDuringOutage > 0, 'lag grew');
    assert.ok(pausedSeconds > 0, 'fetching paused under backpressure');
    // The held bytes stop at the limit, overshooting by at most one decoded chunk of messages.
    assert.ok(peakHeld <= MAX_IN_FLIGHT + 2 * MIB, `held ${String(peakHeld)} bytes`);
    assert.ok(peakRss < 400 * MIB, `RSS ${String(peakRss)} bytes`);

    await startStackServer('minio');
    minioStopped = false;
    const total = BEFORE + DURING;
    await waitFor(`${String(total)} rows after the outage`, async () => (await s3Rows(s3, name)).length >= total, 180_000, 1_000);
    const ids = (await s3Rows(s3, name)).map((line) => (JSON.parse(line) as LogRecord).event_id);
    assert.equal(ids.length, total, 'no duplicate rows');
    assert.equal(new Set(ids).size, total, 'every record once');
    const ends = await topicEndOffsets([topic]);
    await waitFor(
      'offsets committed to the end',
      async () => {
        const committed = await committedOffsets(groupId, [topic]);
        return [...ends].every(([key, end]) => committed.get(key) === (end === 0 ? -1 : end));
      },
      60_000,
      500,
    );
  });
});

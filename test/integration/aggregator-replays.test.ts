/**
 * Exactly-once rows across agent replays, with the aggregator binary against the real Kafka, S3
 * server and Elasticsearch: an agent that restarted from its checkpoint sends lines again as new Kafka
 * messages (same event_id, new offsets); S3 holds each line once and Elasticsearch is not asked to
 * index them again, also after an aggregator kill -9 (the state is durable in S3). A topic deleted and
 * created again under the same name has its new records written although old state exists for it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import type { LogRecord } from '../../shared/record.js';
import {
  aggregatorConfigFile,
  countDocuments,
  deleteIndices,
  deleteS3Prefix,
  logRecord,
  readS3Objects,
  RecordProducer,
  startAggregatorProcess,
  testS3Client,
} from '../helpers/aggregator.js';
import { metricValue } from '../helpers/agent.js';
import type { LogshipProcess } from '../helpers/process.js';
import { elasticsearchConfig, uniqueName, waitFor } from '../helpers/stack.js';

const BASE = Date.UTC(2026, 10, 21, 10, 0);
const FILES = ['0a1b2c3d4e5f60718293', 'ffeeddccbbaa99887766', '13579bdf02468ace1357'];

/** A record as the agent writes it for line `line` of file `file` (event_id = file hash + byte offset). */
function agentRecord(file: number, line: number, pod: string): LogRecord {
  const record = logRecord(file * 1_000_000 + line, 'ns-r', BASE + line * 10, { pod });
  const offset = line * 120;
  record.event_id = `${FILES[file] ?? ''}${offset.toString(16).padStart(12, '0')}`;
  record.log = { file: `/var/log/pods/ns-r_${pod}_uid/app/${String(file)}.log`, offset };
  return record;
}

/** Lines [from, to) of each file; file i belongs to pod `pod-<i % 2>` (two files share a pod, a key). */
function lines(from: number, to: number): LogRecord[] {
  const out: LogRecord[] = [];
  for (let line = from; line < to; line++) for (let file = 0; file < FILES.length; file++) out.push(agentRecord(file, line, `pod-${String(file % 2)}`));
  return out;
}

/** As the agent sends them: keyed by pod uid, in file order per pod. */
async function sendByPod(producer: RecordProducer, topic: string, records: readonly LogRecord[], perMessage: number): Promise<void> {
  for (const pod of ['pod-0', 'pod-1']) await producer.send(topic, records.filter((r) => r.kubernetes.pod === pod), perMessage);
}

function rowCounts(objects: readonly { lines: string[] }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of objects) for (const line of o.lines) {
    const id = (JSON.parse(line) as LogRecord).event_id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('aggregator replay detection', () => {
  const name = uniqueName('replay');
  const topic = `${name}.ns-r`;
  const dlq = `${name}-deadletter`;
  const producer = new RecordProducer();
  let s3: S3Client;
  let es: Client;
  let aggregator: LogshipProcess | undefined;
  const config = (): string =>
    aggregatorConfigFile({ groupId: `${name}-group`, topics: [topic], s3Prefix: name, esIndexPrefix: name, deadLetterTopic: dlq });

  before(async () => {
    s3 = testS3Client();
    es = createElasticsearchClient(elasticsearchConfig());
    await producer.connect();
    await producer.createTopics([{ topic, partitions: 2 }]);
  });

  after(async () => {
    await aggregator?.stop();
    await producer.deleteTopics([topic, dlq]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    await deleteIndices(es, name);
    s3.destroy();
    await es.close();
  });

  it('writes each line once in S3 and Elasticsearch when the agent replays, also across an aggregator kill -9', async () => {
    aggregator = startAggregatorProcess(config());
    let ops = await aggregator.opsUrl;
    const first = lines(0, 400);
    await sendByPod(producer, topic, first, 10);
    await waitFor('the first 1,200 rows in S3', async () => rowCounts(await readS3Objects(s3, name)).size >= first.length, 60_000, 300);

    // The agent restarted from a checkpoint at line 300: lines 300-399 again, then new lines, one per message.
    const replayed = lines(300, 400);
    const fresh = lines(400, 500);
    await sendByPod(producer, topic, [...replayed, ...fresh], 1);
    const expected = first.length + fresh.length;
    await waitFor(`${String(expected)} distinct rows in S3`, async () => rowCounts(await readS3Objects(s3, name)).size >= expected, 60_000, 300);
    await waitFor(
      'every replayed line counted as dropped by both sinks',
      async () => (await metricValue(ops, 'logship_aggregator_replays_dropped_total', { sink: 'archive' })) === replayed.length && (await metricValue(ops, 'logship_aggregator_replays_dropped_total', { sink: 'search' })) === replayed.length,
      60_000,
      300,
    );

    // An aggregator crash, then the agent replays again: the state in S3 still knows those lines.
    await aggregator.kill9();
    aggregator = startAggregatorProcess(config());
    ops = await aggregator.opsUrl;
    const again = lines(450, 500);
    const last = lines(500, 520);
    await sendByPod(producer, topic, [...again, ...last], 5);
    const total = expected + last.length;
    await waitFor(`${String(total)} distinct rows in S3`, async () => rowCounts(await readS3Objects(s3, name)).size >= total, 60_000, 300);
    await waitFor(
      'the second replay dropped by S3',
      async () => (await metricValue(ops, 'logship_aggregator_replays_dropped_total', { sink: 'archive' })) >= again.length,
      60_000,
      300,
    );
    await waitFor(`${String(total)} documents in Elasticsearch`, async () => (await countDocuments(es, `${name}-*`)) >= total, 60_000, 300);

    const counts = rowCounts(await readS3Objects(s3, name));
    assert.equal([...counts.values()].filter((c) => c > 1).length, 0, 'no duplicate row in S3');
    assert.deepEqual(new Set(counts.keys()), new Set([...first, ...fresh, ...last].map((r) => r.event_id)), 'every line in S3');
    assert.equal(await countDocuments(es, `${name}-*`), total);
    assert.equal(await aggregator.stop(), 0);
    aggregator = undefined;
  });

  it('writes the records of a topic deleted and created again, though state of the old one exists', async () => {
    // The old incarnation has state in S3 (previous test): 1,200 + messages on two partitions.
    const oldRows = rowCounts(await readS3Objects(s3, name));
    await producer.deleteTopics([topic]);
    await waitFor('the topic deleted', async () => {
      try {
        await producer.createTopics([{ topic, partitions: 2 }]);
        return true;
      } catch {
        return false;
      }
    }, 60_000, 500);
    // More records than before per message, so the new partitions' high watermarks pass the old markers.
    const reborn = lines(10_000, 12_000).map((r) => ({ ...r, event_id: `new-${r.event_id}` }));
    await sendByPod(producer, topic, reborn, 1);
    aggregator = startAggregatorProcess(config());
    const ops = await aggregator.opsUrl;
    await waitFor(
      `the ${String(reborn.length)} records of the new topic in S3`,
      async () => [...rowCounts(await readS3Objects(s3, name)).keys()].filter((id) => id.startsWith('new-')).length >= reborn.length,
      120_000,
      500,
    );
    const counts = rowCounts(await readS3Objects(s3, name));
    assert.equal([...counts.values()].filter((c) => c > 1).length, 0, 'no duplicate row');
    // Offsets restart at 0 in the same hour, so the new incarnation's first keys are the old ones:
    // the old objects are kept and the new records go under keys naming the new incarnation.
    assert.deepEqual([...oldRows.keys()].filter((id) => counts.get(id) !== 1), [], 'every row of the old incarnation still there');
    assert.ok((await metricValue(ops, 'logship_aggregator_s3_object_conflicts_total', { resolution: 'earlier_incarnation' })) > 0, 'objects of the old incarnation met under the new one\'s keys');
    assert.equal(await aggregator.stop(), 0);
    aggregator = undefined;
  });
});

/**
 * Two aggregator members, one of them killed with SIGKILL at random moments (at least 5 times) while
 * 200,000 records flow: afterwards S3 and Elasticsearch hold exactly the input — nothing missing, no
 * duplicate row in S3 (deterministic keys plus the per-partition high-water marks), no duplicate
 * document in Elasticsearch (`_id` = event_id).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
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
import type { LogshipProcess } from '../helpers/process.js';
import { elasticsearchConfig, uniqueName, waitFor } from '../helpers/stack.js';

const TOTAL = 200_000;
const CHUNK = 4_000;
const KILLS = 6;
const BASE = Date.UTC(2026, 10, 22, 3, 0);

describe('aggregator: kill -9 during a 200,000-record run with two members', () => {
  const name = uniqueName('agg-crash');
  const topics = [`${name}.ns-a`, `${name}.ns-b`];
  const dlq = `${name}-deadletter`;
  const producer = new RecordProducer();
  let s3: S3Client;
  let es: Client;
  const members: (LogshipProcess | undefined)[] = [undefined, undefined];

  before(async () => {
    s3 = testS3Client();
    es = createElasticsearchClient(elasticsearchConfig());
    await producer.connect();
    await producer.createTopics(topics.map((topic) => ({ topic, partitions: 3 })));
  });

  after(async () => {
    await Promise.all(members.flatMap((m) => (m === undefined ? [] : [m.kill9()])));
    await producer.deleteTopics([...topics, dlq]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    await deleteIndices(es, name);
    s3.destroy();
    await es.close();
  });

  it('ends with exactly the input in S3 and Elasticsearch', async (t) => {
    const config = aggregatorConfigFile({
      groupId: `${name}-group`,
      topics,
      s3Prefix: name,
      esIndexPrefix: name,
      deadLetterTopic: dlq,
      s3Sink: { batch: { maxAgeMs: 700, maxRecords: 5_000 } },
      esSink: { batch: { maxAgeMs: 300, maxRecords: 2_000 } },
    });
    const start = (i: number): LogshipProcess => {
      const member = startAggregatorProcess(config);
      members[i] = member;
      return member;
    };
    start(0);
    start(1);

    let produced = 0;
    const writer = (async () => {
      for (let from = 0; from < TOTAL; from += CHUNK) {
        const batch = Array.from({ length: CHUNK }, (_, i) => {
          const n = from + i;
          return logRecord(n, n % 2 === 0 ? 'ns-a' : 'ns-b', BASE + n * 20);
        });
        await producer.send(topics[0] ?? '', batch.filter((r) => r.kubernetes.namespace === 'ns-a'));
        await producer.send(topics[1] ?? '', batch.filter((r) => r.kubernetes.namespace === 'ns-b'));
        produced += CHUNK;
        await sleep(400);
      }
    })();

    for (let kill = 1; kill <= KILLS; kill++) {
      const victim = kill % 2;
      await members[victim]?.opsUrl;
      await sleep(1_000 + Math.floor(Math.random() * 2_500));
      await members[victim]?.kill9();
      t.diagnostic(`kill ${String(kill)}: member ${String(victim)} after ${String(produced)} records produced`);
      start(victim);
    }
    await writer;

    await waitFor(
      `${String(TOTAL)} rows in S3`,
      async () => (await readS3Objects(s3, name)).reduce((sum, o) => sum + o.lines.length, 0) >= TOTAL,
      240_000,
      2_000,
    );
    await waitFor(`${String(TOTAL)} documents in Elasticsearch`, async () => (await countDocuments(es, `${name}-*`)) >= TOTAL, 240_000, 1_000);

    const counts = new Map<string, number>();
    for (const object of await readS3Objects(s3, name)) {
      for (const line of object.lines) {
        const id = (JSON.parse(line) as LogRecord).event_id;
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
    }
    const duplicates = [...counts].filter(([, c]) => c > 1);
    assert.deepEqual(duplicates.slice(0, 5), [], `${String(duplicates.length)} records appear more than once in S3`);
    assert.equal(counts.size, TOTAL, 'every record in S3');
    for (let n = 0; n < TOTAL; n += 997) assert.ok(counts.has(`ev-${String(n)}`), `ev-${String(n)} in S3`);
    assert.equal(await countDocuments(es, `${name}-*`), TOTAL, 'every record once in Elasticsearch');
  });
});

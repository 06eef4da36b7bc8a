/**
 * Exactly once end to end, with crashes on both sides: the agent tails four pod log files (200,000
 * lines, one rename rotation) into the real Kafka and two aggregator members write the real S3 server
 * and Elasticsearch, while the agent is killed with SIGKILL 10 times and an aggregator member 10
 * times. Afterwards S3 rows, Elasticsearch documents and the written lines are the same set: no line
 * missing, no duplicate row (the agent's replays are recognised by their origin), no extra document.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@elastic/elasticsearch';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import type { LogRecord } from '../../shared/record.js';
import { agentConfigFile, appendLines, cri, makeRoot, podDir, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { aggregatorConfigFile, countDocuments, deleteIndices, deleteS3Prefix, readS3Objects, RecordProducer, startAggregatorProcess, testS3Client } from '../helpers/aggregator.js';
import type { LogshipProcess } from '../helpers/process.js';
import { elasticsearchConfig, uniqueName, waitFor } from '../helpers/stack.js';

const FILES = 4;
const LINES_PER_FILE = 50_000;
const CHUNK = 125;
const KILLS = 10;

describe('end to end: kill -9 of the agent and of an aggregator member during a 200,000-line run', () => {
  const name = uniqueName('e2e-crash');
  const topic = `${name}.ns-crash`;
  const dlq = `${name}-deadletter`;
  const producer = new RecordProducer();
  let s3: S3Client;
  let es: Client;
  let agent: AgentProcess | undefined;
  const members: (LogshipProcess | undefined)[] = [undefined, undefined];

  before(async () => {
    s3 = testS3Client();
    es = createElasticsearchClient(elasticsearchConfig());
    await producer.connect();
    await producer.createTopics([{ topic, partitions: 3 }]);
  });

  after(async () => {
    await agent?.kill9();
    for (const member of members) await member?.kill9();
    await producer.deleteTopics([topic, dlq]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    await deleteIndices(es, name);
    s3.destroy();
    await es.close();
  });

  it('writes every line exactly once to S3 and Elasticsearch', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const agentConfig = agentConfigFile({ root, stateDir, topicPrefix: name, extra: { checkpoints: { dir: stateDir, intervalMs: 100 } } });
    const aggregatorConfig = aggregatorConfigFile({ groupId: `${name}-group`, topics: [topic], s3Prefix: name, esIndexPrefix: name, deadLetterTopic: dlq });
    const files = Array.from({ length: FILES }, (_, i) => join(podDir(root, 'ns-crash', `pod-${i}`, `0000000${i}-bbbb-4bbb-8bbb-bbbbbbbbbbbb`, 'app').dir, '0.log'));

    let written = 0;
    const writer = (async () => {
      for (let from = 0; from < LINES_PER_FILE; from += CHUNK) {
        for (const [i, file] of files.entries()) {
          if (i === 0 && from === LINES_PER_FILE / 2) renameSync(file, `${file}.20261122-041719`);
          appendLines(file, Array.from({ length: CHUNK }, (_, n) => cri(`f${i}-${from + n}`)));
          written += CHUNK;
        }
        await sleep(80);
      }
    })();

    const startMember = (k: number): void => {
      members[k] = startAggregatorProcess(aggregatorConfig);
    };
    startMember(0);
    startMember(1);
    agent = startAgentProcess(agentConfig);
    for (let kill = 0; kill < KILLS; kill++) {
      await agent.opsUrl;
      await sleep(600 + Math.floor(Math.random() * 1_200));
      await agent.kill9();
      agent = startAgentProcess(agentConfig);
      const k = kill % 2;
      const member = members[k];
      if (member) {
        await member.opsUrl;
        await member.kill9();
      }
      startMember(k);
      t.diagnostic(`kill ${kill + 1} of the agent and of member ${k} after ${written} lines written`);
    }
    await writer;
    const total = FILES * LINES_PER_FILE;

    const rowsByMessage = async (): Promise<Map<string, number>> => {
      const counts = new Map<string, number>();
      for (const object of await readS3Objects(s3, name)) {
        for (const line of object.lines) {
          const message = (JSON.parse(line) as LogRecord).message;
          counts.set(message, (counts.get(message) ?? 0) + 1);
        }
      }
      return counts;
    };
    await waitFor(`all ${total} lines in S3`, async () => (await rowsByMessage()).size >= total, 240_000, 2_000);
    await waitFor(`${total} documents in Elasticsearch`, async () => (await countDocuments(es, `${name}-*`)) >= total, 120_000, 1_000);

    const rows = await rowsByMessage();
    const expected = files.flatMap((_, i) => Array.from({ length: LINES_PER_FILE }, (_, n) => `f${i}-${n}`));
    const missing = expected.filter((m) => !rows.has(m));
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} lines missing from S3`);
    assert.equal(rows.size, total, 'nothing but the written lines in S3');
    const duplicated = [...rows].filter(([, count]) => count > 1);
    assert.deepEqual(duplicated.slice(0, 5), [], `${duplicated.length} lines duplicated in S3`);
    assert.equal(await countDocuments(es, `${name}-*`), total, 'one document per line in Elasticsearch');
    for (const member of members) {
      if (member === undefined) continue;
      await member.opsUrl;
    }
    await agent.opsUrl;
  });
});

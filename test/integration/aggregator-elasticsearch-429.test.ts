/**
 * Elasticsearch answering 429 for one namespace's index (a flood-stage block, what a full disk does):
 * the aggregator retries those items with backoff while other partitions keep flowing and committing;
 * once the block lifts every record lands, none in the dead letter.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@elastic/elasticsearch';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import {
  aggregatorConfigFile,
  committedOffsets,
  countDocuments,
  deleteIndices,
  logRecord,
  RecordProducer,
  startAggregatorProcess,
  topicEndOffsets,
} from '../helpers/aggregator.js';
import { metricValue } from '../helpers/agent.js';
import type { LogshipProcess } from '../helpers/process.js';
import { elasticsearchConfig, uniqueName, waitFor } from '../helpers/stack.js';

const BASE = Date.UTC(2026, 10, 22, 6, 0);
const PER_NAMESPACE = 2_000;

describe('aggregator: Elasticsearch throttling (429)', () => {
  const name = uniqueName('agg-es429');
  const blockedTopic = `${name}.ns-blocked`;
  const openTopic = `${name}.ns-open`;
  const blockedIndex = `${name}-ns-blocked-2026.11.22`;
  const groupId = `${name}-group`;
  const producer = new RecordProducer();
  let es: Client;
  let aggregator: LogshipProcess | undefined;

  before(async () => {
    es = createElasticsearchClient(elasticsearchConfig());
    await producer.connect();
    await producer.createTopics([
      { topic: blockedTopic, partitions: 1 },
      { topic: openTopic, partitions: 1 },
    ]);
  });

  after(async () => {
    await aggregator?.stop();
    await es.indices.putSettings({ index: blockedIndex, settings: { 'index.blocks.read_only_allow_delete': null } }).catch(() => undefined);
    await producer.deleteTopics([blockedTopic, openTopic, `${name}-deadletter`]);
    await producer.close();
    await deleteIndices(es, name);
    await es.close();
  });

  it('retries throttled items until they land, while other partitions advance', async () => {
    aggregator = startAggregatorProcess(
      aggregatorConfigFile({ groupId, topics: [blockedTopic, openTopic], esIndexPrefix: name, deadLetterTopic: `${name}-deadletter` }),
    );
    const ops = await aggregator.opsUrl;
    // The index exists (created through the aggregator's template) and refuses writes with 429.
    await producer.send(blockedTopic, [logRecord(0, 'ns-blocked', BASE)], 1);
    await waitFor('the first document', async () => (await countDocuments(es, blockedIndex)) === 1, 60_000, 200);
    await es.indices.putSettings({ index: blockedIndex, settings: { 'index.blocks.read_only_allow_delete': true } });

    let n = 1;
    await producer.send(blockedTopic, Array.from({ length: PER_NAMESPACE }, () => logRecord(n++, 'ns-blocked', BASE + n)));
    await producer.send(openTopic, Array.from({ length: PER_NAMESPACE }, () => logRecord(n++, 'ns-open', BASE + n)));

    // The open partition lands and commits to its end while the blocked one is retried.
    const openEnd = (await topicEndOffsets([openTopic])).get(`${openTopic}/0`);
    await waitFor(
      'the open partition committed to its end',
      async () => (await committedOffsets(groupId, [openTopic])).get(`${openTopic}/0`) === openEnd,
      60_000,
      300,
    );
    await waitFor('retries of throttled items', async () => (await metricValue(ops, 'logship_aggregator_sink_retries_total')) >= 3, 60_000, 300);
    assert.equal(await countDocuments(es, `${name}-ns-open-*`), PER_NAMESPACE);
    assert.equal(await countDocuments(es, blockedIndex), 1, 'nothing written while blocked');
    const blockedEnd = (await topicEndOffsets([blockedTopic])).get(`${blockedTopic}/0`) ?? 0;
    const blockedCommitted = (await committedOffsets(groupId, [blockedTopic])).get(`${blockedTopic}/0`) ?? -1;
    assert.ok(blockedCommitted < blockedEnd, 'the blocked partition is not committed past unwritten records');

    await es.indices.putSettings({ index: blockedIndex, settings: { 'index.blocks.read_only_allow_delete': null } });
    await waitFor(`${String(PER_NAMESPACE + 1)} documents in the unblocked index`, async () => (await countDocuments(es, blockedIndex)) === PER_NAMESPACE + 1, 90_000, 500);
    await waitFor(
      'the blocked partition committed to its end',
      async () => (await committedOffsets(groupId, [blockedTopic])).get(`${blockedTopic}/0`) === blockedEnd,
      60_000,
      300,
    );
    assert.equal(await metricValue(ops, 'logship_aggregator_dead_letters_total'), 0, 'throttled items are retried, never dead-lettered');
  });
});

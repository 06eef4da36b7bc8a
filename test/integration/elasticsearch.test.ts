import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { elasticsearchConfig, uniqueName } from '../helpers/stack.js';

describe('Elasticsearch (real node) through shared/elasticsearch', () => {
  const es = createElasticsearchClient(elasticsearchConfig());
  const index = uniqueName('it-es');

  after(async () => {
    await es.indices.delete({ index, ignore_unavailable: true });
    await es.close();
  });

  it('bulk-indexes documents by id, reads each item status, and finds them by search', async () => {
    await es.indices.create({
      index,
      settings: { number_of_shards: 1, number_of_replicas: 0 },
      mappings: { properties: { '@timestamp': { type: 'date_nanos' }, message: { type: 'text' }, status: { type: 'integer' }, labels: { type: 'flattened' } } },
    });
    const docs = Array.from({ length: 50 }, (_, i) => ({
      id: `evt-${i}`,
      doc: { '@timestamp': `2026-11-22T04:17:${String(i).padStart(2, '0')}.123456789Z`, message: i % 10 === 0 ? `GET /checkout ${i}` : `GET /health ${i}`, status: 200, labels: { app: 'api', 'app.kubernetes.io/name': 'x' } },
    }));
    // One document whose `status` cannot be an integer: its item must fail alone.
    const bad = { id: 'evt-bad', doc: { '@timestamp': '2026-11-22T04:18:00Z', message: 'bad', status: 'not-a-number', labels: {} } };
    const operations = [...docs, bad].flatMap(({ id, doc }) => [{ index: { _index: index, _id: id } }, doc]);
    const response = await es.bulk({ operations, refresh: 'wait_for' });
    assert.equal(response.errors, true);
    const failed = response.items.flatMap((item) => (item.index?.error ? [item.index] : []));
    assert.deepEqual(
      failed.map((f) => [f._id, f.status, f.error?.type]),
      [['evt-bad', 400, 'document_parsing_exception']],
    );
    assert.equal(response.items.filter((item) => item.index?.status === 201).length, docs.length);

    // Indexing the same ids again overwrites: the count does not change.
    const again = await es.bulk({ operations: docs.flatMap(({ id, doc }) => [{ index: { _index: index, _id: id } }, doc]), refresh: 'wait_for' });
    assert.equal(again.errors, false);
    assert.ok(again.items.every((item) => item.index?.result === 'updated'));
    assert.equal((await es.count({ index })).count, docs.length);

    const found = await es.search<{ message: string }>({ index, query: { match: { message: 'checkout' } }, size: 20, sort: [{ '@timestamp': 'asc' }] });
    assert.deepEqual(found.hits.hits.map((h) => h._id), ['evt-0', 'evt-10', 'evt-20', 'evt-30', 'evt-40']);
    const byLabel = await es.count({ index, query: { term: { 'labels.app': 'api' } } });
    assert.equal(byLabel.count, docs.length);
  });
});

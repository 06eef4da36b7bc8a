import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deleteTopics } from '../../../scripts/stack/topics.js';

/** An admin client over a list of topics, recording what it was asked to delete. */
function admin(topics: string[]): { listTopics: () => Promise<string[]>; deleteTopics: (request: { topics: string[] }) => Promise<void>; deleted: string[][] } {
  const deleted: string[][] = [];
  return {
    listTopics: () => Promise.resolve([...topics]),
    deleteTopics: (request) => {
      deleted.push(request.topics);
      return Promise.resolve();
    },
    deleted,
  };
}

describe('deleteTopics', () => {
  it('deletes the named topics that exist and those under the prefix, in one request', async () => {
    const client = admin(['bench.a', 'bench.b', 'benchmark', 'logs.x', 'dead']);
    assert.deepEqual(await deleteTopics(client, { names: ['dead', 'missing'], prefix: 'bench.' }), ['bench.a', 'bench.b', 'dead']);
    assert.deepEqual(client.deleted, [['bench.a', 'bench.b', 'dead']]);
  });

  it('sends no request when nothing matches', async () => {
    const client = admin(['logs.x']);
    assert.deepEqual(await deleteTopics(client, { names: ['missing'], prefix: 'bench.' }), []);
    assert.deepEqual(client.deleted, []);
  });
});

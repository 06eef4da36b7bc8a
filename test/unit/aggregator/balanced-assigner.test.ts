import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { balancedAssignment, decodeOwned, encodeOwned, type Assignment } from '../../../aggregator/balanced-assigner.js';

function counts(plan: Assignment): number[] {
  return [...plan.values()].map((topics) => Object.values(topics).reduce((n, p) => n + p.length, 0));
}

function allAssigned(plan: Assignment): string[] {
  return [...plan.values()].flatMap((topics) => Object.entries(topics).flatMap(([t, ps]) => ps.map((p) => `${t}/${String(p)}`))).sort();
}

describe('balancedAssignment', () => {
  it('spreads five topics with uneven partition counts over three members within one partition', () => {
    const topics = new Map([
      ['logs.a', [0]],
      ['logs.b', [0, 1, 2]],
      ['logs.c', [0, 1]],
      ['logs.d', [0, 1, 2, 3, 4]],
      ['logs.e', [0]],
    ]);
    const members = ['m-3', 'm-1', 'm-2'].map((memberId) => ({ memberId, topics: [...topics.keys()] }));
    const plan = balancedAssignment(members, topics);
    const c = counts(plan);
    assert.equal(c.reduce((a, b) => a + b, 0), 12);
    assert.ok(Math.max(...c) - Math.min(...c) <= 1, `shares ${c.join(',')}`);
    assert.equal(new Set(allAssigned(plan)).size, 12, 'each partition exactly once');
  });

  it('does not put partition 0 of every single-partition topic on one member', () => {
    const topics = new Map(Array.from({ length: 9 }, (_, i) => [`logs.ns${String(i)}`, [0]] as [string, number[]]));
    const members = ['a', 'b', 'c'].map((memberId) => ({ memberId, topics: [...topics.keys()] }));
    assert.deepEqual(counts(balancedAssignment(members, topics)), [3, 3, 3]);
  });

  it('gives a member only topics it subscribed to', () => {
    const topics = new Map([
      ['old', [0, 1]],
      ['new', [0, 1]],
    ]);
    const plan = balancedAssignment(
      [
        { memberId: 'a', topics: ['old', 'new'] },
        { memberId: 'b', topics: ['old'] },
      ],
      topics,
    );
    assert.deepEqual(Object.keys(plan.get('b') ?? {}), ['old']);
    assert.equal(allAssigned(plan).length, 4);
  });

  it('is deterministic whatever the member order', () => {
    const topics = new Map([
      ['x', [0, 1, 2]],
      ['y', [0, 1]],
    ]);
    const a = balancedAssignment(['1', '2'].map((memberId) => ({ memberId, topics: ['x', 'y'] })), topics);
    const b = balancedAssignment(['2', '1'].map((memberId) => ({ memberId, topics: ['x', 'y'] })), topics);
    assert.deepEqual([...a].sort(), [...b].sort());
  });

  it('keeps every partition with its owner when a new topic appears: only the new partitions are dealt', () => {
    const before = new Map(Array.from({ length: 7 }, (_, i) => [`logs.ns${String(i)}`, [0, 1]] as [string, number[]]));
    const ids = ['a', 'b', 'c'];
    const first = balancedAssignment(ids.map((memberId) => ({ memberId, topics: [...before.keys()] })), before);
    // A topic that sorts first: without stickiness it would shift every partition after it.
    const after = new Map([['logs.aaa', [0, 1]], ...before]);
    const second = balancedAssignment(
      ids.map((memberId) => ({ memberId, topics: [...after.keys()], owned: { generation: 3, partitions: first.get(memberId) ?? {} } })),
      after,
    );
    for (const id of ids) {
      for (const [topic, partitions] of Object.entries(first.get(id) ?? {})) {
        assert.deepEqual(second.get(id)?.[topic], partitions, `${id} keeps ${topic}`);
      }
    }
    const c = counts(second);
    assert.ok(Math.max(...c) - Math.min(...c) <= 1, `shares ${c.join(',')}`);
    assert.equal(new Set(allAssigned(second)).size, 16);
  });

  it('moves only what balance needs when a member joins, and settles double claims by generation', () => {
    const topics = new Map([['t', [0, 1, 2, 3, 4, 5]]]);
    const plan = balancedAssignment(
      [
        { memberId: 'a', topics: ['t'], owned: { generation: 7, partitions: { t: [0, 1, 2, 3] } } },
        { memberId: 'b', topics: ['t'], owned: { generation: 6, partitions: { t: [3, 4, 5] } } },
        { memberId: 'c', topics: ['t'] },
      ],
      topics,
    );
    assert.deepEqual(plan.get('a'), { t: [0, 1] });
    assert.deepEqual(plan.get('b'), { t: [4, 5] });
    assert.deepEqual(plan.get('c'), { t: [2, 3] });
  });

  it('reads back what it encodes in the member metadata, and nothing from foreign user data', () => {
    const owned = { generation: 12, partitions: { 'logs.a': [0, 2] } };
    assert.deepEqual(decodeOwned(encodeOwned(owned)), owned);
    assert.equal(decodeOwned(Buffer.alloc(0)), undefined);
    assert.equal(decodeOwned(Buffer.from([0, 1, 2])), undefined);
    assert.equal(decodeOwned(Buffer.from('{"generation":"x"}')), undefined);
  });
});

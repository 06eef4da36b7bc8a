import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { balancedAssignment, type Assignment } from '../../../aggregator/balanced-assigner.js';

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
});

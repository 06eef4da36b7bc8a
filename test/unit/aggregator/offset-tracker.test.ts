import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OffsetTracker } from '../../../aggregator/offset-tracker.js';

describe('OffsetTracker', () => {
  it('commits only the prefix every sink acknowledged', () => {
    const t = new OffsetTracker(['s3', 'es']);
    t.ingest('t', 0, 100, 150, 5_000, 200);
    t.ingest('t', 0, 150, 200, 5_000, 200);
    assert.deepEqual(t.pendingCommits(), []);
    t.ack('s3', 't', 0, 200);
    assert.deepEqual(t.pendingCommits(), [], 'es has acknowledged nothing');
    t.ack('es', 't', 0, 150);
    assert.deepEqual(t.pendingCommits(), [{ topic: 't', partition: 0, offset: 150 }]);
    t.markCommitted('t', 0, 150);
    assert.deepEqual(t.pendingCommits(), []);
    t.ack('es', 't', 0, 200);
    assert.equal(t.committable('t', 0), 200);
  });

  it('releases held bytes as the committable offset passes them', () => {
    const t = new OffsetTracker(['a']);
    t.ingest('t', 1, 0, 10, 1_000, 10);
    t.ingest('t', 1, 10, 20, 2_000, 20);
    assert.equal(t.heldBytes, 3_000);
    t.ack('a', 't', 1, 10);
    assert.equal(t.heldBytes, 2_000);
    t.ack('a', 't', 1, 20);
    assert.equal(t.heldBytes, 0);
  });

  it('ignores acknowledgements that go backwards or name unknown partitions', () => {
    const t = new OffsetTracker(['a']);
    t.ingest('t', 0, 0, 10, 10, 10);
    t.ack('a', 't', 0, 10);
    t.ack('a', 't', 0, 5);
    t.ack('a', 'other', 3, 99);
    assert.equal(t.committable('t', 0), 10);
    assert.equal(t.committable('other', 3), undefined);
  });

  it('reports lag inputs and forgets everything on clear', () => {
    const t = new OffsetTracker(['a']);
    t.ingest('t', 0, 5, 10, 10, 40);
    const [p] = t.progress();
    assert.equal(p?.highWatermark, 40);
    assert.equal(p.committed, 5);
    t.clear();
    assert.deepEqual(t.progress(), []);
    assert.equal(t.heldBytes, 0);
  });

  it('on retain, forgets the partitions that moved (their held bytes too) and keeps the others as they were', () => {
    const t = new OffsetTracker(['a']);
    t.ingest('t', 0, 0, 10, 100, 10);
    t.ingest('t', 1, 0, 4, 40, 4);
    t.ack('a', 't', 0, 6);
    t.markCommitted('t', 0, 6);
    t.ingest('t', 0, 10, 12, 20, 12);
    assert.equal(t.retain((_topic, partition) => partition === 0), 1);
    assert.deepEqual(
      t.progress().map((p) => [p.partition, p.committed, p.ingestedEnd]),
      [[0, 6, 12]],
    );
    assert.equal(t.nextOffset('t', 0), 12);
    assert.equal(t.nextOffset('t', 1), undefined);
    assert.equal(t.heldBytes, 120, 'partition 0 still holds what was not committable; partition 1 held nothing more');
  });
});

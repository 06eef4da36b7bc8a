import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../shared/buffer-pool.js';

const KIB = 1024;
const MIB = 1024 * KIB;

describe('BufferPool', () => {
  it('gives out powers of two, at least its minimum', () => {
    const pool = new BufferPool({ minBytes: 64 * KIB, maxFreeBytes: 8 * MIB });
    assert.equal(pool.take(1).length, 64 * KIB);
    assert.equal(pool.take(64 * KIB).length, 64 * KIB);
    assert.equal(pool.take(64 * KIB + 1).length, 128 * KIB);
    assert.equal(pool.take(1 * MIB + 5).length, 2 * MIB);
  });

  it('gives a buffer handed back out again, for the same size class only', () => {
    const pool = new BufferPool({ minBytes: 64 * KIB, maxFreeBytes: 8 * MIB });
    const first = pool.take(100 * KIB);
    pool.give(first);
    assert.notEqual(pool.take(300 * KIB), first, 'a larger class allocates');
    assert.equal(pool.take(70 * KIB), first);
    assert.deepEqual(pool.stats, { reused: 1, allocated: 2, freeBytes: 0 });
  });

  it('never gives the same buffer to two takers: a second give, or a foreign buffer, is ignored', () => {
    const pool = new BufferPool({ minBytes: 64 * KIB, maxFreeBytes: 8 * MIB });
    const taken = pool.take(64 * KIB);
    pool.give(taken);
    pool.give(taken);
    pool.give(Buffer.alloc(64 * KIB));
    const a = pool.take(64 * KIB);
    const b = pool.take(64 * KIB);
    assert.equal(a, taken);
    assert.notEqual(b, taken);
    assert.equal(pool.stats.reused, 1);
  });

  it('keeps at most maxFreeBytes free, and clear lets go of them', () => {
    const pool = new BufferPool({ minBytes: 64 * KIB, maxFreeBytes: 256 * KIB });
    const taken = Array.from({ length: 6 }, () => pool.take(64 * KIB));
    for (const buffer of taken) pool.give(buffer);
    assert.equal(pool.stats.freeBytes, 256 * KIB);
    const again = Array.from({ length: 6 }, () => pool.take(64 * KIB));
    assert.equal(again.filter((buffer) => taken.includes(buffer)).length, 4);
    for (const buffer of again) pool.give(buffer);
    pool.clear();
    assert.equal(pool.stats.freeBytes, 0);
    assert.ok(!again.includes(pool.take(64 * KIB)), 'after clear, take allocates');
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { residentBytes } from '../../shared/resident-memory.js';
import { collectAndCompact, keepsFreedPages, setHeapGrowingPercent } from '../../shared/v8-heap.js';

/** V8's `gc`, as `--expose-gc` installs it, for a test process started without that flag. */
function exposedGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Bytes of pages the old generation holds (the young one's size varies with the process's flags). */
function oldSpaceBytes(): number {
  return getHeapSpaceStatistics().find((space) => space.space_name === 'old_space')?.space_size ?? Number.NaN;
}

/**
 * Fills the old generation with small objects, then lets every other one go: pages half garbage, which
 * a plain full collection sweeps but does not compact (V8 moves objects only off pages mostly empty).
 */
function fragmentHeap(gc: () => void): (object | undefined)[] {
  const objects: (object | undefined)[] = Array.from({ length: 400_000 }, (_, i) => ({ i, name: `object-${String(i)}`, list: [i] }));
  gc();
  gc(); // survived two collections: in the old generation
  for (let i = 1; i < objects.length; i += 2) objects[i] = undefined;
  return objects;
}

describe('collectAndCompact', () => {
  it('gives back the old generation\'s pages that a plain full collection keeps', () => {
    const gc = exposedGc();
    const objects = fragmentHeap(gc);
    gc();
    const plain = oldSpaceBytes();
    assert.equal(collectAndCompact(gc, []), true);
    const compacted = oldSpaceBytes();
    assert.ok(compacted < plain * 0.75, `old generation pages ${String(plain)} → ${String(compacted)} bytes`);
    assert.equal(objects.filter(Boolean).length, 200_000, 'what was alive stays alive');
  });

  it('does nothing without a collector (node started without --expose-gc)', () => {
    assert.equal(collectAndCompact(undefined, []), false);
  });

  it('leaves the process resident set near where it was before a burst of garbage', () => {
    const gc = exposedGc();
    collectAndCompact(gc, []);
    const before = residentBytes().total;
    let burst: object[] | undefined = Array.from({ length: 600_000 }, (_, i) => ({ i, name: `burst-${String(i)}`, list: [i, i] }));
    gc(); // promoted: the burst's pages are the old generation's
    const during = residentBytes().total;
    assert.ok(during - before > 48 * 2 ** 20, `the burst grew the resident set by ${String(during - before)} bytes only`);
    assert.equal(burst.length, 600_000);
    burst = undefined; // garbage now
    collectAndCompact(gc, []);
    const after = residentBytes().total;
    assert.ok(after - before < (during - before) / 3, `resident ${String(before)} → ${String(during)} → ${String(after)} bytes`);
  });

  it('ends with a last-resort collection where V8 keeps freed pages (V8 12 and later), not before', () => {
    const calls: unknown[][] = [];
    const recorder = (...args: unknown[]): void => {
      calls.push(args);
    };
    assert.equal(collectAndCompact(recorder, [], '12.4.254.21-node.56'), true);
    assert.deepEqual(calls, [[], [], [{ type: 'major', execution: 'sync', flavor: 'last-resort' }]]);
    calls.length = 0;
    assert.equal(collectAndCompact(recorder, [], '11.3.244.8-node.38'), true);
    assert.deepEqual(calls, [[], []]);
  });
});

describe('keepsFreedPages', () => {
  it('is true from V8 12 on (Node 22)', () => {
    assert.equal(keepsFreedPages('11.3.244.8-node.38'), false);
    assert.equal(keepsFreedPages('12.4.254.21-node.56'), true);
    assert.equal(keepsFreedPages('13.6.233.10-node.28'), true);
  });
});

describe('setHeapGrowingPercent', () => {
  it('leaves a factor given on the node command line alone', () => {
    assert.equal(setHeapGrowingPercent(300, ['--heap-growing-percent=100']), false);
    assert.equal(setHeapGrowingPercent(300, ['--heap_growing_percent=50']), false);
    assert.equal(setHeapGrowingPercent(300, ['--expose-gc']), true);
  });
});

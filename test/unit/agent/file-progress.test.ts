import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FileProgress } from '../../../agent/file-progress.js';

describe('FileProgress', () => {
  it('is safe up to what was read when nothing is outstanding', () => {
    const progress = new FileProgress();
    assert.equal(progress.safeOffset(500), 500);
  });

  it('never passes the smallest unacknowledged start, whatever order acks come in', () => {
    const progress = new FileProgress();
    progress.add(0);
    progress.add(100);
    progress.add(200);
    assert.equal(progress.safeOffset(300), 0);
    progress.ack(100);
    assert.equal(progress.safeOffset(300), 0, 'a later ack does not move past an earlier pending one');
    progress.ack(0);
    assert.equal(progress.safeOffset(300), 200);
    progress.ack(200);
    assert.equal(progress.safeOffset(300), 300);
    assert.equal(progress.outstanding, 0);
  });

  it('holds back for a line still being assembled (partial chunks, multiline)', () => {
    const progress = new FileProgress();
    progress.add(400);
    assert.equal(progress.safeOffset(900, 250), 250);
    progress.ack(400);
    assert.equal(progress.safeOffset(900, 250), 250);
    assert.equal(progress.safeOffset(900), 900);
  });

  it('counts the same start registered twice', () => {
    const progress = new FileProgress();
    progress.add(10);
    progress.add(10);
    progress.ack(10);
    assert.equal(progress.safeOffset(50), 10);
    progress.ack(10);
    assert.equal(progress.safeOffset(50), 50);
    assert.throws(() => progress.ack(10));
  });

  it('keeps the minimum right over many out-of-order operations', () => {
    const progress = new FileProgress();
    const pending = new Set<number>();
    let seed = 7;
    const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 5_000; i++) {
      if (pending.size === 0 || random() < 0.55) {
        const start = Math.floor(random() * 1_000_000);
        if (!pending.has(start)) {
          pending.add(start);
          progress.add(start);
        }
      } else {
        const victim = [...pending][Math.floor(random() * pending.size)] as number;
        pending.delete(victim);
        progress.ack(victim);
      }
      const expected = pending.size === 0 ? 2_000_000 : Math.min(...pending);
      assert.equal(progress.safeOffset(2_000_000), expected);
    }
  });
});

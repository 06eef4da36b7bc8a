import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { laneIndex } from '../../../agent/kafka-producer.js';

describe('laneIndex', () => {
  it('is stable and spreads pod uids evenly', () => {
    const uids = Array.from({ length: 3_000 }, (_, i) => `${i.toString(16).padStart(8, '0')}-1234-4abc-8def-0123456789ab`);
    for (const lanes of [2, 3]) {
      const counts = new Array<number>(lanes).fill(0);
      for (const uid of uids) {
        const lane = laneIndex(uid, lanes);
        assert.equal(laneIndex(uid, lanes), lane);
        counts[lane] = (counts[lane] as number) + 1;
      }
      for (const c of counts) assert.ok(Math.abs(c - uids.length / lanes) < uids.length / lanes / 10, `lanes ${lanes}: ${counts.join(', ')}`);
    }
  });
});

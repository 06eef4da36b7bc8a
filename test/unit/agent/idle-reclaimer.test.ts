import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdleReclaimer } from '../../../agent/idle-reclaimer.js';

function setup(quietMs = 1000): { reclaimer: IdleReclaimer; state: { activity: number; busy: boolean; now: number; releases: number; collections: number } } {
  const state = { activity: 0, busy: false, now: 0, releases: 0, collections: 0 };
  const reclaimer = new IdleReclaimer({
    activity: () => state.activity,
    busy: () => state.busy,
    release: () => state.releases++,
    collect: () => {
      assert.equal(state.collections, state.releases - 1, 'pools are dropped before the collection');
      state.collections++;
    },
    quietMs,
    now: () => state.now,
  });
  return { reclaimer, state };
}

describe('IdleReclaimer', () => {
  it('releases once after quietMs without activity, then not again until work resumes and stops', () => {
    const { reclaimer, state } = setup();
    assert.equal(reclaimer.check(), false, 'the first look only notes the activity');
    state.now = 999;
    assert.equal(reclaimer.check(), false);
    state.now = 1000;
    assert.equal(reclaimer.check(), true);
    state.now = 5000;
    assert.equal(reclaimer.check(), false, 'once per quiet period');
    assert.equal(state.releases, 1);

    state.activity = 10;
    state.now = 5100;
    assert.equal(reclaimer.check(), false, 'work resumed');
    state.now = 6099;
    assert.equal(reclaimer.check(), false);
    state.now = 6100;
    assert.equal(reclaimer.check(), true, 'quiet again');
    assert.equal(state.releases, 2);
    assert.equal(state.collections, 2);
  });

  it('waits while work is pending even if the activity count stands still', () => {
    const { reclaimer, state } = setup();
    reclaimer.check();
    state.busy = true;
    state.now = 5000;
    assert.equal(reclaimer.check(), false);
    state.busy = false;
    state.now = 5500;
    assert.equal(reclaimer.check(), false, 'the quiet time counts from the last busy look');
    state.now = 6000;
    assert.equal(reclaimer.check(), true);
  });
});

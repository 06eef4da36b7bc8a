import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdleReclaimer, type LaterStep } from '../../../agent/idle-reclaimer.js';

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

describe('IdleReclaimer later step', () => {
  function withLater(): { reclaimer: IdleReclaimer; state: { activity: number; now: number; releases: number; later: number; releasesAtLater: number[] } } {
    const state = { activity: 0, now: 0, releases: 0, later: 0, releasesAtLater: [] as number[] };
    const reclaimer = new IdleReclaimer({
      activity: () => state.activity,
      busy: () => false,
      release: () => state.releases++,
      collect: () => undefined,
      quietMs: 1000,
      later: {
        quietMs: 5000,
        run: () => {
          state.releasesAtLater.push(state.releases);
          state.later++;
        },
      },
      now: () => state.now,
    });
    return { reclaimer, state };
  }

  it('runs once per quiet spell, after its own longer quiet time and after the release', () => {
    const { reclaimer, state } = withLater();
    reclaimer.check();
    state.now = 1000;
    assert.equal(reclaimer.check(), true, 'the release');
    state.now = 4999;
    assert.equal(reclaimer.check(), false);
    assert.equal(state.later, 0);
    state.now = 5000;
    assert.equal(reclaimer.check(), true, 'the later step');
    state.now = 60_000;
    assert.equal(reclaimer.check(), false, 'once per quiet spell');
    assert.deepEqual([state.releases, state.later], [1, 1]);
    assert.deepEqual(state.releasesAtLater, [1], 'the release of the same quiet spell came first');
  });

  it('starts over when work resumes before the later step: a trickle of work never reaches it', () => {
    const { reclaimer, state } = withLater();
    reclaimer.check();
    for (let t = 1; t <= 10; t++) {
      state.now = t * 3000;
      reclaimer.check(); // quiet for 3 s: the release, not the later step
      state.activity++;
      reclaimer.check();
    }
    assert.equal(state.releases, 10);
    assert.equal(state.later, 0);
    state.now = 30_000 + 5000;
    assert.equal(reclaimer.check(), true, 'the release of this quiet spell');
    assert.equal(reclaimer.check(), true, 'then, at the next look, the later step');
    assert.deepEqual([state.releases, state.later], [11, 1], 'a long enough quiet spell reaches it');
    assert.deepEqual(state.releasesAtLater, [11], 'after that spell\'s release');
  });
});

/** A reclaimer (quietMs 1000) whose release and collection do nothing, with `later` as its later step. */
function reclaimerWith(later: LaterStep, clock: { activity: number; now: number }): IdleReclaimer {
  return new IdleReclaimer({ activity: () => clock.activity, busy: () => false, release: () => undefined, collect: () => undefined, quietMs: 1000, later, now: () => clock.now });
}

describe('IdleReclaimer later step, resume', () => {
  it('tells the later step when work resumes after it ran, and only then', () => {
    const state = { activity: 0, now: 0, runs: 0, resumes: 0 };
    const reclaimer = reclaimerWith({ quietMs: 5000, run: () => state.runs++, resume: () => state.resumes++ }, state);
    reclaimer.check();
    state.now = 2000;
    reclaimer.check(); // released, the later step not yet
    state.activity++;
    reclaimer.check();
    assert.deepEqual([state.runs, state.resumes], [0, 0], 'work resumed before the later step: nothing to undo');
    state.now = 8000;
    reclaimer.check();
    reclaimer.check();
    assert.equal(state.runs, 1);
    state.now = 60_000;
    reclaimer.check();
    assert.equal(state.resumes, 0, 'still quiet');
    state.activity++;
    reclaimer.check();
    reclaimer.check();
    assert.deepEqual([state.runs, state.resumes], [1, 1], 'resumed once');
  });
});

describe('IdleReclaimer later step, repeated', () => {
  it('runs again every repeatMs while the quiet spell lasts, and starts over when work resumes', () => {
    const state = { activity: 0, now: 0, runs: [] as number[] };
    const reclaimer = reclaimerWith({ quietMs: 5000, repeatMs: 60_000, run: () => state.runs.push(state.now) }, state);
    for (let t = 0; t <= 200_000; t += 1000) {
      state.now = t;
      reclaimer.check();
    }
    assert.deepEqual(state.runs, [5000, 65_000, 125_000, 185_000]);
    state.activity++;
    state.now = 201_000;
    reclaimer.check();
    for (let t = 202_000; t <= 207_000; t += 1000) {
      state.now = t;
      reclaimer.check();
    }
    assert.deepEqual(state.runs.slice(4), [206_000], 'a new spell waits quietMs again');
  });
});

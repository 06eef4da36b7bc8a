/**
 * What a node does to log files, against the tailing stages over real files (no broker): the
 * kubelet's rename rotation and compression while the agent runs and while it is down, pruning,
 * copytruncate, and first starts. Each case checks which lines were shipped, how often, and what was
 * counted lost.
 */
import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, readFileSync, renameSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { cri, makeRoot, podDir } from '../../helpers/agent.js';
import { waitFor } from '../../helpers/stack.js';
import { TailHarness } from '../../helpers/tail-harness.js';

const UID = '11111111-1111-4111-8111-111111111111';

/** `count` CRI lines `<prefix>-<n>`, each with its own timestamp (heads never collide). */
function lines(prefix: string, from: number, count: number): string {
  let text = '';
  for (let n = from; n < from + count; n++) text += cri(`${prefix}-${n}`, { time: `2026-12-07T10:00:00.${String(n).padStart(6, '0')}${prefix.length.toString().padStart(3, '0')}Z` });
  return text;
}

/** The kubelet's compression of a rotated file: `.gz.tmp`, renamed to `.gz`, then the original removed. */
function compress(file: string): string {
  writeFileSync(`${file}.gz.tmp`, gzipSync(readFileSync(file)));
  renameSync(`${file}.gz.tmp`, `${file}.gz`);
  unlinkSync(file);
  return `${file}.gz`;
}

function expectOnce(harness: TailHarness, expected: string[]): void {
  const got = harness.messages();
  const counts = new Map<string, number>();
  for (const message of got) counts.set(message, (counts.get(message) ?? 0) + 1);
  const missing = expected.filter((m) => !counts.has(m));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([m]) => m);
  assert.deepEqual({ missing: missing.slice(0, 5), duplicated: duplicated.slice(0, 5) }, { missing: [], duplicated: [] });
  assert.equal(got.length, expected.length);
}

const names = (prefix: string, from: number, count: number): string[] => Array.from({ length: count }, (_, i) => `${prefix}-${from + i}`);

describe('agent tailing: rotation, compression and restarts (real files)', () => {
  const harnesses: TailHarness[] = [];
  const started = async (harness: TailHarness): Promise<TailHarness> => {
    harnesses.push(harness);
    return harness.start();
  };
  afterEach(async () => {
    for (const harness of harnesses.splice(0)) await harness.stop();
  });

  it('after a restart, resumes a checkpointed file the kubelet rotated and compressed, and reads the rotated files nobody read, oldest first', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 100));
    const first = await started(new TailHarness(root));
    await first.waitForRecords(100);
    await first.stop();
    harnesses.pop();

    // While it is down: more lines, a rotation, compression, another rotation, a new live file.
    appendFileSync(live, lines('a', 100, 50));
    renameSync(live, join(dir, '0.log.20261207-100000'));
    writeFileSync(live, lines('b', 0, 40));
    compress(join(dir, '0.log.20261207-100000'));
    renameSync(live, join(dir, '0.log.20261207-100010'));
    writeFileSync(live, lines('c', 0, 30));

    const second = await started(new TailHarness(root, first.stateDir));
    await second.waitForRecords(50 + 40 + 30);
    expectOnce(second, [...names('a', 100, 50), ...names('b', 0, 40), ...names('c', 0, 30)]);
    const order = second.messages();
    assert.ok(order.indexOf('a-100') < order.indexOf('b-0'), 'the older rotated file first');
    assert.deepEqual(second.losses, []);
    // Nothing more comes, and a third start ships nothing again.
    await second.stop();
    harnesses.pop();
    const third = await started(new TailHarness(root, first.stateDir));
    appendFileSync(live, lines('c', 30, 5));
    await third.waitForRecords(5);
    expectOnce(third, names('c', 30, 5));
  });

  it('reads more compressed files than it decompresses at once (a long outage), each line once', async () => {
    const root = makeRoot();
    const expected: string[] = [];
    for (let pod = 0; pod < 3; pod++) {
      const { dir } = podDir(root, 'ns', `pod-${pod}`, `${pod}1111111-1111-4111-8111-111111111111`, 'app');
      for (let n = 0; n < 4; n++) {
        const rotated = join(dir, `0.log.20261207-1000${String(n).padStart(2, '0')}`);
        writeFileSync(rotated, lines(`p${pod}r${n}`, 0, 200));
        compress(rotated);
        expected.push(...names(`p${pod}r${n}`, 0, 200));
      }
      writeFileSync(join(dir, '0.log'), lines(`p${pod}live`, 0, 10));
      expected.push(...names(`p${pod}live`, 0, 10));
    }
    const harness = await started(new TailHarness(root));
    await harness.waitForRecords(expected.length, 20_000);
    expectOnce(harness, expected);
  });

  it('reads an incarnation that came and left its path between two polls', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 10));
    const harness = await started(new TailHarness(root, undefined, { pollIntervalMs: 1_000 }));
    await harness.waitForRecords(10);
    // Two rotations faster than the poll: `b` never sits at the path when a poll looks.
    renameSync(live, join(dir, '0.log.20261207-100000'));
    writeFileSync(live, lines('b', 0, 20));
    renameSync(live, join(dir, '0.log.20261207-100001'));
    writeFileSync(live, lines('c', 0, 5));
    compress(join(dir, '0.log.20261207-100000'));
    await harness.waitForRecords(35);
    expectOnce(harness, [...names('a', 0, 10), ...names('b', 0, 20), ...names('c', 0, 5)]);
  });

  it('reports a pruned file it had read as far as it ever saw from where it stopped, counting no byte (what came later is unknowable)', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 10));
    const first = await started(new TailHarness(root));
    await first.waitForRecords(10);
    const shippedBytes = readFileSync(live).length;
    await first.stop();
    harnesses.pop();
    appendFileSync(live, lines('a', 10, 10));
    renameSync(live, join(dir, '0.log.20261207-100000'));
    writeFileSync(live, lines('b', 0, 3));
    rmSync(join(dir, '0.log.20261207-100000')); // pruned before the agent is back

    const second = await started(new TailHarness(root, first.stateDir));
    await second.waitForRecords(3);
    expectOnce(second, names('b', 0, 3));
    // The agent saw the file at `shippedBytes` bytes; what was written after it stopped is unknowable:
    // the loss is logged from where it stopped, and counts no byte.
    await waitFor('the loss report', () => second.losses.length > 0, 5_000, 20);
    assert.deepEqual(second.losses, [{ reason: 'deleted_before_read', bytes: 0, path: live, source: live, fromOffset: shippedBytes, toOffset: shippedBytes }]);
    assert.ok(shippedBytes > 0);
  });

  it('a rotated file renamed back to its path (the runtime could not reopen) keeps one reader', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 10));
    const harness = await started(new TailHarness(root, undefined, { pollIntervalMs: 20 }));
    await harness.waitForRecords(10);
    renameSync(live, join(dir, '0.log.20261207-100000'));
    appendFileSync(join(dir, '0.log.20261207-100000'), lines('a', 10, 5));
    await waitFor('the rotation seen', () => harness.records.length >= 15, 5_000, 10);
    renameSync(join(dir, '0.log.20261207-100000'), live);
    appendFileSync(live, lines('a', 15, 5));
    await harness.waitForRecords(20);
    // Let a few polls and a checkpoint pass, then write more: still each line once.
    await waitFor('a checkpoint at the end', () => harness.checkpointOffsets().some((offset) => offset === readFileSync(live).length), 5_000, 20);
    appendFileSync(live, lines('a', 20, 5));
    await harness.waitForRecords(25);
    expectOnce(harness, names('a', 0, 25));
  });

  it('counts the unread part of a deleted file whose size the agent had seen', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 10));
    const stateDir = makeRoot();
    const first = await started(new TailHarness(root, stateDir));
    await first.waitForRecords(10);
    await first.stop();
    harnesses.pop();
    // The state says: read up to 100 of a file of (now) 10 lines' size; then the file goes away.
    const state = JSON.parse(readFileSync(join(stateDir, 'checkpoints.json'), 'utf8')) as { checkpoints: { offset: number; size?: number }[] };
    const entry = state.checkpoints[0];
    assert.ok(entry);
    const size = entry.offset;
    entry.offset = 100;
    entry.size = size;
    writeFileSync(join(stateDir, 'checkpoints.json'), JSON.stringify(state));
    rmSync(live);
    writeFileSync(join(dir, '1.log'), lines('r', 0, 2));
    const second = await started(new TailHarness(root, stateDir));
    await second.waitForRecords(2);
    await waitFor('the loss', () => second.losses.length > 0, 5_000, 20);
    assert.deepEqual(second.losses, [{ reason: 'deleted_before_read', bytes: size - 100, path: live, source: live, fromOffset: 100, toOffset: size }]);
  });

  it('copytruncate: reads the unread tail from the copy, then the file over again, each line once', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 10));
    const harness = await started(new TailHarness(root, undefined, { pollIntervalMs: 200 }));
    await harness.waitForRecords(10);
    // Lines the agent has not read yet, then copy + truncate faster than its poll.
    appendFileSync(live, lines('a', 10, 50));
    copyFileSync(live, join(dir, '0.log.1'));
    truncateSync(live, 0);
    appendFileSync(live, lines('b', 0, 5));
    await harness.waitForRecords(65);
    expectOnce(harness, [...names('a', 0, 60), ...names('b', 0, 5)]);
    assert.deepEqual(harness.losses, []);
  });

  it('copytruncate with no copy: counts the unread tail as truncated', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('a', 0, 10));
    const harness = await started(new TailHarness(root, undefined, { pollIntervalMs: 5_000 }));
    await harness.waitForRecords(10);
    const readTo = readFileSync(live).length;
    // The agent sees the file grow (its poll refreshes the size), then it is truncated.
    const tail = lines('a', 10, 5);
    appendFileSync(live, tail);
    // Not picked up by the watcher in time: the poll interval is long; truncate right away.
    truncateSync(live, 0);
    appendFileSync(live, lines('b', 0, 3));
    await harness.waitForRecords(13).catch(() => undefined);
    const messages = harness.messages();
    for (const m of names('b', 0, 3)) assert.ok(messages.includes(m), `${m} shipped`);
    const lostTail = names('a', 10, 5).filter((m) => !messages.includes(m));
    // Either the agent read the tail before the truncation, or it counted what it knew it missed.
    const counted = harness.losses.filter((l) => l.reason === 'truncated').reduce((n, l) => n + l.bytes, 0);
    assert.ok(lostTail.length === 0 || counted <= Buffer.byteLength(tail), `counted ${counted}`);
    assert.ok(readTo > 0);
  });

  it('startAt end applies to a first start only: lines written while the agent was down arrive', async () => {
    const root = makeRoot();
    const { dir } = podDir(root, 'ns', 'pod', UID, 'app');
    const live = join(dir, '0.log');
    writeFileSync(live, lines('old', 0, 10));
    writeFileSync(join(dir, '0.log.20261207-090000'), lines('older', 0, 10));
    const first = await started(new TailHarness(root, undefined, { startAt: 'end' }));
    appendFileSync(live, lines('new', 0, 5));
    await first.waitForRecords(5);
    expectOnce(first, names('new', 0, 5));
    await first.stop();
    harnesses.pop();
    appendFileSync(live, lines('new', 5, 5));
    writeFileSync(join(podDir(root, 'ns', 'pod2', '22222222-2222-4222-8222-222222222222', 'app').dir, '0.log'), lines('pod2', 0, 4));
    const second = await started(new TailHarness(root, first.stateDir, { startAt: 'end' }));
    await second.waitForRecords(9);
    expectOnce(second, [...names('new', 5, 5), ...names('pod2', 0, 4)]);
  });
});

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { CHECKPOINT_FILE, CHECKPOINT_VERSION, CheckpointStore, parseCheckpointFile, type Checkpoint } from '../../../agent/checkpoint-store.js';
import { CheckpointError, ErrorCode } from '../../../shared/errors.js';
import { createLogger } from '../../../shared/logger.js';

const silent = createLogger({ name: 'test', level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function checkpoint(key: string, offset: number): Checkpoint {
  return { key, path: `/var/log/pods/ns_p_u/c/0.log`, dev: 1, ino: 2, fingerprint: 'ab', offset, updatedAtMs: 1 };
}

describe('CheckpointStore', () => {
  it('starts empty without a file, writes atomically, and reloads what it wrote', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'logship-cp-'));
    const store = await CheckpointStore.open(dir, silent);
    assert.equal(store.size, 0);
    assert.equal(store.firstStart, true);
    assert.equal(await store.flush(), true, 'a first start writes its (empty) state, so a restart is not taken for a first start');
    assert.equal(await store.flush(), false, 'nothing new to write');
    assert.equal((await CheckpointStore.open(dir, silent)).firstStart, false);
    store.set(checkpoint('a', 100));
    store.set(checkpoint('b', 7));
    assert.equal(await store.flush(), true);
    assert.equal(await store.flush(), false, 'unchanged state is not rewritten');
    assert.deepEqual(readdirSync(dir), [CHECKPOINT_FILE], 'no temp file left behind');
    const onDisk = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILE), 'utf8')) as { version: number };
    assert.equal(onDisk.version, CHECKPOINT_VERSION);

    const reopened = await CheckpointStore.open(dir, silent);
    assert.equal(reopened.get('a')?.offset, 100);
    assert.equal(reopened.get('b')?.offset, 7);
    assert.ok(reopened.lastWrittenAtMs !== undefined);
  });

  it('moves forward only: a move backwards is logged as a bug and counted, the larger offset kept, the other files still set and written', async () => {
    const lines: string[] = [];
    const logger = createLogger({ name: 'test', level: 'info', destination: new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }) });
    const dir = mkdtempSync(join(tmpdir(), 'logship-cp-'));
    const store = await CheckpointStore.open(dir, logger);
    store.set(checkpoint('a', 100));
    store.set(checkpoint('a', 150));
    assert.doesNotThrow(() => store.set(checkpoint('a', 120)));
    store.set(checkpoint('b', 9));
    assert.equal(store.get('a')?.offset, 150);
    assert.equal(store.get('b')?.offset, 9);
    assert.equal(store.regressions, 1);
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 'error' || l.level === 50);
    assert.ok(logged, 'an error is logged');
    assert.equal(logged.key, 'a');
    assert.equal(logged.offset, 150);
    assert.equal(logged.attemptedOffset, 120);
    // Under another path (the file was renamed), the new path is taken with the larger offset.
    store.set({ ...checkpoint('a', 10), path: '/var/log/pods/ns_p_u/c/0.log.20261207-120000' });
    assert.equal(store.get('a')?.offset, 150);
    assert.equal(store.get('a')?.path, '/var/log/pods/ns_p_u/c/0.log.20261207-120000');
    assert.equal(store.regressions, 2);
    await store.flush();
    const reopened = await CheckpointStore.open(dir, silent);
    assert.equal(reopened.get('a')?.offset, 150);
    assert.equal(reopened.get('b')?.offset, 9);
  });

  it('forgets deleted entries on disk too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'logship-cp-'));
    const store = await CheckpointStore.open(dir, silent);
    store.set(checkpoint('a', 1));
    store.set(checkpoint('b', 2));
    await store.flush();
    store.delete('a');
    await store.flush();
    const reopened = await CheckpointStore.open(dir, silent);
    assert.deepEqual([...reopened.all()].map((c) => c.key), ['b']);
  });

  it('moves a corrupt file aside and starts over (re-reading duplicates, never loses)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'logship-cp-'));
    writeFileSync(join(dir, CHECKPOINT_FILE), '{"version":1,"checkpoints":[{"key":');
    const store = await CheckpointStore.open(dir, silent);
    assert.equal(store.size, 0);
    assert.equal(existsSync(join(dir, CHECKPOINT_FILE)), false);
    assert.equal(readdirSync(dir).filter((f) => f.startsWith(`${CHECKPOINT_FILE}.corrupt-`)).length, 1);
  });

  it('refuses a file written by a newer agent instead of guessing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'logship-cp-'));
    writeFileSync(join(dir, CHECKPOINT_FILE), JSON.stringify({ version: CHECKPOINT_VERSION + 1, checkpoints: [] }));
    await assert.rejects(CheckpointStore.open(dir, silent), (e: unknown) => e instanceof CheckpointError && e.code === ErrorCode.CHECKPOINT_CORRUPT);
    assert.equal(existsSync(join(dir, CHECKPOINT_FILE)), true, 'the newer file is left untouched');
  });
});

describe('parseCheckpointFile', () => {
  it('rejects malformed entries', () => {
    assert.equal(parseCheckpointFile('[]').kind, 'corrupt');
    assert.equal(parseCheckpointFile('{"version":1}').kind, 'corrupt');
    assert.equal(parseCheckpointFile(JSON.stringify({ version: 1, checkpoints: [{ ...checkpoint('a', -1) }] })).kind, 'corrupt');
    assert.deepEqual(parseCheckpointFile(JSON.stringify({ version: 1, writtenAtMs: 5, checkpoints: [checkpoint('a', 3)] })), {
      kind: 'ok',
      writtenAtMs: 5,
      checkpoints: [checkpoint('a', 3)],
    });
  });
});

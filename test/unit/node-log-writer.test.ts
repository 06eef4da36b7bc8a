/**
 * The node log writer the rotation tests rely on (test/helpers/node-log-writer.ts) does what the
 * kubelet and containerd do: checked on a temporary folder, without timers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { NodeLogWriter, rotationStamp, type NodeLogWriterOptions } from '../helpers/node-log-writer.js';

const T0 = Date.UTC(2026, 11, 7, 13, 0, 0, 100);

function writer(overrides: Partial<NodeLogWriterOptions> = {}): NodeLogWriter {
  return new NodeLogWriter({
    root: mkdtempSync(join(tmpdir(), 'logship-node-writer-')),
    namespace: 'ns',
    criContainers: 1,
    dockerPod: false,
    copytruncatePod: false,
    linesPerSecond: 0,
    rotateBytes: 1 << 30,
    maxFiles: 3,
    monitorIntervalMs: 1_000,
    longLineEvery: 0,
    longLineContainers: 0,
    restartContainers: 0,
    restartAfterMs: 0,
    ...overrides,
  });
}

/** The bytes of an incarnation's lines as the ledger places them, from its file on disk (gunzipped). */
function bytesOnDisk(dir: string, name: string): Buffer {
  const raw = readFileSync(join(dir, name));
  return name.endsWith('.gz') ? gunzipSync(raw) : raw;
}

describe('NodeLogWriter', () => {
  it('rotates as the kubelet does: rename, gzip all but the newest rotated file, keep maxFiles', () => {
    const w = writer();
    const dir = w.containerDirs[0] ?? '';
    for (let i = 0; i < 5; i++) {
      w.writeLines(100, T0 + i * 2_000);
      w.rotateNow(0, T0 + i * 2_000);
    }
    w.writeLines(10, T0 + 10_000);
    w.close();
    const files = readdirSync(dir).sort();
    // maxFiles 3: the live file, the newest rotated file plain, one older gzipped.
    assert.deepEqual(files, ['0.log', `0.log.${rotationStamp(T0 + 6_000)}.gz`, `0.log.${rotationStamp(T0 + 8_000)}`]);
    assert.deepEqual(w.pathsOnDisk(), files.map((f) => join(dir, f)));
    // Each file holds exactly the bytes the ledger says, gzip or not; lines written after the rename
    // (before the runtime reopened) are in the renamed file.
    for (const name of files) {
      const inc = w.incarnations.find((i) => i.deletedAtMs === undefined && i.names[i.names.length - 1]?.name === name);
      assert.ok(inc, name);
      const content = bytesOnDisk(dir, name);
      assert.equal(content.length, inc.sizeBytes, name);
      for (const line of w.lines.filter((l) => l.incarnation === inc.id)) {
        assert.ok(content.subarray(line.start, line.end).toString().includes(w.expectedMessage(line)), line.id);
      }
    }
    assert.equal(w.incarnations.filter((i) => i.deletedAtMs !== undefined).length, 3);
    assert.ok(w.events.some((e) => e.kind === 'compress'));
  });

  it('two rotations within one second: the kubelet later deletes the second file as unused', () => {
    const w = writer({ maxFiles: 5 });
    const dir = w.containerDirs[0] ?? '';
    w.writeLines(50, T0);
    w.rotateNow(0, T0);
    w.writeLines(20, T0 + 600);
    w.rotateNow(0, T0 + 600);
    const stamp = rotationStamp(T0);
    assert.deepEqual(readdirSync(dir).sort(), ['0.log', `0.log.${stamp}`, `0.log.${stamp}.gz`]);
    const second = w.incarnations[1];
    assert.ok(second);
    w.writeLines(20, T0 + 2_000);
    w.rotateNow(0, T0 + 2_000);
    assert.equal(second.deletedBecause, 'unused');
    assert.ok(!readdirSync(dir).includes(`0.log.${stamp}`) && readdirSync(dir).includes(`0.log.${stamp}.gz`));
    w.close();
  });

  it('cuts long lines into 16 KiB P chunks on bytes, inside UTF-8 characters, with stderr lines between', () => {
    const w = writer({ longLineEvery: 10, longLineContainers: 1 });
    const dir = w.containerDirs[0] ?? '';
    w.writeLines(40, T0);
    w.close();
    assert.ok(w.stats.longLines >= 3);
    assert.ok(w.stats.chunksSplittingUtf8 > 0);
    const content = readFileSync(join(dir, '0.log'));
    const long = w.lines.find((l) => l.long);
    assert.ok(long);
    const physical = content.subarray(long.start, long.end).toString('latin1').split('\n').filter(Boolean);
    const own = physical.filter((l) => l.includes(' stdout '));
    assert.ok(physical.some((l) => l.includes(' stderr F ')), 'the other stream sits between the chunks');
    assert.deepEqual(own.map((l) => l.split(' ')[2]), [...own.slice(0, -1).map(() => 'P'), 'F']);
    const payload = Buffer.concat(own.map((l) => Buffer.from(l.slice(l.indexOf(' ', l.indexOf(' ', l.indexOf(' ') + 1) + 1) + 1), 'latin1')));
    assert.equal(payload.toString('utf8'), w.expectedMessage(long));
    assert.ok(own.slice(0, -1).every((l) => Buffer.byteLength(l, 'latin1') - l.indexOf(' P ') - 3 === 16 * 1024));
  });

  it('copytruncate: copy to N.log.<k>, truncate in place, append at the new end', () => {
    const w = writer({ criContainers: 0, copytruncatePod: true, maxFiles: 2 });
    const dir = w.containerDirs[0] ?? '';
    w.writeLines(30, T0);
    w.rotateNow(0, T0);
    w.writeLines(10, T0 + 1_000);
    w.rotateNow(0, T0 + 1_000);
    w.writeLines(5, T0 + 2_000);
    w.close();
    assert.deepEqual(readdirSync(dir).sort(), ['0.log', '0.log.2']);
    const live = w.incarnations[w.incarnations.length - 1];
    assert.equal(readFileSync(join(dir, '0.log')).length, live?.sizeBytes);
    assert.equal(w.incarnations[0]?.deletedBecause, 'copy-pruned');
  });
});

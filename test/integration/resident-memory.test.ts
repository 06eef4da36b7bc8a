/**
 * The idle page-out against the real kernel: a child node pages out its binary's and libraries'
 * pages through koffi and libc, and keeps working. The child runs from a private copy of node's
 * binary: the kernel leaves alone pages that another process maps too, and the test runner runs the
 * same binary.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../../scripts/stack/context.js';
import type { PageOutResult } from '../../shared/resident-memory.js';

const CHILD = `
import { ResidentMemory } from './shared/resident-memory.ts';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
// Mappings of node's binary whose VmFlags (proc(5)) carry 'rr': random-access advice.
const randomRead = () => readFileSync('/proc/self/smaps', 'utf8').split(/\\n(?=[0-9a-f]+-)/).filter((m) => m.split('\\n')[0].endsWith(process.execPath) && / rr( |$)/m.test(m.split('VmFlags:')[1] ?? '')).length;
const memory = await ResidentMemory.load();
const result = memory.pageOut();
const whileIdle = randomRead();
// Work after the page-out: code and data are read back from the files.
const digest = createHash('sha256').update('x'.repeat(1 << 20)).digest('hex');
memory.resume();
process.stdout.write(JSON.stringify({ result, digest, randomRead: [whileIdle, randomRead()] }));
`;

describe('ResidentMemory.pageOut', () => {
  const work = mkdtempSync(join(tmpdir(), 'logship-page-out-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  it('gives back most of the resident pages of the files node mapped, reads them back without readahead until resumed, and the process works on', () => {
    const node = join(work, 'node');
    copyFileSync(process.execPath, node);
    const child = spawnSync(node, ['--import', 'tsx', '--input-type=module', '-e', CHILD], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 0, child.stderr);
    const { result, digest, randomRead } = JSON.parse(child.stdout) as { result: PageOutResult; digest: string; randomRead: [number, number] };
    assert.equal(digest, createHash('sha256').update('x'.repeat(1 << 20)).digest('hex'), 'the child computed after its page-out what this process computes');
    assert.ok(result.mappings >= 4, `${String(result.mappings)} mappings advised`);
    const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
    assert.ok(result.before.file > 20 * 2 ** 20, `file-backed RSS before: ${mib(result.before.file)} MiB`);
    assert.ok(result.after.file < result.before.file / 2, `file-backed RSS ${mib(result.before.file)} → ${mib(result.after.file)} MiB`);
    assert.ok(result.after.total < result.before.total, `RSS ${mib(result.before.total)} → ${mib(result.after.total)} MiB`);
    assert.ok(randomRead[0] >= 2, `node's read-only mappings advised random access while idle (${String(randomRead[0])})`);
    assert.equal(randomRead[1], 0, 'and back to normal once work resumed');
  });
});

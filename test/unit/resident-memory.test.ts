import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pageOutCandidates, parseMaps, parseResident } from '../../shared/resident-memory.js';

const MAPS = `00400000-00e3a000 r--p 00000000 08:01 1311 /usr/local/bin/node
00e3a000-032e4000 r-xp 00a3a000 08:01 1311 /usr/local/bin/node
06b19000-06b1d000 r--p 06718000 08:01 1311 /usr/local/bin/node
06b1d000-06b46000 rw-p 0671c000 08:01 1311 /usr/local/bin/node
06b46000-06b7d000 rw-p 00000000 00:00 0
07a1c000-07c3e000 rw-p 00000000 00:00 0                                  [heap]
1d4a00000000-1d4a00040000 rw-p 00000000 00:00 0
7f1c2e000000-7f1c2e022000 rw-s 00000000 00:01 77 /memfd:shared (deleted)
7f1c30000000-7f1c30028000 r--p 00000000 08:01 2049 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c30028000-7f1c301bd000 r-xp 00028000 08:01 2049 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c301bd000-7f1c30215000 r--p 001bd000 08:01 2049 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c30219000-7f1c3021b000 rw-p 00218000 08:01 2049 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c31000000-7f1c31001000 rwxp 00000000 00:00 0
7ffd1c9e9000-7ffd1ca0a000 rw-p 00000000 00:00 0                          [stack]
7ffd1cbe4000-7ffd1cbe8000 r--p 00000000 00:00 0                          [vvar]
7ffd1cbe8000-7ffd1cbea000 r-xp 00000000 00:00 0                          [vdso]
`;

describe('parseMaps', () => {
  it('reads ranges, permissions and paths, anonymous mappings with an empty path', () => {
    const maps = parseMaps(MAPS);
    assert.equal(maps.length, 16);
    assert.deepEqual(maps[1], { start: 0xe3a000n, end: 0x32e4000n, perms: 'r-xp', path: '/usr/local/bin/node' });
    assert.equal(maps[4]?.path, '');
    assert.equal(maps[5]?.path, '[heap]');
    assert.equal(maps[7]?.path, '/memfd:shared (deleted)');
  });
});

describe('pageOutCandidates', () => {
  it('keeps the private read-only mappings of files: never writable, shared, anonymous or the kernel\'s', () => {
    const picked = pageOutCandidates(parseMaps(MAPS)).map((m) => `${m.perms} ${m.path}`);
    assert.deepEqual(picked, [
      'r--p /usr/local/bin/node',
      'r-xp /usr/local/bin/node',
      'r--p /usr/local/bin/node',
      'r--p /usr/lib/x86_64-linux-gnu/libc.so.6',
      'r-xp /usr/lib/x86_64-linux-gnu/libc.so.6',
      'r--p /usr/lib/x86_64-linux-gnu/libc.so.6',
    ]);
  });
});

describe('parseResident', () => {
  it('reads VmRSS, RssAnon and RssFile in bytes', () => {
    const status = 'Name:\tnode\nVmHWM:\t  140000 kB\nVmRSS:\t   86224 kB\nRssAnon:\t   33056 kB\nRssFile:\t   53168 kB\nRssShmem:\t       0 kB\n';
    assert.deepEqual(parseResident(status), { total: 86224 * 1024, anon: 33056 * 1024, file: 53168 * 1024 });
  });

  it('gives NaN for what the kernel does not report', () => {
    assert.ok(Number.isNaN(parseResident('Name:\tnode\n').file));
  });
});

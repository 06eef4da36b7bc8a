import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { logFile, runningPid, startDaemon, stackPaths } from '../../../scripts/stack/context.js';
import { waitFor } from '../../helpers/stack.js';

const home = mkdtempSync(join(tmpdir(), 'logship-daemon-log-'));
const paths = stackPaths(home);
after(() => rmSync(home, { recursive: true, force: true }));

/** Starts a process that prints one line and exits; waits until it has. */
async function startAndWait(name: string): Promise<void> {
  const marker = `logship-daemon-log-test-${name}`;
  startDaemon(paths, { name, command: process.execPath, args: ['-e', `console.log(${JSON.stringify(marker)})`, marker], marker });
  await waitFor(`${name} to print its line and exit`, () => runningPid(paths, name) === undefined && readFileSync(logFile(paths, name), 'utf8').includes(`${marker}\n`), 10_000, 20);
}

describe('stack daemons: log files', () => {
  it('appends to a small log and keeps what was there', async () => {
    const log = logFile(paths, 'small');
    await startAndWait('small');
    writeFileSync(log, 'earlier output\n', { flag: 'a' });
    await startAndWait('small');
    const text = readFileSync(log, 'utf8');
    assert.match(text, /earlier output\n/);
    assert.equal(text.match(/starting small/g)?.length, 2);
    assert.equal(existsSync(`${log}.1`), false);
  });

  it('moves a log above 64 MiB to <name>.log.1 when the server starts again', async () => {
    const log = logFile(paths, 'big');
    await startAndWait('big');
    truncateSync(log, 65 * 2 ** 20); // sparse: no 65 MiB written
    await startAndWait('big');
    assert.equal(statSync(`${log}.1`).size, 65 * 2 ** 20);
    const text = readFileSync(log, 'utf8');
    assert.ok(statSync(log).size < 4096, `the new log holds only the new start (${statSync(log).size} bytes)`);
    assert.equal(text.match(/starting big/g)?.length, 1);
  });
});

import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { StackError } from '../../../scripts/stack/context.js';
import { formatDuration, lastLineSince, runWithProgress, tailAlreadyShown, withProgress } from '../../../scripts/stack/progress.js';

const dir = mkdtempSync(join(tmpdir(), 'logship-progress-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('stack progress', () => {
  it('reports a long step with what it does, the time so far and its last output line, until it ends', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const log = join(dir, 'build.log');
    writeFileSync(log, 'output of an earlier build\n');
    const lines: string[] = [];
    let nowMs = 1_000_000;
    let finish: () => void = () => undefined;
    const done = withProgress('minio: building MinIO (go install)', log, () => new Promise<string>((resolve) => (finish = () => resolve('built'))), {
      intervalMs: 20_000,
      write: (line) => lines.push(line),
      now: () => nowMs,
    });
    nowMs += 20_000;
    t.mock.timers.tick(20_000);
    assert.deepEqual(lines, ['minio: building MinIO (go install): 20s so far'], 'nothing new in the log yet: no last output shown');
    appendFileSync(log, 'go: downloading github.com/minio/minio v0.0.0\ngo: downloading golang.org/x/sys v0.30.0\n');
    nowMs += 65_000;
    t.mock.timers.tick(20_000);
    assert.equal(lines[1], 'minio: building MinIO (go install): 1m25s so far (last output: go: downloading golang.org/x/sys v0.30.0)');
    finish();
    assert.equal(await done, 'built');
    t.mock.timers.tick(60_000);
    assert.equal(lines.length, 2, 'no line after the step ended');
  });

  it('says nothing about a step that ends within the interval', async () => {
    const lines: string[] = [];
    await withProgress('kafka: downloading', undefined, () => Promise.resolve(), { intervalMs: 60_000, write: (line) => lines.push(line) });
    assert.deepEqual(lines, []);
  });

  it('prints the tail of a failed build at once, and rethrows the same error', async () => {
    const log = join(dir, 'failing.log');
    const lines: string[] = [];
    const script = "for (let i = 1; i <= 40; i++) console.log('line ' + i); console.error('go: build failed: undefined: foo'); process.exit(3)";
    const failure = await runWithProgress('kubernetes: building kube-apiserver (go build)', process.execPath, ['-e', script], log, {}, { write: (line) => lines.push(line) }).then(
      () => assert.fail('the step succeeded'),
      (error: unknown) => error,
    );
    assert.ok(failure instanceof StackError);
    assert.equal(failure.logFile, log);
    assert.equal(tailAlreadyShown(failure), true);
    assert.equal(lines.length, 1);
    const report = lines[0] ?? '';
    assert.match(report, /^kubernetes: building kube-apiserver \(go build\): failed after \d+s: .* exited with 3\n---- last lines of .*failing\.log\n/);
    assert.match(report, /line 40\ngo: build failed: undefined: foo\n/);
    assert.doesNotMatch(report, /line 5\n/, 'only the tail');
  });

  it('does not claim a tail was shown when there was no log to show', async () => {
    const error = new Error('probe refused');
    await assert.rejects(withProgress('minio: starting', undefined, () => Promise.reject(error), { write: () => undefined }), error);
    assert.equal(tailAlreadyShown(error), false);
  });

  it('formats durations and reads the last line past an offset', () => {
    assert.equal(formatDuration(35_400), '35s');
    assert.equal(formatDuration(245_000), '4m05s');
    assert.equal(formatDuration(3_720_000), '1h02m');
    const log = join(dir, 'last.log');
    writeFileSync(log, 'old\n');
    assert.equal(lastLineSince(log, 4), undefined);
    appendFileSync(log, '\n$ go build -o kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver\n');
    assert.equal(lastLineSince(log, 4), undefined, 'the command line runLogged writes is not output');
    appendFileSync(log, `\u001b[1mDownloaded\u001b[0m 12 MB\r\n\n`);
    assert.equal(lastLineSince(log, 4), 'Downloaded 12 MB');
    appendFileSync(log, `${'x'.repeat(300)}\n`);
    assert.equal(lastLineSince(log, 4)?.length, 100);
    assert.equal(lastLineSince(join(dir, 'missing.log'), 0), undefined);
  });
});

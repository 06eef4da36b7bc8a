import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RecordFlag, type LogRecord } from '../../shared/record.js';
import { agentConfigFile, cri, makeRoot, metricValue, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

/**
 * A node log root full of what breaks shippers: cut CRI lines, binary noise, a 10 MiB line, invalid
 * UTF-8, empty files, symlink loops and an unreadable file, next to one well-formed file. The agent
 * runs as `nobody` (when the tests run as root, which ignores file modes) so that the unreadable file
 * really is unreadable.
 */

const NAMESPACE = 'bad-input';
const CONTAINER = 'app';
const MAX_LINE_BYTES = 64 * 1024;
const CONTROL_LINES = 2_000;
const HUGE_LINE_BYTES = 10 * 1024 * 1024;
const TIME = '2026-11-22T04:17:19.123456789Z';

/** The uid/gid of `nobody`, read from /etc/passwd. */
function nobody(): { uid: number; gid: number } {
  const entry = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === 'nobody');
  const uid = Number(entry?.[2]);
  const gid = Number(entry?.[3]);
  assert.ok(Number.isInteger(uid) && Number.isInteger(gid), 'no "nobody" user in /etc/passwd');
  return { uid, gid };
}

function uid(n: number): string {
  return `00000000-0000-4000-8000-${n.toString().padStart(12, '0')}`;
}

/** A CRI line whose message is raw bytes (which may be invalid UTF-8). */
function criBytes(message: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${TIME} stdout F `), message, Buffer.from('\n')]);
}

/** Random bytes cut into lines of 50–400 bytes, ending with a newline; never starts with `{` (docker json). */
function randomLines(totalBytes: number): Buffer {
  const data = randomBytes(totalBytes);
  data[0] = 0xff;
  const cuts = randomBytes(totalBytes);
  let next = 50 + ((cuts[0] ?? 0) % 350);
  for (let i = 1; i < data.length; i++) {
    if (i === next) {
      data[i] = 0x0a;
      next = i + 50 + ((cuts[i] ?? 0) % 350);
    }
  }
  data[data.length - 1] = 0x0a;
  return data;
}

/** Non-empty lines of a buffer (the agent ships no record for an empty line). */
function splitLines(data: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let nl = data.indexOf(0x0a); nl >= 0; nl = data.indexOf(0x0a, start)) {
    if (nl > start) lines.push(data.subarray(start, nl));
    start = nl + 1;
  }
  return lines;
}

/** Writes a 10 MiB CRI `F` line (and a normal line after it) without building it all in memory. */
function writeHugeLine(file: string, pattern: string): void {
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, `${TIME} stdout F `);
    const block = Buffer.from(pattern.repeat(Math.ceil(1024 * 1024 / pattern.length)).slice(0, 1024 * 1024));
    for (let written = 0; written < HUGE_LINE_BYTES; written += block.length) writeSync(fd, block);
    writeSync(fd, `\n${cri('after-huge', { time: TIME })}`);
  } finally {
    closeSync(fd);
  }
}

describe('agent: bad input never stops the pipeline and is counted (real Kafka)', () => {
  const topicPrefix = uniqueName('it-agent-bad');
  const topic = `${topicPrefix}.${NAMESPACE}`;
  const collector = new RecordCollector();
  const root = makeRoot();
  const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
  // Root ignores file modes: run the agent as nobody then. Any other user is subject to them already.
  const user = process.getuid?.() === 0 ? nobody() : undefined;
  let configFile: string | undefined;
  let agent: AgentProcess | undefined;

  before(async () => {
    await collector.start([topic]);
  });
  after(async () => {
    await agent?.stop();
    await collector.stop([topic]);
    rmSync(root, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
    if (configFile !== undefined) rmSync(dirname(configFile), { recursive: true, force: true });
  });

  it('ships good lines exactly once, repairs, flags and counts the bad ones, and stays healthy', async (t) => {
    const pod = (n: number, name: string): string => podDir(root, NAMESPACE, name, uid(n), CONTAINER).dir;

    // Well-formed control file.
    const control = Array.from({ length: CONTROL_LINES }, (_, i) => `control-${i}`);
    writeFileSync(join(pod(1, 'control'), '0.log'), control.map((m) => cri(m)).join(''));

    // CRI lines cut short or with a bad tag: shipped raw, flagged unparsed.
    const cut = [
      '2026-11-22T04:17:19.1Z std',
      TIME,
      `${TIME} `,
      `${TIME} stdout`,
      `${TIME} stdout X msg`,
      `${TIME} stdin F msg`,
      `${TIME} stdout FP msg`,
      'not a log line at all',
    ];
    writeFileSync(join(pod(2, 'cut-cri'), '0.log'), cut.map((l) => `${l}\n`).join(''));

    // Binary noise with newlines: every non-empty line is unparsed, most are invalid UTF-8 too.
    const noise = randomLines(16 * 1024);
    writeFileSync(join(pod(3, 'random-bytes'), '0.log'), noise);
    const noiseLines = splitLines(noise);

    // One 10 MiB line in a single F chunk, then a normal line.
    const pattern = '0123456789abcdef';
    writeHugeLine(join(pod(4, 'huge-line'), '0.log'), pattern);

    // Invalid UTF-8 in messages: repaired with U+FFFD and flagged; valid multi-byte text is not.
    const utf8Cases: { bytes: Buffer; invalid: boolean }[] = [
      { bytes: Buffer.from([0x62, 0x61, 0x64, 0x20, 0xff, 0xfe, 0x20, 0x65, 0x6e, 0x64]), invalid: true },
      { bytes: Buffer.concat([Buffer.from('lone '), Buffer.from([0x80]), Buffer.from(' continuation')]), invalid: true },
      { bytes: Buffer.concat([Buffer.from('cut euro '), Buffer.from([0xe2, 0x82]), Buffer.from(' here')]), invalid: true },
      { bytes: Buffer.concat([Buffer.from('cut at end '), Buffer.from([0xf0, 0x9f, 0x98])]), invalid: true },
      { bytes: Buffer.from('valid: h\u00e9llo \u20ac \u{1f600}'), invalid: false },
      { bytes: Buffer.from('a real \uFFFD is not an error'), invalid: false },
    ];
    writeFileSync(join(pod(5, 'invalid-utf8'), '0.log'), Buffer.concat(utf8Cases.map((c) => criBytes(c.bytes))));

    // Nothing to ship.
    writeFileSync(join(pod(6, 'empty'), '0.log'), '');
    writeFileSync(join(pod(7, 'newline-only'), '0.log'), '\n');

    // Symlink loops: two files pointing at each other, a "log file" that is a link to its own folder,
    // and a folder link to its own parent (endless recursion for anything that follows links).
    const links = pod(8, 'symlinks');
    symlinkSync('b.log', join(links, 'a.log'));
    symlinkSync('a.log', join(links, 'b.log'));
    symlinkSync('.', join(links, '1.log'));
    symlinkSync('.', join(dirname(links), 'loop'));
    const notRegular = 3;

    // Unreadable (mode 000) for the agent's user.
    const locked = join(pod(9, 'no-permission'), '0.log');
    writeFileSync(locked, cri('you cannot read me', { time: TIME }));
    chmodSync(locked, 0o000);

    // The agent may run as nobody: it must reach the root, its state folder and its config.
    chmodSync(root, 0o755);
    if (user) chownSync(stateDir, user.uid, user.gid);
    configFile = agentConfigFile({
      root,
      stateDir,
      topicPrefix,
      extra: {
        // A rescan retries failed opens (and counts them again): keep it out of the test's time frame
        // so the permission error is counted exactly once. Every file exists before the first scan.
        files: { root, pollIntervalMs: 100, rescanIntervalMs: 600_000, rotateWaitMs: 1_000 },
        parse: { maxLineBytes: MAX_LINE_BYTES },
      },
    });
    chmodSync(dirname(configFile), 0o755);
    chmodSync(configFile, 0o644);

    agent = startAgentProcess(configFile, {}, user ?? {});
    const running = agent;
    const opsUrl = await Promise.race([
      running.opsUrl,
      running.exited.then((code) => {
        throw new Error(`agent exited with ${String(code)} before serving: ${running.logs()}`);
      }),
    ]);

    const expectedCount = control.length + cut.length + noiseLines.length + 2 + utf8Cases.length;
    await collector.waitForCount(expectedCount, 120_000);
    await waitFor('agent idle', async () => {
      const before = collector.records.length;
      await new Promise((r) => setTimeout(r, 500));
      return collector.records.length === before;
    });

    const records = collector.records.map((r) => r.record);
    assert.equal(records.length, expectedCount, 'record count');
    assert.equal(new Set(records.map((r) => r.event_id)).size, records.length, 'event ids unique');
    const byPod = (name: string): LogRecord[] => records.filter((r) => r.kubernetes.pod === name);
    const flags = (r: LogRecord): string[] => (r.log.flags ?? []).filter((f) => f !== RecordFlag.METADATA_FALLBACK);

    // Control: every line exactly once, in order, unflagged.
    const good = byPod('control');
    assert.deepEqual(good.map((r) => r.message), control);
    assert.ok(good.every((r) => flags(r).length === 0));

    // Cut CRI lines: raw, flagged unparsed, in file order.
    const unparsedCri = byPod('cut-cri');
    assert.deepEqual(unparsedCri.map((r) => r.message), cut);
    for (const r of unparsedCri) assert.deepEqual(flags(r), [RecordFlag.UNPARSED], r.message);

    // Random bytes: each line raw (repaired where needed), unparsed, invalid_utf8 exactly when it is.
    const noisy = byPod('random-bytes');
    assert.equal(noisy.length, noiseLines.length);
    noiseLines.forEach((line, i) => {
      const r = noisy[i];
      assert.ok(r);
      assert.equal(r.message, line.toString('utf8'), `random line ${i}`);
      assert.deepEqual(flags(r), isUtf8(line) ? [RecordFlag.UNPARSED] : [RecordFlag.UNPARSED, RecordFlag.INVALID_UTF8], `random line ${i}`);
    });
    const noiseInvalid = noiseLines.filter((l) => !isUtf8(l)).length;

    // The 10 MiB line: one record, cut to maxLineBytes, flagged truncated; the next line is intact.
    const huge = byPod('huge-line');
    assert.equal(huge.length, 2);
    const [cutLine, afterHuge] = huge;
    assert.ok(cutLine && afterHuge);
    assert.equal(cutLine.message.length, MAX_LINE_BYTES);
    assert.equal(cutLine.message, pattern.repeat(MAX_LINE_BYTES / pattern.length));
    assert.deepEqual(flags(cutLine), [RecordFlag.TRUNCATED]);
    assert.equal(cutLine['@timestamp'], TIME);
    assert.equal(afterHuge.message, 'after-huge');
    assert.deepEqual(flags(afterHuge), []);

    // Invalid UTF-8: repaired with U+FFFD and flagged; valid text (even a literal U+FFFD) untouched.
    const utf8 = byPod('invalid-utf8');
    assert.equal(utf8.length, utf8Cases.length);
    utf8Cases.forEach((c, i) => {
      const r = utf8[i];
      assert.ok(r);
      assert.equal(r.message, c.bytes.toString('utf8'));
      assert.equal(r.message.includes('\uFFFD'), c.invalid || i === utf8Cases.length - 1);
      assert.deepEqual(flags(r), c.invalid ? [RecordFlag.INVALID_UTF8] : [], r.message);
    });
    const utf8Invalid = utf8Cases.filter((c) => c.invalid).length;

    for (const name of ['empty', 'newline-only', 'symlinks', 'no-permission']) assert.deepEqual(byPod(name), [], name);

    // Every case is counted, exactly.
    const expectedErrors: Record<string, number> = {
      unparsed: cut.length + noiseLines.length,
      invalid_utf8: utf8Invalid + noiseInvalid,
      truncated: 1,
      permission_denied: 1,
      not_regular: notRegular,
      file_open: 0,
      file_read: 0,
      file_vanished: 0,
      discovery: 0,
      record_too_large: 0,
    };
    const errorCounts = async (): Promise<Record<string, number>> =>
      Object.fromEntries(await Promise.all(Object.keys(expectedErrors).map(async (reason) => [reason, await metricValue(opsUrl, 'logship_agent_errors_total', { reason })] as const)));
    let observed: Record<string, number> = {};
    await waitFor(`error counts ${JSON.stringify(expectedErrors)}`, async () => {
      observed = await errorCounts();
      return Object.entries(expectedErrors).every(([reason, n]) => observed[reason] === n);
    }, 30_000).catch((error: unknown) => {
      throw new Error(`${String(error)}; observed ${JSON.stringify(observed)}`);
    });
    assert.deepEqual(observed, expectedErrors);
    t.diagnostic(`logship_agent_errors_total: ${JSON.stringify(observed)}`);
    assert.equal(await metricValue(opsUrl, 'logship_agent_records_produced_total'), expectedCount);

    // Still alive and healthy.
    assert.equal(running.child.exitCode, null, 'agent still running');
    assert.equal(running.child.signalCode, null, 'agent still running');
    const health = await fetch(`${opsUrl}/healthz`);
    assert.equal(health.status, 200);
  });
});

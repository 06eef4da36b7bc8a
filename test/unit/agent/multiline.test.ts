import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LogEntry } from '../../../agent/line-assembler.js';
import { MULTILINE_PRESETS, MultilineJoiner, type MultilineOptions } from '../../../agent/multiline.js';
import { RecordFlag } from '../../../shared/record.js';

const TIME = '2026-11-22T04:17:19.000000001Z';

/** Entries as the assembler would produce them for consecutive lines of one file. */
function entries(lines: string[], firstOffset = 0): LogEntry[] {
  let offset = firstOffset;
  return lines.map((message, i) => {
    const start = offset;
    offset += Buffer.byteLength(message) + 40;
    return { time: `${TIME}-${i}`, stream: 'stderr', message, start, end: offset, flags: [] };
  });
}

function joiner(overrides: Partial<MultilineOptions> = {}, now: () => number = () => 0): MultilineJoiner {
  return new MultilineJoiner({ ...MULTILINE_PRESETS.java, maxLines: 500, maxBytes: 64 * 1024, timeoutMs: 1_000, ...overrides }, now);
}

/** Pushes every entry, then flushes; returns the messages of the events in order. */
function run(j: MultilineJoiner, input: LogEntry[]): LogEntry[] {
  return [...input.flatMap((e) => j.push(e)), ...j.flush()];
}

const JAVA_TRACE = [
  'Exception in thread "main" java.lang.IllegalStateException: outer',
  '\tat com.example.App.run(App.java:42)',
  '\tat com.example.App.main(App.java:10)',
  'Caused by: java.io.IOException: inner',
  '\tat com.example.Io.read(Io.java:7)',
  '\t... 2 more',
];

describe('MultilineJoiner', () => {
  it('joins a java stack trace into one event with the first time and start, the last end', () => {
    const input = entries(['INFO starting', ...JAVA_TRACE, 'INFO next request']);
    const j = joiner();
    const out = input.flatMap((e) => j.push(e));
    const first = input[0];
    const trace = input.slice(1, 7);
    assert.ok(first);
    assert.deepEqual(out, [
      first,
      {
        time: `${TIME}-1`,
        stream: 'stderr',
        message: JAVA_TRACE.join('\n'),
        start: trace[0]?.start,
        end: trace[5]?.end,
        flags: [RecordFlag.MULTILINE],
      },
    ]);
    assert.equal(j.pendingStart(), input[7]?.start);
    assert.deepEqual(j.flush(), [input[7]]);
    assert.equal(j.pendingStart(), undefined);
  });

  it('java preset joins a logger line with the qualified exception and frames below it', () => {
    const lines = ['ERROR request failed', 'java.lang.NullPointerException: x is null', '\tat a.B.c(B.java:1)', 'INFO ok'];
    const out = run(joiner(), entries(lines));
    assert.deepEqual(
      out.map((e) => e.message),
      [lines.slice(0, 3).join('\n'), 'INFO ok'],
    );
  });

  it('default preset starts a new event at an unindented exception line', () => {
    const lines = ['ERROR request failed', 'java.lang.NullPointerException: x is null', '\tat a.B.c(B.java:1)'];
    const out = run(joiner(MULTILINE_PRESETS.default), entries(lines));
    assert.deepEqual(
      out.map((e) => e.message),
      ['ERROR request failed', lines.slice(1).join('\n')],
    );
  });

  it('returns a one-line event as the very entry it was given', () => {
    const input = entries(['a', 'b']);
    const out = run(joiner(), input);
    assert.equal(out[0], input[0]);
    assert.equal(out[1], input[1]);
  });

  it('keeps the union of the joined flags, plus multiline', () => {
    const input = entries(['start', ' cont', ' cont']);
    const [a, b, c] = input;
    assert.ok(a && b && c);
    b.flags = [RecordFlag.INVALID_UTF8];
    c.flags = [RecordFlag.TRUNCATED, RecordFlag.INVALID_UTF8];
    const out = run(joiner(), input);
    assert.deepEqual(out[0]?.flags, [RecordFlag.INVALID_UTF8, RecordFlag.TRUNCATED, RecordFlag.MULTILINE]);
    assert.deepEqual(b.flags, [RecordFlag.INVALID_UTF8], 'input flags are not mutated');
  });

  it('emits an event when it reaches maxLines', () => {
    const input = entries(['start', ' 1', ' 2', ' 3', ' 4']);
    const j = joiner({ maxLines: 3 });
    assert.deepEqual(j.push(input[0] as LogEntry), []);
    assert.deepEqual(j.push(input[1] as LogEntry), []);
    const out = j.push(input[2] as LogEntry);
    assert.deepEqual(
      out.map((e) => [e.message, e.start, e.end]),
      [['start\n 1\n 2', input[0]?.start, input[2]?.end]],
    );
    assert.equal(j.pendingStart(), undefined);
    assert.deepEqual(
      [...j.push(input[3] as LogEntry), ...j.push(input[4] as LogEntry), ...j.flush()].map((e) => e.message),
      [' 3\n 4'],
    );
  });

  it('emits an event when it reaches maxBytes, and never lets a continuation push it past', () => {
    // 'start' (5) + '\n 1234' (6) = 11 bytes; adding '\n 5678' would make 17 > 15.
    const input = entries(['start', ' 1234', ' 5678', ' 9', ' é']);
    const out = run(joiner({ maxBytes: 15 }), input);
    assert.deepEqual(
      out.map((e) => e.message),
      ['start\n 1234', ' 5678\n 9\n é'],
    );
    assert.deepEqual(
      out.map((e) => [e.start, e.end]),
      [
        [input[0]?.start, input[1]?.end],
        [input[2]?.start, input[4]?.end],
      ],
    );
  });

  it('counts maxBytes in UTF-8 bytes, not characters', () => {
    // ' 5678\n 9' is 8 bytes; '\n é' adds 4 bytes ('é' is 2), 12 > 11, though only 3 characters.
    const out = run(joiner({ maxBytes: 11 }), entries([' 5678', ' 9', ' é']));
    assert.deepEqual(
      out.map((e) => e.message),
      [' 5678\n 9', ' é'],
    );
  });

  it('emits at once a single entry already at maxBytes', () => {
    const j = joiner({ maxBytes: 4 });
    const [big] = entries(['abcdef']);
    assert.ok(big);
    assert.deepEqual(j.push(big), [big]);
    assert.equal(j.pendingStart(), undefined);
  });

  it('emits a quiet event after timeoutMs, measured from its last line', () => {
    let nowMs = 10_000;
    const j = joiner({ timeoutMs: 500 }, () => nowMs);
    const input = entries(['start', ' more']);
    j.push(input[0] as LogEntry);
    nowMs += 400;
    j.push(input[1] as LogEntry);
    nowMs += 499;
    assert.deepEqual(j.flushExpired(), []);
    assert.equal(j.pendingStart(), input[0]?.start);
    nowMs += 1;
    assert.deepEqual(
      j.flushExpired().map((e) => [e.message, e.flags]),
      [['start\n more', [RecordFlag.MULTILINE]]],
    );
    assert.deepEqual(j.flushExpired(), []);
    assert.equal(j.pendingStart(), undefined);
  });

  it('starts an event at a continuation line when nothing is pending', () => {
    const out = run(joiner(), entries(['\tat orphan.Frame(F.java:1)', '\tat orphan.Frame(F.java:2)']));
    assert.deepEqual(
      out.map((e) => e.message),
      ['\tat orphan.Frame(F.java:1)\n\tat orphan.Frame(F.java:2)'],
    );
  });

  it('ignores the lastIndex state of a global start pattern', () => {
    const out = run(joiner({ startPattern: /^\S/g }), entries(['a', 'b', 'c', ' d']));
    assert.deepEqual(
      out.map((e) => e.message),
      ['a', 'b', 'c\n d'],
    );
  });

  it('python preset joins a traceback through its final exception line', () => {
    const traceback = [
      'Traceback (most recent call last):',
      '  File "/app/main.py", line 12, in <module>',
      '    main()',
      '  File "/app/main.py", line 8, in main',
      '    int("x")',
      '    ^^^^^^^^',
      "ValueError: invalid literal for int() with base 10: 'x'",
    ];
    const lines = ['INFO:root:starting', ...traceback, 'INFO:root:restarting'];
    const out = run(joiner(MULTILINE_PRESETS.python), entries(lines));
    assert.deepEqual(
      out.map((e) => e.message),
      ['INFO:root:starting', traceback.join('\n'), 'INFO:root:restarting'],
    );
  });

  it('python preset keeps chained-exception separators with the traceback above them', () => {
    const lines = [
      'Traceback (most recent call last):',
      '  File "a.py", line 1, in <module>',
      'KeyError: 1',
      '',
      'During handling of the above exception, another exception occurred:',
      '',
      'Traceback (most recent call last):',
      '  File "a.py", line 3, in <module>',
      'mypkg.errors.CustomError: boom',
    ];
    const out = run(joiner(MULTILINE_PRESETS.python), entries(lines));
    assert.deepEqual(
      out.map((e) => e.message),
      [lines.slice(0, 6).join('\n'), lines.slice(6).join('\n')],
    );
  });

  it('go preset joins a panic with its goroutine dump', () => {
    const panic = [
      'panic: runtime error: index out of range [5] with length 3',
      '',
      'goroutine 1 [running]:',
      'main.lookup(...)',
      '\t/app/main.go:12',
      'net/http.(*conn).serve(0xc0000a8000, {0x6f5e28, 0xc0000b2000})',
      '\t/usr/local/go/src/net/http/server.go:2009 +0x5f4',
      'created by net/http.(*Server).Serve in goroutine 1',
      '\t/usr/local/go/src/net/http/server.go:3086 +0x4db',
    ];
    const lines = ['level=info msg=serving', ...panic, 'level=info msg=restarted'];
    const out = run(joiner(MULTILINE_PRESETS.go), entries(lines));
    assert.deepEqual(
      out.map((e) => e.message),
      ['level=info msg=serving', panic.join('\n'), 'level=info msg=restarted'],
    );
  });

  it('rejects limits that are not positive', () => {
    assert.throws(() => joiner({ maxLines: 0 }), RangeError);
    assert.throws(() => joiner({ maxBytes: -1 }), RangeError);
    assert.throws(() => joiner({ timeoutMs: Number.NaN }), RangeError);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LineAssembler, type LogEntry, type RawLine } from '../../../agent/line-assembler.js';
import { RecordFlag } from '../../../shared/record.js';

const T1 = '2026-11-22T04:17:19.000000001Z';
const T2 = '2026-11-22T04:17:19.000000002Z';
const T3 = '2026-11-22T04:17:19.000000003Z';
const NOW_MS = Date.parse('2030-01-02T03:04:05.678Z');

/** Physical lines laid out one after the other in a file, each followed by '\n'. */
class FakeFile {
  #offset = 0;

  line(content: string | Buffer): RawLine {
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    const start = this.#offset;
    this.#offset += bytes.length + 1;
    return { bytes, start, end: this.#offset };
  }
}

function assembler(maxLineBytes = 1024, format: 'cri' | 'docker' | 'auto' = 'cri'): LineAssembler {
  return new LineAssembler({ format, maxLineBytes, now: () => NOW_MS });
}

function cri(time: string, stream: 'stdout' | 'stderr', tag: 'P' | 'F', message: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${time} ${stream} ${tag} `), typeof message === 'string' ? Buffer.from(message) : message]);
}

function docker(time: string, stream: 'stdout' | 'stderr', log: string): string {
  return JSON.stringify({ log, stream, time });
}

function entry(time: string, stream: 'stdout' | 'stderr', message: string, start: number, end: number, flags: RecordFlag[] = []): LogEntry {
  return { time, stream, message, start, end, flags };
}

describe('LineAssembler', () => {
  it('emits a full line as one entry with its byte range', () => {
    const file = new FakeFile();
    const a = assembler();
    const line = cri(T1, 'stdout', 'F', 'hello');
    assert.deepEqual(a.push(file.line(line)), [entry(T1, 'stdout', 'hello', 0, line.length + 1)]);
    assert.equal(a.pendingStart(), undefined);
  });

  it('merges P + P + F chunks into one entry from the first start to the end of the F line', () => {
    const file = new FakeFile();
    const a = assembler();
    const first = file.line(cri(T1, 'stdout', 'P', 'aaa'));
    const second = file.line(cri(T2, 'stdout', 'P', 'bbb'));
    assert.deepEqual(a.push(first), []);
    assert.equal(a.pendingStart(), 0);
    assert.deepEqual(a.push(second), []);
    assert.equal(a.pendingStart(), 0);
    const last = file.line(cri(T3, 'stdout', 'F', 'ccc'));
    assert.deepEqual(a.push(last), [entry(T1, 'stdout', 'aaabbbccc', 0, last.end)]);
    assert.equal(a.pendingStart(), undefined);
  });

  it('merges each stream on its own when the other stream sits between the chunks', () => {
    const file = new FakeFile();
    const a = assembler();
    const outP = file.line(cri(T1, 'stdout', 'P', 'out-1 '));
    const errP = file.line(cri(T1, 'stderr', 'P', 'err-1 '));
    const errF = file.line(cri(T2, 'stderr', 'F', 'err-2'));
    const outP2 = file.line(cri(T2, 'stdout', 'P', 'out-2 '));
    const errFull = file.line(cri(T3, 'stderr', 'F', 'err alone'));
    const outF = file.line(cri(T3, 'stdout', 'F', 'out-3'));

    assert.deepEqual(a.push(outP), []);
    assert.deepEqual(a.push(errP), []);
    assert.equal(a.pendingStart(), outP.start);
    assert.deepEqual(a.push(errF), [entry(T1, 'stderr', 'err-1 err-2', errP.start, errF.end)]);
    assert.equal(a.pendingStart(), outP.start);
    assert.deepEqual(a.push(outP2), []);
    assert.deepEqual(a.push(errFull), [entry(T3, 'stderr', 'err alone', errFull.start, errFull.end)]);
    assert.equal(a.pendingStart(), outP.start);
    assert.deepEqual(a.push(outF), [entry(T1, 'stdout', 'out-1 out-2 out-3', outP.start, outF.end)]);
    assert.equal(a.pendingStart(), undefined);
  });

  it('reports the smaller start when both streams have a partial pending', () => {
    const file = new FakeFile();
    const a = assembler();
    a.push(file.line('garbage that is shipped raw'));
    const errP = file.line(cri(T1, 'stderr', 'P', 'e'));
    const outP = file.line(cri(T1, 'stdout', 'P', 'o'));
    a.push(errP);
    a.push(outP);
    assert.equal(a.pendingStart(), errP.start);
    a.push(file.line(cri(T2, 'stderr', 'F', 'e')));
    assert.equal(a.pendingStart(), outP.start);
  });

  it('merges docker partial chunks until the log ending in a newline', () => {
    const file = new FakeFile();
    const a = assembler(1024, 'docker');
    const first = file.line(docker(T1, 'stdout', 'part one, '));
    const other = file.line(docker(T2, 'stderr', 'an error\n'));
    const last = file.line(docker(T3, 'stdout', 'part two\n'));
    assert.deepEqual(a.push(first), []);
    assert.deepEqual(a.push(other), [entry(T2, 'stderr', 'an error', other.start, other.end)]);
    assert.deepEqual(a.push(last), [entry(T1, 'stdout', 'part one, part two', first.start, last.end)]);
  });

  it('truncates a merged line at maxLineBytes, discards the rest and still completes at the F chunk', () => {
    const file = new FakeFile();
    const a = assembler(10);
    assert.deepEqual(a.push(file.line(cri(T1, 'stdout', 'P', 'abcdefg'))), []);
    assert.deepEqual(a.push(file.line(cri(T1, 'stdout', 'P', 'hijklmn'))), []);
    assert.deepEqual(a.push(file.line(cri(T1, 'stdout', 'P', 'opqrstu'))), []);
    const last = file.line(cri(T2, 'stdout', 'F', 'vwxyz'));
    assert.deepEqual(a.push(last), [entry(T1, 'stdout', 'abcdefghij', 0, last.end, [RecordFlag.TRUNCATED])]);
    assert.deepEqual(a.counters, { unparsed: 0, truncated: 1, invalidUtf8: 0 });
    // The next line is unaffected.
    const next = file.line(cri(T3, 'stdout', 'F', 'short'));
    assert.deepEqual(a.push(next), [entry(T3, 'stdout', 'short', next.start, next.end)]);
    assert.equal(a.counters.truncated, 1);
  });

  it('does not flag a merged line of exactly maxLineBytes', () => {
    const file = new FakeFile();
    const a = assembler(6);
    a.push(file.line(cri(T1, 'stdout', 'P', 'abc')));
    const last = file.line(cri(T1, 'stdout', 'F', 'def'));
    assert.deepEqual(a.push(last), [entry(T1, 'stdout', 'abcdef', 0, last.end)]);
    assert.equal(a.counters.truncated, 0);
  });

  it('truncates a single 10 MiB physical line to maxLineBytes', () => {
    const file = new FakeFile();
    const maxLineBytes = 256 * 1024;
    const a = assembler(maxLineBytes);
    const huge = cri(T1, 'stderr', 'F', Buffer.alloc(10 * 1024 * 1024, 'x'));
    const line = file.line(huge);
    const [only, ...rest] = a.push(line);
    assert.deepEqual(rest, []);
    assert.ok(only);
    assert.equal(only.message, 'x'.repeat(maxLineBytes));
    assert.deepEqual(only.flags, [RecordFlag.TRUNCATED]);
    assert.equal(only.start, 0);
    assert.equal(only.end, huge.length + 1);
    assert.equal(a.counters.truncated, 1);
  });

  it('cuts a truncated line at a character boundary without calling it invalid UTF-8', () => {
    // '€' is 3 bytes (e2 82 ac), '🚀' 4 bytes: a cap of 5 bytes falls inside the second '€'.
    const cases: [string, number, string][] = [
      ['€€', 5, '€'],
      ['€€', 4, '€'],
      ['€€', 3, '€'],
      ['a🚀', 4, 'a'],
      ['a🚀', 2, 'a'],
      ['aé', 2, 'a'],
      ['aé', 3, 'aé'],
    ];
    for (const [text, max, expected] of cases) {
      const file = new FakeFile();
      const single = assembler(max).push(file.line(cri(T1, 'stdout', 'F', `${text}tail`)));
      assert.deepEqual(single, [entry(T1, 'stdout', expected, 0, single[0]?.end ?? -1, [RecordFlag.TRUNCATED])], `${text} / ${max}`);
    }
  });

  it('cuts a merged line at a character boundary when the cap falls in a chunk', () => {
    const file = new FakeFile();
    const a = assembler(5);
    a.push(file.line(cri(T1, 'stdout', 'P', 'ab')));
    const last = file.line(cri(T1, 'stdout', 'F', 'c€d'));
    assert.deepEqual(a.push(last), [entry(T1, 'stdout', 'abc', 0, last.end, [RecordFlag.TRUNCATED])]);
    assert.equal(a.counters.invalidUtf8, 0);
  });

  it('rejoins a multi-byte character the runtime split across chunks', () => {
    const file = new FakeFile();
    const a = assembler();
    const euro = Buffer.from('€');
    a.push(file.line(cri(T1, 'stdout', 'P', Buffer.concat([Buffer.from('price '), euro.subarray(0, 2)]))));
    const last = file.line(cri(T1, 'stdout', 'F', Buffer.concat([euro.subarray(2), Buffer.from('5')])));
    assert.deepEqual(a.push(last), [entry(T1, 'stdout', 'price €5', 0, last.end)]);
    assert.equal(a.counters.invalidUtf8, 0);
  });

  it('repairs invalid UTF-8 with U+FFFD and flags it', () => {
    const file = new FakeFile();
    const a = assembler();
    const line = file.line(cri(T1, 'stdout', 'F', Buffer.from([0x61, 0xff, 0x62, 0xc3, 0x28])));
    assert.deepEqual(a.push(line), [entry(T1, 'stdout', 'a\uFFFDb\uFFFD(', line.start, line.end, [RecordFlag.INVALID_UTF8])]);
    assert.deepEqual(a.counters, { unparsed: 0, truncated: 0, invalidUtf8: 1 });
  });

  it('repairs invalid UTF-8 in a merged line, even when it spans chunks', () => {
    const file = new FakeFile();
    const a = assembler();
    a.push(file.line(cri(T1, 'stderr', 'P', Buffer.from([0x61, 0xe2, 0x82]))));
    const last = file.line(cri(T1, 'stderr', 'F', Buffer.from([0x62])));
    assert.deepEqual(a.push(last), [entry(T1, 'stderr', 'a\uFFFDb', 0, last.end, [RecordFlag.INVALID_UTF8])]);
    assert.equal(a.counters.invalidUtf8, 1);
  });

  it('does not flag a message that really contains U+FFFD', () => {
    const file = new FakeFile();
    const a = assembler();
    const whole = file.line(cri(T1, 'stdout', 'F', 'lost: \uFFFD'));
    assert.deepEqual(a.push(whole), [entry(T1, 'stdout', 'lost: \uFFFD', whole.start, whole.end)]);
    a.push(file.line(cri(T1, 'stdout', 'P', '\uFFFD')));
    const last = file.line(cri(T2, 'stdout', 'F', '!'));
    assert.deepEqual(a.push(last)[0]?.flags, []);
    const json = new LineAssembler({ format: 'docker', maxLineBytes: 100 }).push(file.line(docker(T1, 'stdout', '\uFFFD\n')));
    assert.deepEqual(json[0]?.flags, []);
    assert.equal(a.counters.invalidUtf8, 0);
  });

  it('flags a line both truncated and invalid when the invalid bytes are before the cut', () => {
    const file = new FakeFile();
    const a = assembler(3);
    const line = file.line(cri(T1, 'stdout', 'F', Buffer.from([0xff, 0x61, 0x62, 0x63, 0x64])));
    assert.deepEqual(a.push(line), [entry(T1, 'stdout', '\uFFFDab', line.start, line.end, [RecordFlag.TRUNCATED, RecordFlag.INVALID_UTF8])]);
    assert.deepEqual(a.counters, { unparsed: 0, truncated: 1, invalidUtf8: 1 });
  });

  it('ships a line that does not parse raw, stamped with the wall clock', () => {
    const file = new FakeFile();
    const a = assembler();
    const line = file.line('panic: this is not CRI');
    assert.deepEqual(a.push(line), [entry('2030-01-02T03:04:05.678Z', 'stdout', 'panic: this is not CRI', 0, line.end, [RecordFlag.UNPARSED])]);
    assert.deepEqual(a.counters, { unparsed: 1, truncated: 0, invalidUtf8: 0 });
  });

  it('ships random bytes raw, repaired and capped, one entry per line', () => {
    const file = new FakeFile();
    const a = assembler(64);
    let seed = 7;
    const random = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % 256;
    const entries: LogEntry[] = [];
    for (let i = 0; i < 200; i++) {
      const bytes = Buffer.from(Array.from({ length: 1 + (i % 100) }, random).map((b) => (b === 0x0a ? 0x0b : b)));
      entries.push(...a.push(file.line(bytes)));
    }
    assert.equal(entries.length, 200);
    assert.equal(a.counters.unparsed, 200);
    for (const e of entries) {
      assert.ok(e.flags.includes(RecordFlag.UNPARSED));
      assert.equal(e.stream, 'stdout');
      assert.ok(Buffer.byteLength(e.message) <= 64 * 3, 'replacement characters may grow the text, the bytes kept are capped');
    }
    assert.ok(a.counters.invalidUtf8 > 150, `most random lines are invalid UTF-8, got ${a.counters.invalidUtf8}`);
    assert.equal(a.counters.truncated, entries.filter((e) => e.flags.includes(RecordFlag.TRUNCATED)).length);
  });

  it('skips empty physical lines without counting them', () => {
    const file = new FakeFile();
    const a = assembler();
    assert.deepEqual(a.push(file.line('')), []);
    const line = file.line(cri(T1, 'stdout', 'F', 'after'));
    assert.deepEqual(a.push(line), [entry(T1, 'stdout', 'after', 1, line.end)]);
    assert.deepEqual(a.counters, { unparsed: 0, truncated: 0, invalidUtf8: 0 });
  });

  it('treats an F chunk with nothing pending as a whole line, and an unparsed line between chunks as separate', () => {
    const file = new FakeFile();
    const a = assembler();
    const p = file.line(cri(T1, 'stdout', 'P', 'x'));
    const junk = file.line('junk');
    const f = file.line(cri(T2, 'stdout', 'F', 'y'));
    assert.deepEqual(a.push(p), []);
    assert.deepEqual(a.push(junk), [entry('2030-01-02T03:04:05.678Z', 'stdout', 'junk', junk.start, junk.end, [RecordFlag.UNPARSED])]);
    assert.deepEqual(a.push(f), [entry(T1, 'stdout', 'xy', p.start, f.end)]);
  });

  describe('auto format', () => {
    it('is undefined until the first non-empty line', () => {
      const a = assembler(1024, 'auto');
      assert.equal(a.format, undefined);
      a.push(new FakeFile().line(''));
      assert.equal(a.format, undefined);
    });

    it('picks docker for a line starting with {', () => {
      const file = new FakeFile();
      const a = assembler(1024, 'auto');
      const line = file.line(docker(T1, 'stderr', 'boom\n'));
      assert.deepEqual(a.push(line), [entry(T1, 'stderr', 'boom', 0, line.end)]);
      assert.equal(a.format, 'docker');
    });

    it('picks CRI otherwise, and sticks to it', () => {
      const file = new FakeFile();
      const a = assembler(1024, 'auto');
      a.push(file.line(cri(T1, 'stdout', 'F', 'x')));
      assert.equal(a.format, 'cri');
      const json = file.line(docker(T1, 'stdout', 'y\n'));
      assert.deepEqual(a.push(json)[0]?.flags, [RecordFlag.UNPARSED]);
      assert.equal(a.format, 'cri');
    });

    it('reports a fixed format from the start', () => {
      assert.equal(assembler(1024, 'docker').format, 'docker');
      assert.equal(assembler(1024, 'cri').format, 'cri');
    });
  });

  describe('flush', () => {
    it('emits orphan partials in file order, flagged only when the cap cut them', () => {
      const file = new FakeFile();
      const a = assembler(8);
      const errP = file.line(cri(T1, 'stderr', 'P', 'err'));
      const outP = file.line(cri(T2, 'stdout', 'P', 'out-long'));
      const outP2 = file.line(cri(T3, 'stdout', 'P', '-more'));
      a.push(errP);
      a.push(outP);
      a.push(outP2);
      assert.equal(a.pendingStart(), errP.start);
      assert.deepEqual(a.flush(), [
        entry(T1, 'stderr', 'err', errP.start, errP.end, [RecordFlag.PARTIAL]),
        entry(T2, 'stdout', 'out-long', outP.start, outP2.end, [RecordFlag.TRUNCATED, RecordFlag.PARTIAL]),
      ]);
      assert.equal(a.pendingStart(), undefined);
      assert.deepEqual(a.flush(), []);
    });

    it('emits an empty partial as an empty message', () => {
      const file = new FakeFile();
      const a = assembler();
      const p = file.line(cri(T1, 'stdout', 'P', ''));
      a.push(p);
      assert.deepEqual(a.flush(), [entry(T1, 'stdout', '', p.start, p.end, [RecordFlag.PARTIAL])]);
    });

    it('ships a split line whose last chunk is overdue flagged partial, and its late rest flagged partial too', () => {
      const file = new FakeFile();
      let now = 1_000;
      const a = new LineAssembler({ format: 'cri', maxLineBytes: 1024, now: () => now });
      const p1 = file.line(cri(T1, 'stdout', 'P', 'first half '));
      const other = file.line(cri(T2, 'stderr', 'F', 'other stream'));
      assert.deepEqual(a.push(p1), []);
      assert.deepEqual(a.push(other), [entry(T2, 'stderr', 'other stream', other.start, other.end)]);
      now = 5_000;
      assert.deepEqual(a.flushStale(1_000), [], 'opened at 1000: not before 1000');
      assert.equal(a.pendingStart(), p1.start, 'the checkpoint stays before it while it waits');
      assert.deepEqual(a.flushStale(1_001), [entry(T1, 'stdout', 'first half ', p1.start, p1.end, [RecordFlag.PARTIAL])]);
      assert.equal(a.pendingStart(), undefined, 'no longer holds the checkpoint back');
      assert.equal(a.hasPending('stdout'), true, 'the rest must not take the fast path unflagged');
      const rest = file.line(cri(T1, 'stdout', 'F', 'second half'));
      assert.deepEqual(a.push(rest), [entry(T1, 'stdout', 'second half', rest.start, rest.end, [RecordFlag.PARTIAL])]);
      const next = file.line(cri(T3, 'stdout', 'F', 'whole'));
      assert.deepEqual(a.push(next), [entry(T3, 'stdout', 'whole', next.start, next.end)], 'the line after it is whole again');
    });
  });

  it('copies pending chunks, so the caller may reuse its read buffer', () => {
    const file = new FakeFile();
    const a = assembler();
    const buffer = cri(T1, 'stdout', 'P', 'first');
    a.push(file.line(buffer));
    buffer.fill(0x21);
    const last = file.line(cri(T1, 'stdout', 'F', '-second'));
    assert.equal(a.push(last)[0]?.message, 'first-second');
  });

  it('shares one frozen empty flags array across clean entries', () => {
    const file = new FakeFile();
    const a = assembler();
    const [one] = a.push(file.line(cri(T1, 'stdout', 'F', 'a')));
    const [two] = a.push(file.line(cri(T1, 'stdout', 'F', 'b')));
    assert.ok(one && two);
    assert.equal(one.flags, two.flags);
    assert.ok(Object.isFrozen(one.flags));
  });

  it('rejects a maxLineBytes that is not a positive integer', () => {
    assert.throws(() => new LineAssembler({ format: 'cri', maxLineBytes: 0 }), RangeError);
    assert.throws(() => new LineAssembler({ format: 'cri', maxLineBytes: 1.5 }), RangeError);
  });
});

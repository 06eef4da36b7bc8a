import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCriLine, scanCriLine, type CriLayout, type ParsedLine } from '../../../agent/cri-parser.js';

const TIME = '2026-11-22T04:17:19.123456789Z';

function parse(line: string | Buffer): ParsedLine {
  return parseCriLine(typeof line === 'string' ? Buffer.from(line, 'utf8') : line);
}

function ok(line: string | Buffer): { time: string; stream: string; partial: boolean; message: string } {
  const parsed = parse(line);
  assert.ok(parsed.kind === 'ok', `expected ${JSON.stringify(line.toString())} to parse`);
  return { time: parsed.time, stream: parsed.stream, partial: parsed.partial, message: parsed.message.toString('utf8') };
}

describe('parseCriLine', () => {
  it('parses a full stdout line, keeping the time as written', () => {
    assert.deepEqual(ok(`${TIME} stdout F GET /health 200`), { time: TIME, stream: 'stdout', partial: false, message: 'GET /health 200' });
  });

  it('parses a partial stderr chunk', () => {
    assert.deepEqual(ok(`${TIME} stderr P first half of a long line`), {
      time: TIME,
      stream: 'stderr',
      partial: true,
      message: 'first half of a long line',
    });
  });

  it('keeps spaces, tabs, \\r and non-ASCII bytes in the message as they are', () => {
    assert.equal(ok(`${TIME} stdout F   two  spaces\tand tab\r`).message, '  two  spaces\tand tab\r');
    assert.equal(ok(`${TIME} stdout F héllo wörld ✓ 🚀`).message, 'héllo wörld ✓ 🚀');
  });

  it('returns the message as a view into the input, not a copy', () => {
    const line = Buffer.from(`${TIME} stdout F abc`);
    const parsed = parseCriLine(line);
    assert.ok(parsed.kind === 'ok');
    line[line.length - 1] = 0x5a; // 'Z'
    assert.equal(parsed.message.toString(), 'abZ');
  });

  it('accepts an empty message with and without the space after the tag', () => {
    assert.deepEqual(ok(`${TIME} stdout F `), { time: TIME, stream: 'stdout', partial: false, message: '' });
    assert.deepEqual(ok(`${TIME} stdout F`), { time: TIME, stream: 'stdout', partial: false, message: '' });
    assert.deepEqual(ok(`${TIME} stderr P`), { time: TIME, stream: 'stderr', partial: true, message: '' });
  });

  it('accepts extra colon-separated tags after P or F', () => {
    assert.deepEqual(ok(`${TIME} stdout F:x:y msg`), { time: TIME, stream: 'stdout', partial: false, message: 'msg' });
    assert.deepEqual(ok(`${TIME} stderr P:extra tail`), { time: TIME, stream: 'stderr', partial: true, message: 'tail' });
    assert.deepEqual(ok(`${TIME} stdout F:x`), { time: TIME, stream: 'stdout', partial: false, message: '' });
  });

  it('accepts second-precision and offset timestamps', () => {
    assert.equal(ok('2026-11-22T04:17:19Z stdout F a').time, '2026-11-22T04:17:19Z');
    assert.equal(ok('2026-11-22T13:17:19.5+09:00 stdout F a').time, '2026-11-22T13:17:19.5+09:00');
  });

  it('rejects lines with missing or broken fields', () => {
    const malformed = [
      '',
      'hello world',
      TIME,
      `${TIME} `,
      `${TIME} stdout`,
      `${TIME} stdout `,
      '2026-11-22T04:17:19Z std',
      `${TIME} stdin F msg`,
      `${TIME} STDOUT F msg`,
      `${TIME} stdoutF msg`,
      `${TIME}  stdout F msg`,
      `${TIME} stdout X msg`,
      `${TIME} stdout PF msg`,
      `${TIME} stdout full msg`,
      `${TIME} stdout  F msg`,
      `Nov 22 04:17:19 stdout F msg`,
      `x026-11-22T04:17:19Z stdout F msg`,
      `2026-11-22 04:17:19Z stdout F msg`,
      `2026-11-22T04:17:19.123456789Z+extra-long-garbage-in-the-time-field stdout F msg`,
      `{"log":"x\\n","stream":"stdout","time":"${TIME}"}`,
    ];
    for (const line of malformed) assert.deepEqual(parse(line), { kind: 'invalid', reason: 'malformed' }, JSON.stringify(line));
  });

  it('rejects non-ASCII bytes before the message', () => {
    const withByte = (prefix: string, byte: number, rest: string): Buffer => Buffer.concat([Buffer.from(prefix), Buffer.from([byte]), Buffer.from(rest)]);
    assert.equal(parseCriLine(withByte('2026-11-22T04:17:19.12', 0xe9, '3Z stdout F msg')).kind, 'invalid');
    assert.equal(parseCriLine(withByte(`${TIME} stdout F:`, 0xe9, ' msg')).kind, 'invalid');
    assert.equal(parseCriLine(withByte(`${TIME} stdout F `, 0xe9, 'msg')).kind, 'ok');
  });

  it('rejects random bytes without throwing', () => {
    let seed = 42;
    const random = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % 256;
    for (let i = 0; i < 1_000; i++) {
      const bytes = Buffer.from(Array.from({ length: 1 + (i % 120) }, random));
      assert.equal(parseCriLine(bytes).kind, 'invalid');
    }
  });
});

describe('scanCriLine', () => {
  const layout = (): CriLayout => ({ timeEnd: -1, stream: 'stdout', partial: false, messageStart: -1 });

  it('finds the fields without allocating them', () => {
    const out = layout();
    assert.equal(scanCriLine(Buffer.from(`${TIME} stderr P:x hello`), out), true);
    assert.deepEqual(out, { timeEnd: TIME.length, stream: 'stderr', partial: true, messageStart: TIME.length + 12 });
  });

  it('puts messageStart at the end of a line without a message', () => {
    const out = layout();
    const line = Buffer.from(`${TIME} stdout F`);
    assert.equal(scanCriLine(line, out), true);
    assert.equal(out.messageStart, line.length);
  });

  it('returns false for a line that is not CRI', () => {
    assert.equal(scanCriLine(Buffer.from('not a cri line at all'), layout()), false);
  });
});

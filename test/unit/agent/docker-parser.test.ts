import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDockerLine } from '../../../agent/docker-parser.js';

const TIME = '2026-11-22T04:17:19.123456789Z';

function ok(line: string): { time: string; stream: string; partial: boolean; message: string } {
  const parsed = parseDockerLine(Buffer.from(line, 'utf8'));
  assert.ok(parsed.kind === 'ok', `expected ${line} to parse`);
  return { time: parsed.time, stream: parsed.stream, partial: parsed.partial, message: parsed.message.toString('utf8') };
}

const line = (fields: Record<string, unknown>): string => JSON.stringify(fields);

describe('parseDockerLine', () => {
  it('parses a complete line and strips its trailing newline', () => {
    assert.deepEqual(ok(line({ log: 'GET /health 200\n', stream: 'stdout', time: TIME })), {
      time: TIME,
      stream: 'stdout',
      partial: false,
      message: 'GET /health 200',
    });
  });

  it('treats a log value without a trailing newline as a partial chunk', () => {
    assert.deepEqual(ok(line({ log: 'first 16 KiB', stream: 'stderr', time: TIME })), {
      time: TIME,
      stream: 'stderr',
      partial: true,
      message: 'first 16 KiB',
    });
  });

  it('strips only the final newline and keeps \\r, escapes and non-ASCII text', () => {
    assert.equal(ok(line({ log: 'a\tb "q" é ✓ 🚀\r\n', stream: 'stdout', time: TIME })).message, 'a\tb "q" é ✓ 🚀\r');
    assert.equal(ok(line({ log: 'two\n\n', stream: 'stdout', time: TIME })).message, 'two\n');
  });

  it('parses an empty final chunk as an empty message', () => {
    assert.deepEqual(ok(line({ log: '\n', stream: 'stdout', time: TIME })), { time: TIME, stream: 'stdout', partial: false, message: '' });
  });

  it('ignores extra keys such as attrs, in any order', () => {
    assert.deepEqual(ok(`{"time":"${TIME}","attrs":{"tag":"x"},"stream":"stdout","log":"hi\\n"}`), {
      time: TIME,
      stream: 'stdout',
      partial: false,
      message: 'hi',
    });
  });

  it('rejects malformed JSON, wrong types and missing fields', () => {
    const malformed = [
      '',
      '{',
      `{"log":"x\\n","stream":"stdout","time":"${TIME}"`,
      'null',
      '42',
      '"a string"',
      '[]',
      line({ log: 42, stream: 'stdout', time: TIME }),
      line({ log: null, stream: 'stdout', time: TIME }),
      line({ log: ['x'], stream: 'stdout', time: TIME }),
      line({ stream: 'stdout', time: TIME }),
      line({ log: 'x\n', stream: 'stdin', time: TIME }),
      line({ log: 'x\n', time: TIME }),
      line({ log: 'x\n', stream: 'stdout' }),
      line({ log: 'x\n', stream: 'stdout', time: 1_700_000_000 }),
      line({ log: 'x\n', stream: 'stdout', time: 'yesterday' }),
      `${TIME} stdout F not json`,
    ];
    for (const input of malformed) {
      assert.deepEqual(parseDockerLine(Buffer.from(input)), { kind: 'invalid', reason: 'malformed' }, input);
    }
  });
});

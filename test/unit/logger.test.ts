import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, RateLimitedLog, redactSecrets } from '../../shared/logger.js';

function captured(): { lines: () => Record<string, unknown>[]; stream: Writable } {
  const chunks: string[] = [];
  return {
    stream: new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk.toString());
        cb();
      },
    }),
    lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('logger', () => {
  it('writes JSON lines with level names and never the secrets it is handed', () => {
    const out = captured();
    const logger = createLogger({ name: 'test', destination: out.stream });
    logger.info(
      { password: 'p-one', s3: { secretAccessKey: 'p-two' }, headers: { authorization: 'Bearer p-three' }, err: new Error('connect https://user:p-four@es.local:9200 failed') },
      'connecting',
    );
    const text = JSON.stringify(out.lines());
    for (const secret of ['p-one', 'p-two', 'p-three', 'p-four']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
    assert.deepEqual(
      out.lines().map((l) => [l.level, l.msg, l.name]),
      [['info', 'connecting', 'test']],
    );
  });

  it('redactSecrets hides secret values at any depth and keeps secret file paths', () => {
    const config = { kafka: { sasl: { username: 'u', password: { value: 'pw', file: undefined } } }, es: { apiKey: { file: '/run/secrets/key' } }, nodes: ['https://a:b@h:1'] };
    assert.deepEqual(redactSecrets(config), {
      kafka: { sasl: { username: 'u', password: { value: '[redacted]', file: undefined } } },
      es: { apiKey: { file: '/run/secrets/key' } },
      nodes: ['https://a:[redacted]@h:1'],
    });
  });
});

describe('RateLimitedLog', () => {
  it('logs a reason once per interval and reports how many it held back', () => {
    const out = captured();
    let now = 0;
    const log = new RateLimitedLog(createLogger({ name: 't', destination: out.stream }), 1_000, () => now);
    const results = [log.warn('invalid_utf8', { file: 'a' }, 'bad'), log.warn('invalid_utf8', {}, 'bad'), log.warn('truncated', {}, 'long')];
    now = 500;
    results.push(log.warn('invalid_utf8', {}, 'bad'));
    now = 1_000;
    results.push(log.warn('invalid_utf8', {}, 'bad'));
    assert.deepEqual(results, [true, false, true, false, true]);
    const lines = out.lines();
    assert.deepEqual(
      lines.map((l) => [l.reason, l.suppressed]),
      [
        ['invalid_utf8', undefined],
        ['truncated', undefined],
        ['invalid_utf8', 2],
      ],
    );
  });
});

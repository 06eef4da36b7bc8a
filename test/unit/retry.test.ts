import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AbortError, ErrorCode, LogshipError, SinkError } from '../../shared/errors.js';
import { backoffDelayMs, retry } from '../../shared/retry.js';

const transient = (): SinkError => new SinkError('try again', { code: ErrorCode.SINK_UNAVAILABLE, retriable: true });
const permanent = (): SinkError => new SinkError('rejected', { code: ErrorCode.SINK_REJECTED, retriable: false });

describe('backoffDelayMs', () => {
  const options = { initialDelayMs: 100, maxDelayMs: 1_000, multiplier: 2 };

  it('grows exponentially between half and all of the ceiling', () => {
    assert.equal(backoffDelayMs(0, options, () => 0), 50);
    assert.equal(backoffDelayMs(0, options, () => 1), 100);
    assert.equal(backoffDelayMs(2, options, () => 0), 200);
    assert.equal(backoffDelayMs(2, options, () => 1), 400);
  });

  it('is capped at maxDelayMs however many attempts', () => {
    for (const attempt of [4, 10, 50, 1000]) {
      assert.equal(backoffDelayMs(attempt, options, () => 1), 1_000);
      assert.equal(backoffDelayMs(attempt, options, () => 0), 500);
    }
  });

  it('spreads delays across the jitter range', () => {
    const delays = new Set(Array.from({ length: 200 }, () => backoffDelayMs(3, options)));
    assert.ok(delays.size > 50, `expected spread, got ${delays.size} distinct delays`);
    for (const d of delays) assert.ok(d >= 400 && d <= 800, `delay ${d} outside [400, 800]`);
  });
});

describe('retry', () => {
  it('retries retriable failures until success, reporting each retry', async () => {
    const seen: [number, number][] = [];
    let calls = 0;
    const result = await retry(
      async () => {
        calls++;
        if (calls < 3) throw transient();
        return 'ok';
      },
      { maxAttempts: 5, initialDelayMs: 1, maxDelayMs: 2, onRetry: (_e, attempt, delay) => seen.push([attempt, delay]) },
    );
    assert.equal(result, 'ok');
    assert.equal(calls, 3);
    assert.deepEqual(seen.map(([a]) => a), [1, 2]);
    assert.ok(seen.every(([, d]) => d >= 0 && d <= 2));
  });

  it('fails fast on a non-retriable error, without retrying', async () => {
    let calls = 0;
    await assert.rejects(
      retry(async () => {
        calls++;
        throw permanent();
      }, { maxAttempts: 5, initialDelayMs: 1 }),
      (error: unknown) => error instanceof SinkError && error.code === ErrorCode.SINK_REJECTED,
    );
    assert.equal(calls, 1);
  });

  it('gives up after maxAttempts with the last failure as cause', async () => {
    let calls = 0;
    await assert.rejects(
      retry(async () => {
        calls++;
        throw transient();
      }, { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 }),
      (error: unknown) => error instanceof LogshipError && error.code === ErrorCode.RETRY_EXHAUSTED && error.cause instanceof SinkError,
    );
    assert.equal(calls, 3);
  });

  it('honours a delay the failure asks for when it is longer than the backoff', async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(
      async () => {
        if (calls++ === 0) throw transient();
      },
      { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1, retryAfterMs: () => 25, onRetry: (_e, _a, d) => delays.push(d) },
    );
    assert.deepEqual(delays, [25]);
  });

  it('recognises retriable errors of the client libraries', async () => {
    const kafkajsLike = Object.assign(new Error('leader not available'), { retriable: true });
    const http503 = Object.assign(new Error('unavailable'), { statusCode: 503 });
    const http400 = Object.assign(new Error('bad request'), { statusCode: 400 });
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    for (const [error, expectedCalls] of [[kafkajsLike, 2], [http503, 2], [refused, 2], [http400, 1]] as const) {
      let calls = 0;
      await retry(
        async () => {
          if (calls++ === 0) throw error;
        },
        { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
      ).catch(() => undefined);
      assert.equal(calls, expectedCalls, `calls for ${error.message}`);
    }
  });

  it('stops waiting as soon as the signal aborts', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const pending = retry(
      async () => {
        throw transient();
      },
      { maxAttempts: Infinity, initialDelayMs: 60_000, maxDelayMs: 60_000, signal: controller.signal },
    );
    setImmediate(() => controller.abort());
    await assert.rejects(pending, (error: unknown) => error instanceof AbortError);
    assert.ok(Date.now() - started < 30_000, 'abort must not wait for the backoff to elapse');
  });
});

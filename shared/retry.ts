import { setTimeout as sleep } from 'node:timers/promises';
import { AbortError, ErrorCode, isRetriable, LogshipError } from './errors.js';

export interface BackoffOptions {
  /** Delay before the first retry, before jitter. */
  initialDelayMs: number;
  /** Upper bound of any single delay. */
  maxDelayMs: number;
  /** Growth factor per attempt. */
  multiplier?: number;
}

export const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>> = { initialDelayMs: 100, maxDelayMs: 30_000, multiplier: 2 };

/**
 * Delay before retry number `attempt` (0 for the first retry): exponential, capped at `maxDelayMs`,
 * with "equal jitter" (half fixed, half random) so that many clients failing together spread out
 * while no delay collapses to zero.
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const multiplier = options.multiplier ?? DEFAULT_BACKOFF.multiplier;
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * multiplier ** Math.max(0, attempt));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export interface RetryOptions extends Partial<BackoffOptions> {
  /** Total attempts including the first; `Infinity` retries until aborted. */
  maxAttempts: number;
  /** Decides whether a failure is worth another attempt; defaults to {@link isRetriable}. */
  shouldRetry?: (error: unknown, attempt: number) => boolean;
  /** A delay the failure itself asks for (e.g. Retry-After); the larger of this and the backoff wins. */
  retryAfterMs?: (error: unknown) => number | undefined;
  /** Called before each wait, for logging and metrics. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
  random?: () => number;
}

/**
 * Runs `operation` until it succeeds, a failure is not retriable, attempts run out or `signal` aborts.
 * Exhaustion throws a {@link LogshipError} with code RETRY_EXHAUSTED whose cause is the last failure.
 */
export async function retry<T>(operation: (attempt: number, signal?: AbortSignal) => Promise<T>, options: RetryOptions): Promise<T> {
  const backoff: BackoffOptions = {
    initialDelayMs: options.initialDelayMs ?? DEFAULT_BACKOFF.initialDelayMs,
    maxDelayMs: options.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs,
    multiplier: options.multiplier ?? DEFAULT_BACKOFF.multiplier,
  };
  const shouldRetry = options.shouldRetry ?? ((error: unknown) => isRetriable(error));
  for (let attempt = 0; ; attempt++) {
    if (options.signal?.aborted) throw new AbortError('retry aborted', options.signal.reason);
    try {
      return await operation(attempt, options.signal);
    } catch (error) {
      if (options.signal?.aborted) throw new AbortError('retry aborted', error);
      if (!shouldRetry(error, attempt)) throw error;
      if (attempt + 1 >= options.maxAttempts) {
        throw new LogshipError(`gave up after ${attempt + 1} attempts`, { code: ErrorCode.RETRY_EXHAUSTED, retriable: true, cause: error });
      }
      const delayMs = Math.max(backoffDelayMs(attempt, backoff, options.random), options.retryAfterMs?.(error) ?? 0);
      options.onRetry?.(error, attempt + 1, delayMs);
      await abortableSleep(delayMs, options.signal);
    }
  }
}

/** Waits `ms`, or rejects with {@link AbortError} as soon as `signal` aborts (so shutdown never waits on a backoff). */
export async function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch (error) {
    throw new AbortError('sleep aborted', error);
  }
}

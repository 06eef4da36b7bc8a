import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../../shared/errors.js';

/** Polls `probe` until it returns true, or throws after `timeoutMs` with the last error seen. */
export async function poll(description: string, probe: () => Promise<boolean>, timeoutMs: number, intervalMs: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    signal.throwIfAborted();
    try {
      if (await probe()) return;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}${lastError === undefined ? '' : `: ${describeError(lastError)}`}`);
    await sleep(intervalMs, undefined, { signal });
  }
}

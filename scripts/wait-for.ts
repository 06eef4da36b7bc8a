/** One polling loop for scripts and tests: the stack, the node's pods, the tests' conditions. */
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../shared/errors.js';

/**
 * Polls `probe` every `intervalMs` until it returns a value other than undefined/false, and returns
 * it; throws after `timeoutMs`, naming what it waited for and the last error the probe threw.
 */
export async function waitFor<T>(description: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, intervalMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}${lastError === undefined ? '' : `: ${describeError(lastError)}`}`);
    }
    await sleep(intervalMs);
  }
}

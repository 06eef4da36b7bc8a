/**
 * How far V8 lets the old generation grow past what a full collection left alive before it starts
 * the next one.
 *
 * V8 counts external memory (the backing stores of Buffers) that outlived a young-generation
 * collection towards that limit. kafkajs encodes every produce request into fresh Buffers that live
 * across the await for the broker's answer, so they get promoted; with a small live heap (~20 MiB),
 * V8's own growth factor (about 1.5 there) started a full collection every ~10 MiB of them: 486 in a
 * 3M-line agent benchmark, and the V8 helper threads used a third of the agent's CPU marking the same
 * live heap over and over. A fixed factor lets ~3 times the live heap accumulate instead; the garbage
 * is short-lived Buffers, so peak memory grows by that much at most.
 *
 * A `--heap-growing-percent` on the node command line wins (the operator chose).
 */
import { setFlagsFromString } from 'node:v8';

const FLAG = '--heap-growing-percent';

/** Sets V8's heap growing factor to 1 + percent/100 unless node was started with one; returns whether it did. */
export function setHeapGrowingPercent(percent: number, execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((arg) => arg === FLAG || arg.startsWith(`${FLAG}=`) || arg.startsWith('--heap_growing_percent'))) return false;
  setFlagsFromString(`${FLAG}=${percent}`);
  return true;
}

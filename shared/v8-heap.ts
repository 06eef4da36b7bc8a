/**
 * The agent's settings of V8's heap: how far the old generation grows between full collections, and a
 * compacting collection for when the agent goes idle.
 *
 * Growth: how far V8 lets the old generation grow past what a full collection left alive before it
 * starts the next one.
 *
 * V8 counts external memory (the backing stores of Buffers) that outlived a young-generation
 * collection towards that limit. kafkajs encoded every produce request into fresh Buffers (before the
 * pool in shared/kafka.ts) that lived across the await for the broker's answer, so they got promoted;
 * with a small live heap (~20 MiB), V8's own growth factor (about 1.5 there) started a full collection
 * every ~10 MiB of them: 486 in a 3M-line agent benchmark, and the V8 helper threads used a third of
 * the agent's CPU marking the same live heap over and over. A fixed factor lets the garbage accumulate
 * up to a multiple of the live heap instead.
 *
 * Which multiple: 300 (4x) was set before the request buffers were pooled. Since then the agent's
 * memory is a sawtooth at that setting: promoted Buffers that are already garbage (~1.7 MiB/s at
 * 170k lines/s) pile up as external memory for ~18 s, from ~27 to ~60 MiB, and the old generation
 * from ~18 to ~42 MiB, until the full collection. Its peak lands wherever a run stops on the saw:
 * 143.6-162.8 MiB in 10 runs of 6M and 9M lines, 8 of them over 150 (125-145 in 3M-line runs,
 * which end on its way up). At 100 (2x): 11-13 full collections per 6M lines instead of 5-7, no CPU
 * difference above the machine's noise (4.38 against 4.35 CPU s per million lines in a pair at
 * similar speed, machine references 537/336 and 599/388 ms), and a peak of 117.2-121.7 MiB in 10 runs.
 *
 * A `--heap-growing-percent` on the node command line wins (the operator chose).
 *
 * Compaction: since kafkajs's request buffers and the message slabs are reused (shared/kafka.ts,
 * agent/message-builder.ts), a 3M-line benchmark run starts two full collections in all, one of them
 * the idle one. The old generation grows from ~18 to ~46 MB of pages meanwhile, and a plain full
 * collection leaves the ~21 MB still alive spread over nearly all of them: V8 compacts only the
 * emptiest pages unless told otherwise. `collectAndCompact` compacts them all.
 */
import { setFlagsFromString } from 'node:v8';

const FLAG = '--heap-growing-percent';

/** Sets V8's heap growing factor to 1 + percent/100 unless node was started with one; returns whether it did. */
export function setHeapGrowingPercent(percent: number, execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((arg) => arg === FLAG || arg.startsWith(`${FLAG}=`) || arg.startsWith('--heap_growing_percent'))) return false;
  setFlagsFromString(`${FLAG}=${percent}`);
  return true;
}

const COMPACT_FLAG = '--compact-on-every-full-gc';

/**
 * The collector `--expose-gc` installs: without arguments, a full collection; with options, V8's
 * `type` / `execution` / `flavor` (a `last-resort` flavor collects as V8 does when memory runs out).
 */
type GarbageCollector = (options?: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/**
 * Two full collections, the second compacting every page of the old generation, for a process gone
 * idle: the heap's pages went from 49 to 27 MB committed after a benchmark run (RSS 107 → 85 MiB).
 * The plain one comes first so that its sweep leaves free space for the compaction to move live
 * objects into: compacting straight away, on pages full of garbage, took fresh pages and raised the
 * process's peak RSS by ~17 MiB. On V8 12 and later a last-resort collection follows, which returns
 * the emptied pages to the system (keepsFreedPages). Needs `--expose-gc` (returns false without it);
 * V8 takes the flag at run time, and it is turned off again unless node was started with it.
 */
export function collectAndCompact(
  gc: GarbageCollector | undefined = (globalThis as { gc?: GarbageCollector }).gc,
  execArgv: readonly string[] = process.execArgv,
  v8Version: string = process.versions.v8,
): boolean {
  if (!gc) return false;
  gc();
  const flags = IDLE_FLAGS.filter((flag) => !execArgv.includes(flag));
  for (const flag of flags) setFlagsFromString(flag);
  try {
    gc();
  } finally {
    for (const flag of flags) setFlagsFromString(`--no-${flag.slice(2)}`);
  }
  if (keepsFreedPages(v8Version)) gc(RELEASE_PAGES);
  return true;
}

/**
 * V8's flags for the idle collection: compact every page, and drop the bytecode and baseline code of
 * every function (`--stress-flush-code`: V8 otherwise waits until a function went unused over
 * `--bytecode-old-age` full collections). The code of start-up (config schema, client set-up) and of
 * the hot path alike: the hot path's is compiled again from source when work resumes, a few
 * milliseconds. After a 4,000-line run, the agent's heap went from ~23.4 to ~19.4 MiB committed.
 */
const IDLE_FLAGS = [COMPACT_FLAG, '--stress-flush-code', '--flush-baseline-code'];

const RELEASE_PAGES = { type: 'major', execution: 'sync', flavor: 'last-resort' } as const;

/**
 * Whether this V8 keeps the pages a collection freed, for reuse, instead of returning them (12 and
 * later: Node 22, the images' runtime). There a full collection empties pages but they stay resident:
 * after a benchmark run the agent idled at 111.8-114.1 MiB on Node 22.23.2 (~80 on Node 20), its V8
 * heap 28 MiB committed while 39-41 MiB of V8's 256 KiB pages were resident. A `last-resort`
 * collection (what V8 does when memory runs out) also gives the kept pages back: idle 92.5-93.9 MiB.
 * Node 20's V8 returns them after any full collection, and its `gc()` with options did not collect
 * at once in a test, so it is left out there.
 */
export function keepsFreedPages(v8Version: string): boolean {
  return Number.parseInt(v8Version, 10) >= 12;
}

/**
 * Gives memory back once the agent has nothing to do. After a burst, V8 keeps the garbage of the last
 * batches (the Kafka client's encoding buffers, counted as external memory) until its next collection,
 * which does not come while nothing allocates, and pooled message buffers stay around. When reading
 * and sending have been quiet for `quietMs`, this drops the pools and runs a full collection that
 * also compacts the heap (when the process runs with `--expose-gc`, as the DaemonSet sets in
 * NODE_OPTIONS; see shared/v8-heap.ts); then nothing more until work resumes and stops again. That
 * takes ~0.1–0.2 s of CPU once per quiet spell. A later step (the page-out of node's binary, see
 * shared/resident-memory.ts) waits for a longer quiet spell, so that a trickle of lines every few
 * seconds does not have those pages read back again and again, and repeats while the spell lasts
 * (code run every few minutes, such as a watch reconnecting, is given back too).
 */
import { collectAndCompact } from '../shared/v8-heap.js';

/** A step taken once per quiet spell, after a longer quiet time than the release. */
export interface LaterStep {
  /** Quiet time before it runs; at least the reclaimer's `quietMs`. */
  quietMs: number;
  run: () => void;
  /** While the quiet spell lasts, runs again this long after the last run (absent or 0: once). */
  repeatMs?: number;
  /** Called when work resumes after `run` ran. */
  resume?: () => void;
}

export interface IdleReclaimerOptions {
  /** A number that changes whenever the agent does work (bytes read, messages acknowledged…). */
  activity: () => number;
  /** Whether work is still pending even though `activity` did not move (bytes buffered for Kafka). */
  busy: () => boolean;
  /** Drops pooled memory. */
  release: () => void;
  /** Quiet time before reclaiming. */
  quietMs: number;
  /** Collects the heap's garbage after `release` (default: a full, compacting collection). */
  collect?: () => void;
  /** Runs once the agent has been quiet longer (the page-out of shared/resident-memory.ts). */
  later?: LaterStep;
  now?: () => number;
}

export class IdleReclaimer {
  private timer: NodeJS.Timeout | undefined;
  private lastActivity = Number.NaN;
  private quietSince = 0;
  private reclaimed = false;
  /** When the later step last ran in this quiet spell (undefined: not yet). */
  private laterAt: number | undefined;
  private readonly now: () => number;

  constructor(private readonly options: IdleReclaimerOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    const shortest = Math.min(this.options.quietMs, this.options.later?.quietMs ?? Number.POSITIVE_INFINITY);
    const checkMs = Math.max(100, Math.floor(shortest / 2));
    this.timer = setInterval(() => this.check(), checkMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Reclaims if the agent has been quiet long enough since its last work, then runs the later step
   * when it has been quiet for that long; returns whether it did either.
   */
  check(): boolean {
    const activity = this.options.activity();
    const now = this.now();
    if (activity !== this.lastActivity || this.options.busy()) {
      this.lastActivity = activity;
      this.quietSince = now;
      this.reclaimed = false;
      if (this.laterAt !== undefined) this.options.later?.resume?.();
      this.laterAt = undefined;
      return false;
    }
    const quietFor = now - this.quietSince;
    if (!this.reclaimed && quietFor >= this.options.quietMs) {
      this.reclaimed = true;
      this.options.release();
      (this.options.collect ?? collectAndCompact)();
      return true;
    }
    const later = this.options.later;
    if (!this.reclaimed || !later) return false;
    const due = this.laterAt === undefined ? quietFor >= later.quietMs : Boolean(later.repeatMs) && now - this.laterAt >= (later.repeatMs ?? 0);
    if (!due) return false;
    this.laterAt = now;
    later.run();
    return true;
  }
}

/**
 * Gives memory back once the agent has nothing to do. After a burst, V8 keeps the garbage of the last
 * batches (the Kafka client's encoding buffers, counted as external memory) until its next collection,
 * which does not come while nothing allocates, and pooled message buffers stay around. When reading
 * and sending have been quiet for `quietMs`, this drops the pools and runs a full collection that
 * also compacts the heap (when the process runs with `--expose-gc`, as the DaemonSet sets in
 * NODE_OPTIONS; see shared/v8-heap.ts); then nothing more until work resumes and stops again. That
 * takes ~0.1–0.2 s of CPU once per quiet spell.
 */
import { collectAndCompact } from '../shared/v8-heap.js';

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
  now?: () => number;
}

export class IdleReclaimer {
  private timer: NodeJS.Timeout | undefined;
  private lastActivity = Number.NaN;
  private quietSince = 0;
  private reclaimed = false;
  private readonly now: () => number;

  constructor(private readonly options: IdleReclaimerOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    const checkMs = Math.max(100, Math.floor(this.options.quietMs / 2));
    this.timer = setInterval(() => this.check(), checkMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reclaims if the agent has been quiet long enough since its last work; returns whether it did. */
  check(): boolean {
    const activity = this.options.activity();
    const now = this.now();
    if (activity !== this.lastActivity || this.options.busy()) {
      this.lastActivity = activity;
      this.quietSince = now;
      this.reclaimed = false;
      return false;
    }
    if (this.reclaimed || now - this.quietSince < this.options.quietMs) return false;
    this.reclaimed = true;
    this.options.release();
    (this.options.collect ?? collectAndCompact)();
    return true;
  }
}

/** Undoing what a demo run created, in reverse order, data kept with `--keep`. */
import { describeError } from '../../shared/errors.js';


/** What a cleanup step returns when it decided to keep its resource after all. */
export const KEPT = Symbol('kept');

interface CleanupStep {
  what: string;
  /** Data the run created: kept with --keep. Processes are stopped whatever the flag. */
  data: boolean;
  run: () => Promise<unknown>;
}

/** What the run created, undone in reverse order; every step runs even when an earlier one fails. */
export class Cleanup {
  private readonly steps: CleanupStep[] = [];

  add(what: string, data: boolean, run: () => Promise<unknown>): void {
    this.steps.push({ what, data, run });
  }

  /** `done` lists the data removed; stopped processes and closed clients are not listed. */
  async run(keepData: boolean): Promise<{ done: string[]; kept: string[]; failed: string[] }> {
    const result = { done: [] as string[], kept: [] as string[], failed: [] as string[] };
    for (const step of this.steps.reverse()) {
      if (step.data && keepData) {
        result.kept.push(step.what);
        continue;
      }
      try {
        if ((await step.run()) === KEPT) result.kept.push(step.what);
        else if (step.data) result.done.push(step.what);
      } catch (error) {
        result.failed.push(`${step.what}: ${describeError(error)}`);
      }
    }
    return result;
  }
}

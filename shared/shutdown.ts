/**
 * Graceful shutdown: on SIGTERM or SIGINT, abort `signal` (so every loop stops taking new work), then
 * run the registered steps one after another in registration order (stop reading → flush → checkpoint
 * → close), all within one deadline. A step that fails is logged and the next one still runs; a
 * step may leave time to the ones after it (`reserveMs`: given up when its share runs out); a
 * deadline overrun aborts the step in progress and the process exits non-zero. A second signal while
 * shutting down exits at once.
 */
import type { Logger } from './logger.js';
import { describeError } from './errors.js';

export type ShutdownStep = (signal: AbortSignal) => Promise<void> | void;

export interface StepOptions {
  /**
   * Time this step leaves to the steps after it: its signal aborts this long before the deadline,
   * and if it has not finished by then it is given up (recorded as failed) and the next steps run.
   * For a step that may wait on something unreachable (flushing to Kafka) ahead of one that must
   * run (writing checkpoints).
   */
  reserveMs?: number;
}

export interface ShutdownResult {
  reason: string;
  /** Steps that completed, in order. */
  completed: string[];
  /** Steps that threw, with the error text. */
  failed: { name: string; error: string }[];
  /** The step running when the deadline passed, if it did. */
  timedOut?: string;
  exitCode: number;
}

export interface ShutdownOptions {
  deadlineMs: number;
  logger: Logger;
  /** Defaults to `process.exit`; injectable for tests. */
  exit?: (code: number) => void;
}

export class ShutdownCoordinator {
  private readonly steps: { name: string; run: ShutdownStep; reserveMs?: number }[] = [];
  private readonly controller = new AbortController();
  private running: Promise<ShutdownResult> | undefined;
  private readonly listeners = new Map<NodeJS.Signals, () => void>();

  constructor(private readonly options: ShutdownOptions) {}

  /** Aborted as soon as shutdown begins: loops watch it to stop taking new work. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get shuttingDown(): boolean {
    return this.running !== undefined;
  }

  /** Adds a step; steps run in the order they were added. */
  register(name: string, run: ShutdownStep, options: StepOptions = {}): this {
    this.steps.push({ name, run, reserveMs: options.reserveMs });
    return this;
  }

  /** Listens for SIGTERM and SIGINT: the first starts shutdown and exits when it ends, a second exits at once. */
  installSignalHandlers(signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): this {
    const exit = this.options.exit ?? ((code: number) => process.exit(code));
    for (const sig of signals) {
      const listener = (): void => {
        if (this.running) {
          this.options.logger.warn({ signal: sig }, 'second signal during shutdown, exiting now');
          exit(130);
          return;
        }
        void this.shutdown(sig).then((result) => exit(result.exitCode));
      };
      this.listeners.set(sig, listener);
      process.on(sig, listener);
    }
    return this;
  }

  /** Runs the shutdown once; later calls return the same result. */
  shutdown(reason: string): Promise<ShutdownResult> {
    this.running ??= this.run(reason);
    return this.running;
  }

  private async run(reason: string): Promise<ShutdownResult> {
    const { logger, deadlineMs } = this.options;
    const started = Date.now();
    logger.info({ reason, deadlineMs }, 'shutting down');
    this.controller.abort(new Error(`shutdown: ${reason}`));
    const result: ShutdownResult = { reason, completed: [], failed: [], exitCode: 0 };
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new Error('shutdown deadline exceeded')), deadlineMs);
    try {
      for (const step of this.steps) {
        if (deadline.signal.aborted) {
          result.timedOut ??= step.name;
          break;
        }
        let signal = deadline.signal;
        let shareTimer: NodeJS.Timeout | undefined;
        if (step.reserveMs !== undefined) {
          const share = new AbortController();
          shareTimer = setTimeout(() => share.abort(new Error('shutdown step exceeded its time share')), Math.max(0, started + deadlineMs - step.reserveMs - Date.now()));
          signal = AbortSignal.any([deadline.signal, share.signal]);
        }
        const outcome = await raceDeadline(Promise.resolve().then(() => step.run(signal)), signal);
        clearTimeout(shareTimer);
        if (outcome.kind === 'timeout' && !isAborted(deadline.signal)) {
          result.failed.push({ name: step.name, error: `not finished ${step.reserveMs} ms before the deadline; given up so that the next steps run` });
          logger.error({ step: step.name, reserveMs: step.reserveMs }, 'shutdown step given up to leave time for the next ones');
        } else if (outcome.kind === 'done') result.completed.push(step.name);
        else if (outcome.kind === 'failed') {
          result.failed.push({ name: step.name, error: describeError(outcome.error) });
          logger.error({ step: step.name, err: outcome.error }, 'shutdown step failed');
        } else {
          result.timedOut = step.name;
          logger.error({ step: step.name, deadlineMs }, 'shutdown deadline exceeded');
          break;
        }
      }
    } finally {
      clearTimeout(timer);
      for (const [sig, listener] of this.listeners) process.off(sig, listener);
    }
    result.exitCode = result.timedOut !== undefined || result.failed.length > 0 ? 1 : 0;
    logger.info({ ...result, elapsedMs: Date.now() - started }, 'shutdown finished');
    return result;
  }
}

/** A function: a check of `signal.aborted` earlier in a loop would otherwise narrow it for good. */
function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

type Outcome = { kind: 'done' } | { kind: 'failed'; error: unknown } | { kind: 'timeout' };

function raceDeadline(work: Promise<void>, deadline: AbortSignal): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    const onAbort = (): void => resolve({ kind: 'timeout' });
    deadline.addEventListener('abort', onAbort, { once: true });
    work.then(
      () => resolve({ kind: 'done' }),
      (error: unknown) => resolve({ kind: 'failed', error }),
    ).finally(() => deadline.removeEventListener('abort', onAbort));
  });
}

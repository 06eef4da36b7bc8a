/**
 * Progress of the stack's long steps (a Go build of MinIO or kube-apiserver takes minutes on a cold
 * machine, a Maven download tens of seconds): while one runs, a line every PROGRESS_INTERVAL_MS says
 * what is being built or downloaded, for how long so far, and the last line it wrote to its log; when
 * it fails, the tail of that log is printed at once, not only after every other server finished.
 *
 *   await runWithProgress('minio: building MinIO <version> (go install)', 'go', ['install', …], log, options);
 *   await withProgress('elasticsearch: unpacking', log, () => unpack());
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { SpawnOptions } from 'node:child_process';
import { runLogged, StackError, tail } from './context.js';

/** How often a long step reports; the first report comes after one interval, so quick steps stay silent. */
export const PROGRESS_INTERVAL_MS = 20_000;
/** Lines of a failed step's log printed at once. */
const FAILURE_TAIL_LINES = 25;
/** The last output line shown in a progress line is cut to this many characters. */
const LAST_LINE_CHARS = 100;
/** Bytes read from the end of a log to find its last line. */
const LAST_LINE_WINDOW_BYTES = 8 * 1024;

/** One line of the stack's progress on stderr: `[stack HH:MM:SS] message`. */
export function stackLog(message: string): void {
  process.stderr.write(`[stack ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export interface ProgressOptions {
  intervalMs?: number;
  /** Where lines go (stackLog by default); a test collects them. */
  write?: (line: string) => void;
  now?: () => number;
}

/** `1h02m`, `4m05s`, `35s`. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1_000));
  const h = Math.floor(seconds / 3_600);
  const m = Math.floor((seconds % 3_600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

/**
 * The last non-empty line written to `file` past byte `fromOffset` (its size when the step began),
 * leaving out the `$ command` line runLogged writes first.
 */
export function lastLineSince(file: string, fromOffset: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(fromOffset, size - LAST_LINE_WINDOW_BYTES);
    if (size <= start) return undefined;
    const buffer = Buffer.alloc(size - start);
    const read = readSync(fd, buffer, 0, buffer.length, start);
    // eslint-disable-next-line no-control-regex -- terminal escapes some tools write even into a file
    const lines = buffer.toString('utf8', 0, read).replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').split(/[\r\n]+/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('$ '));
    const last = lines.at(-1);
    if (last === undefined) return undefined;
    return last.length > LAST_LINE_CHARS ? `${last.slice(0, LAST_LINE_CHARS - 1)}…` : last;
  } finally {
    closeSync(fd);
  }
}

/** Errors whose log tail this module already printed: the stack's final report need not repeat it. */
const reported = new WeakSet<object>();

export function tailAlreadyShown(error: unknown): boolean {
  return typeof error === 'object' && error !== null && reported.has(error);
}

/**
 * Runs `work`, reporting `label` with the time spent every `intervalMs` until it settles (and the last
 * line of `logFile` written since it began, when there is one). When it fails, prints the tail of its
 * log (the error's own log file for a StackError, else `logFile`) and rethrows.
 */
export async function withProgress<T>(label: string, logFile: string | undefined, work: () => Promise<T>, options: ProgressOptions = {}): Promise<T> {
  const write = options.write ?? stackLog;
  const now = options.now ?? Date.now;
  const startedMs = now();
  const fromOffset = logFile === undefined ? 0 : (statSync(logFile, { throwIfNoEntry: false })?.size ?? 0);
  const timer = setInterval(() => {
    const last = logFile === undefined ? undefined : lastLineSince(logFile, fromOffset);
    write(`${label}: ${formatDuration(now() - startedMs)} so far${last === undefined ? '' : ` (last output: ${last})`}`);
  }, options.intervalMs ?? PROGRESS_INTERVAL_MS);
  timer.unref();
  try {
    return await work();
  } catch (error) {
    const log = error instanceof StackError && error.logFile !== undefined ? error.logFile : logFile;
    const reason = error instanceof Error ? error.message : String(error);
    write(`${label}: failed after ${formatDuration(now() - startedMs)}: ${reason}${log === undefined ? '' : `\n---- last lines of ${log}\n${tail(log, FAILURE_TAIL_LINES)}\n----`}`);
    if (log !== undefined && typeof error === 'object' && error !== null) reported.add(error);
    throw error;
  } finally {
    clearInterval(timer);
  }
}

/** runLogged (context.ts) with progress: `label` says what the command builds or downloads. */
export function runWithProgress(label: string, command: string, args: string[], logFile: string, options: SpawnOptions = {}, progress: ProgressOptions = {}): Promise<void> {
  return withProgress(label, logFile, () => runLogged(command, args, logFile, options), progress);
}

/**
 * Shared plumbing of the stack script: where things live, how a server process is started detached
 * with its log in one folder, found again by PID, and stopped — only the processes this script started.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const SCRIPT_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(SCRIPT_DIR, '..', '..');

/**
 * Installs and state live outside the work tree so that every clone reuses them. As root the home is
 * under /var/cache (Elasticsearch refuses to run as root and runs as an unprivileged user, which must
 * be able to read its installation); otherwise under the user's cache folder.
 */
export function stackHome(): string {
  const override = process.env.STACK_HOME;
  if (override) return resolve(override);
  if (process.getuid?.() === 0) return '/var/cache/logship-stack';
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'logship-stack');
}

export interface StackPaths {
  home: string;
  bin: string;
  downloads: string;
  build: string;
  run: string;
  logs: string;
  pids: string;
  pki: string;
  endpointsFile: string;
}

export function stackPaths(home = stackHome()): StackPaths {
  const run = join(home, 'run');
  return {
    home,
    bin: join(home, 'bin'),
    downloads: join(home, 'dl'),
    build: join(home, 'build'),
    run,
    logs: join(run, 'logs'),
    pids: join(run, 'pids'),
    pki: join(run, 'pki'),
    endpointsFile: join(run, 'endpoints.json'),
  };
}

export function ensureDir(path: string, mode?: number): string {
  mkdirSync(path, { recursive: true, mode });
  return path;
}

export class StackError extends Error {
  constructor(
    message: string,
    readonly logFile?: string,
  ) {
    super(message);
    this.name = 'StackError';
  }
}

/** Runs a command to completion, its output appended to `logFile`; rejects with the log's tail on failure. */
/** Runs a command with its output appended to `logFile`; strings in `redact` are masked in the logged command line. */
export async function runLogged(command: string, args: string[], logFile: string, options: SpawnOptions = {}, redact: readonly string[] = []): Promise<void> {
  ensureDir(dirname(logFile));
  const fd = openSync(logFile, 'a');
  const shown = redact.reduce((line, secret) => (secret === '' ? line : line.replaceAll(secret, '[redacted]')), `${command} ${args.join(' ')}`);
  writeFileSync(fd, `\n$ ${shown}\n`);
  try {
    const code = await new Promise<number | null>((resolvePromise, reject) => {
      const child = spawn(command, args, { ...options, stdio: ['ignore', fd, fd] });
      child.once('error', reject);
      child.once('exit', (exitCode) => resolvePromise(exitCode));
    });
    if (code !== 0) throw new StackError(`${command} ${args.slice(0, 3).join(' ')} exited with ${code}`, logFile);
  } finally {
    closeSync(fd);
  }
}

/** Last lines of a log file, for failure reports. */
export function tail(file: string, lines = 40): string {
  if (!existsSync(file)) return `(no log at ${file})`;
  const text = readFileSync(file, 'utf8');
  return text.split('\n').slice(-lines - 1).join('\n');
}

export interface DaemonSpec {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** A string the process's command line must contain, so a recycled PID is never mistaken for ours. */
  marker: string;
}

export function pidFile(paths: StackPaths, name: string): string {
  return join(paths.pids, `${name}.pid`);
}

export function logFile(paths: StackPaths, name: string): string {
  return join(paths.logs, `${name}.log`);
}

/** A server's log holding more than this when the server starts is moved to `<name>.log.1` (one old copy kept). */
const LOG_ROTATE_BYTES = 64 * 2 ** 20;

/**
 * Starts a server detached from this process, output to its log file (appended, rotated at start
 * once above LOG_ROTATE_BYTES: Kafka's log alone grew to 450 MB over a day of test runs), and
 * records its PID.
 */
export function startDaemon(paths: StackPaths, spec: DaemonSpec): number {
  ensureDir(paths.pids);
  ensureDir(paths.logs);
  const log = logFile(paths, spec.name);
  if ((statSync(log, { throwIfNoEntry: false })?.size ?? 0) > LOG_ROTATE_BYTES) renameSync(log, `${log}.1`);
  const fd = openSync(log, 'a');
  writeFileSync(fd, `\n---- ${new Date().toISOString()} starting ${spec.name}: ${spec.command} ${spec.args.join(' ')}\n`);
  const child = spawn(spec.command, spec.args, {
    cwd: spec.cwd,
    env: { ...process.env, ...spec.env },
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  closeSync(fd);
  if (child.pid === undefined) throw new StackError(`could not start ${spec.name}`, log);
  child.unref();
  const file = pidFile(paths, spec.name);
  writeFileSync(`${file}.tmp`, `${child.pid}\n${spec.marker}\n`);
  renameSync(`${file}.tmp`, file);
  return child.pid;
}

/** The PID of a server this script started, if that process is still alive and still the same program. */
export function runningPid(paths: StackPaths, name: string): number | undefined {
  const file = pidFile(paths, name);
  if (!existsSync(file)) return undefined;
  const [pidText, marker] = readFileSync(file, 'utf8').split('\n');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    if (!isAlive(pid)) return undefined;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    return marker && cmdline.includes(marker) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Stops a server this script started: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopDaemon(paths: StackPaths, name: string, graceMs = 30_000): Promise<boolean> {
  const pid = runningPid(paths, name);
  rmSync(pidFile(paths, name), { force: true });
  if (pid === undefined) return false;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await sleep(200);
  }
  process.kill(pid, 'SIGKILL');
  return true;
}

/** Whether a process exists and is not a zombie (state field of /proc/<pid>/stat, after the command name). */
function isAlive(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return status.slice(status.lastIndexOf(')') + 2, status.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Polls `probe` until it returns true, the process dies, or the deadline passes. Throws with the tail
 * of the server's log when it does not come up.
 */
export async function waitUntilReady(
  paths: StackPaths,
  name: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  pidName: string = name,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    if (runningPid(paths, pidName) === undefined) {
      throw new StackError(`${name} exited during start-up${lastError ? ` (last probe error: ${lastError})` : ''}`, logFile(paths, pidName));
    }
    await sleep(500);
  }
  throw new StackError(`${name} did not become ready within ${timeoutMs / 1000}s${lastError ? ` (last probe error: ${lastError})` : ''}`, logFile(paths, pidName));
}

/** Writes a file atomically (temp + rename) with the given mode. */
export function writeFileAtomic(path: string, content: string, mode = 0o644): void {
  ensureDir(dirname(path));
  writeFileSync(`${path}.tmp`, content, { mode });
  renameSync(`${path}.tmp`, path);
}

/** Plain HTTP(S) GET with a timeout, for readiness probes. */
export async function httpGet(url: string, init: RequestInit = {}, timeoutMs = 3_000): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

/** Elapsed seconds since `start`, to one decimal. */
export function secondsSince(start: number): number {
  return Math.round((Date.now() - start) / 100) / 10;
}

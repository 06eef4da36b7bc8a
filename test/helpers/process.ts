/**
 * Runs the project's binaries as child processes in tests: their ops URL (from the start-up log),
 * their output, SIGTERM and kill -9.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../scripts/stack/context.js';

export interface LogshipProcess {
  child: ChildProcess;
  opsUrl: Promise<string>;
  logs: () => string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop: () => Promise<number | null>;
  kill9: () => Promise<void>;
  exited: Promise<number | null>;
}

/** Who the process runs as; by default the test runner's own user. */
export interface ProcessUser {
  uid?: number;
  gid?: number;
}

/** Starts `logship-<binary> --config <file>` as a child process (through tsx, from the source), optionally as another user. */
export function startLogshipProcess(binary: 'agent' | 'aggregator', configFile: string, env: NodeJS.ProcessEnv = {}, user: ProcessUser = {}): LogshipProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, binary, 'main.ts'), '--config', configFile], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(user.uid === undefined ? {} : { uid: user.uid }),
    ...(user.gid === undefined ? {} : { gid: user.gid }),
  });
  let output = '';
  let resolveUrl: (url: string) => void = () => undefined;
  let rejectUrl: (error: Error) => void = () => undefined;
  const opsUrl = new Promise<string>((resolve, reject) => {
    resolveUrl = resolve;
    rejectUrl = reject;
  });
  // Callers that never wait for the URL must not see an unhandled rejection.
  opsUrl.catch(() => undefined);
  const onData = (chunk: Buffer): void => {
    output += chunk.toString();
    const match = /"address":"([\d.]+:\d+)".*ops server listening/.exec(output);
    if (match?.[1]) resolveUrl(`http://${match[1]}`);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = exitOf(child, (error) => (output += `\n${String(error)}\n`));
  // A process that ends before it listens (a bad config, a crash at start) fails the wait instead of hanging it.
  void exited.then((code) => rejectUrl(new Error(`logship-${binary} exited (${code ?? 'signal'}) before its ops server listened:\n${output.slice(-2000)}`)));
  return {
    child,
    opsUrl,
    logs: () => output,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    kill9: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * The child's exit code; `null` when a signal ended it or when it never started. A process that could
 * not be spawned (EACCES, ENOENT) emits 'error' and no 'exit': resolving then, instead of waiting or
 * rejecting, lets a test's clean-up run (stop its Kafka consumers) rather than hang the file.
 */
export function exitOf(child: ChildProcess, onError: (error: Error) => void): Promise<number | null> {
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.on('error', (error) => {
      onError(error);
      if (child.pid === undefined) resolve(null);
    });
  });
}

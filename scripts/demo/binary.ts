/** The logship binaries the demo runs (one agent, two aggregators), from source, and what they tell. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../../shared/errors.js';
import { sumMetric } from '../metrics-text.js';
import { REPO_ROOT } from '../stack/context.js';

/** A logship binary run from source through tsx, its output in a log file of the run folder. */
export class Binary {
  readonly opsUrl: Promise<string>;
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private readonly log: WriteStream;
  private recent: string[] = [];

  constructor(
    readonly name: string,
    binary: 'agent' | 'aggregator',
    configFile: string,
    readonly logFile: string,
  ) {
    this.log = createWriteStream(logFile);
    this.child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, binary, 'main.ts'), '--config', configFile], {
      cwd: REPO_ROOT,
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C in the terminal reaches only the demo, which then stops the
      // binaries with one SIGTERM (a second signal would make them exit without flushing).
      detached: true,
    });
    let resolveUrl: (url: string) => void = () => undefined;
    this.opsUrl = new Promise((resolve) => (resolveUrl = resolve));
    let partial = '';
    const onData = (chunk: Buffer): void => {
      this.log.write(chunk);
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const match = /"address":"([\d.]+:\d+)".*ops server listening/.exec(line);
        if (match?.[1]) resolveUrl(`http://${match[1]}`);
        this.recent.push(line);
      }
      if (this.recent.length > 200) this.recent = this.recent.slice(-100);
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exited = once(this.child, 'exit').then(([code]) => {
      this.log.end();
      return code as number | null;
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Its last log lines at warn level or above (or simply its last lines), for a failure report. */
  /** Its last own warnings and errors (the Kafka client's chatter left out), as `time level message`. */
  problems(count = 8): string[] {
    const entries = this.recent.flatMap((line) => {
      try {
        return [JSON.parse(line) as { time?: string; level?: string; msg?: string; component?: string; err?: { message?: string } }];
      } catch {
        return [{ msg: line }];
      }
    });
    const serious = entries.filter((e) => e.component !== 'kafkajs' && (e.level === 'warn' || e.level === 'error' || e.level === 'fatal'));
    return (serious.length > 0 ? serious : entries.slice(-count)).slice(-count).map((e) => [e.time, e.level, e.msg].filter((v) => v !== undefined).join(' '));
  }

  /**
   * Waits until /readyz answers 200, or until the checks in `required` pass (the others are returned
   * as `failing`); fails when the process exits first or the deadline passes.
   */
  async ready(timeoutMs: number, signal: AbortSignal, required?: readonly string[]): Promise<{ url: string; failing: string[] }> {
    const deadline = Date.now() + timeoutMs;
    let url: string | undefined;
    void this.opsUrl.then((u) => (url = u));
    for (;;) {
      signal.throwIfAborted();
      if (!this.running) throw new Error(`${this.name} exited with ${String(this.child.exitCode ?? this.child.signalCode)} before it was ready:\n  ${this.problems().join('\n  ')}`);
      if (url !== undefined) {
        const checks = await readinessChecks(url);
        const failing = Object.entries(checks).flatMap(([name, ok]) => (ok ? [] : [name]));
        if (Object.keys(checks).length > 0 && (failing.length === 0 || (required !== undefined && required.every((name) => checks[name] === true)))) return { url, failing };
      }
      if (Date.now() > deadline) throw new Error(`${this.name} was not ready after ${timeoutMs} ms:\n  ${this.problems().join('\n  ')}`);
      await sleep(200, undefined, { signal });
    }
  }

  /** SIGTERM, then the exit code; SIGKILL after `graceMs`. */
  async stop(graceMs: number): Promise<number | null> {
    if (this.running) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The checks of a /readyz answer (`{"status":…,"checks":{"name":true|false}}`); none when unreachable. */
async function readinessChecks(opsUrl: string): Promise<Record<string, boolean>> {
  try {
    const body = (await (await fetch(`${opsUrl}/readyz`)).json()) as { checks?: Record<string, boolean> };
    return body.checks ?? {};
  } catch {
    return {};
  }
}


/** What the agent's metrics say about its progress, for a failure report. */
export async function agentDiagnosis(opsUrl: string): Promise<string> {
  let text: string;
  try {
    text = await (await fetch(`${opsUrl}/metrics`, { signal: AbortSignal.timeout(3_000) })).text();
  } catch (error) {
    return `the agent's ops server does not answer (${describeError(error)}): its event loop may be blocked`;
  }
  const names = ['files_tracked', 'lines_read_total', 'records_produced_total', 'kafka_messages_acked_total', 'unshipped_bytes', 'errors_total'];
  return `agent metrics: ${names.map((name) => `${name}=${sumMetric(text, `logship_agent_${name}`)}`).join(' ')}`;
}

/**
 * `logship-agent top` and `logship-aggregator top`: a live view of a running component, read from its
 * ops server's `/metrics` once a second (rates over the last second, totals, gauges), redrawn in
 * place with log-update. `q` or Ctrl-C quits. It writes nothing but the terminal, so it runs inside
 * the images, whose root filesystem is read-only:
 *
 *   kubectl exec -it ds/logship-agent -- node /app/agent.mjs top
 *   kubectl exec -it deploy/logship-aggregator -- node /app/aggregator.mjs top
 *
 * Without a terminal (output piped) it prints one frame per interval, separated by a blank line;
 * `--once` prints one frame (after two scrapes, so that it has rates) and exits.
 */
import { parseArgs } from 'node:util';
import { createLogUpdate } from 'log-update';
import { Scrape } from './prom-text.js';
import { MetricWindow, render, WIDTH } from './views.js';

export const EXIT_USAGE = 2;
const DEFAULT_INTERVAL_MS = 1_000;
const MIN_INTERVAL_MS = 200;
const SCRAPE_TIMEOUT_MS = 3_000;

export interface TopIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WritableStream;
}

function usage(binary: string, defaultPort: number): string {
  return [
    `usage: ${binary} top [--url http://127.0.0.1:${defaultPort}] [--interval-ms ${DEFAULT_INTERVAL_MS}] [--once]`,
    '',
    '  --url           the ops server of the component to watch (its /metrics is read)',
    '  --interval-ms   refresh interval',
    '  --once          print one frame and exit (also what a pipe gets, once per interval, without it)',
    '  keys            q or Ctrl-C quits',
    '',
  ].join('\n');
}

async function scrape(url: string): Promise<Scrape> {
  const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return new Scrape(await response.text(), Date.now());
}

function reason(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : undefined;
  const code = (cause as { code?: string } | undefined)?.code;
  return code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}

export async function topCommand(binary: string, defaultPort: number, argv: string[], io: TopIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let values: { url?: string; 'interval-ms'?: string; once?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: { url: { type: 'string' }, 'interval-ms': { type: 'string' }, once: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (error) {
    io.stderr.write(`${binary} top: ${(error as Error).message}\n${usage(binary, defaultPort)}`);
    return EXIT_USAGE;
  }
  if (values.help === true) {
    io.stdout.write(usage(binary, defaultPort));
    return 0;
  }
  const problems: string[] = [];
  const url = (values.url ?? `http://127.0.0.1:${defaultPort}`).replace(/\/+$/, '').replace(/\/metrics$/, '');
  if (!/^https?:\/\/[^/]+/.test(url)) problems.push(`--url must be an http(s) URL, got ${JSON.stringify(values.url)}`);
  const intervalMs = values['interval-ms'] === undefined ? DEFAULT_INTERVAL_MS : Number(values['interval-ms']);
  if (!Number.isInteger(intervalMs) || intervalMs < MIN_INTERVAL_MS) problems.push(`--interval-ms must be an integer >= ${MIN_INTERVAL_MS}, got ${values['interval-ms'] ?? ''}`);
  if (problems.length > 0) {
    io.stderr.write(`${binary} top: ${problems.join('; ')}\n${usage(binary, defaultPort)}`);
    return EXIT_USAGE;
  }

  const live = io.stdout.isTTY && values.once !== true;
  const width = (): number => Math.min(io.stdout.columns || WIDTH, WIDTH);
  const fit = (lines: string[]): string => lines.map((l) => (l.length > width() ? `${l.slice(0, width() - 1)}…` : l)).join('\n');
  const draw = live ? createLogUpdate(io.stdout, { showCursor: false }) : undefined;

  const state = { stopped: false, wake: (): void => undefined };
  const stop = (): void => {
    state.stopped = true;
    state.wake();
  };
  const onKey = (data: Buffer): void => {
    const key = data.toString('utf8');
    if (key === 'q' || key === 'Q' || key.includes('\u0003')) stop();
  };
  const rawInput = live && io.stdin.isTTY;
  if (rawInput) {
    io.stdin.setRawMode(true);
    io.stdin.on('data', onKey);
    io.stdin.resume();
  }
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  let prev: Scrape | undefined;
  let frames = 0;
  try {
    while (!state.stopped) {
      const startedMs = Date.now();
      try {
        const cur = await scrape(url);
        const lines = render(new MetricWindow(cur, prev), url, cur.atMs);
        prev = cur;
        if (draw !== undefined) draw(fit(lines));
        else if (values.once !== true || frames > 0) io.stdout.write(`${fit(lines)}\n\n`);
        frames++;
        if (values.once === true && frames >= 2) break;
      } catch (error) {
        const problem = `cannot read ${url}/metrics: ${reason(error)}${values.once === true ? '' : `; trying again every ${intervalMs} ms`}`;
        if (draw !== undefined) draw(fit([`${binary} top · q: quit`, problem]));
        else io.stderr.write(`${problem}\n`);
        if (values.once === true) return 1;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, intervalMs - (Date.now() - startedMs)));
        state.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    if (rawInput) {
      io.stdin.off('data', onKey);
      io.stdin.setRawMode(false);
      io.stdin.pause();
    }
    draw?.done();
  }
  return 0;
}

/** Small helpers of the aggregator benchmark: logging, rounding, ports, commands. */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { REPO_ROOT } from '../scripts/stack/context.js';

export function round(n: number): number {
  return Math.round(n * 100) / 100;
}

export function roundValues(values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([key, n]) => [key, round(n)]));
}

export function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

export function run(command: string, args: string[]): void {
  execFileSync(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}

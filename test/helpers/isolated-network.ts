/**
 * Runs the agent in a network namespace of its own (loopback only), so that a test can make Kafka
 * unreachable for it alone, without stopping the broker other tests use.
 *
 * Kafka advertises 127.0.0.1:<port>, so the agent must reach it at that very address: inside the
 * namespace a bridge listens on 127.0.0.1:<port> and forwards each connection over a Unix socket
 * (files cross namespaces) to the test, which forwards it to the real broker. `cut()` closes that path
 * and resets every connection: to the agent, the broker is gone. The agent's ops server is reached
 * the other way round (a TCP port of the test → Unix socket → the namespace's 127.0.0.1).
 *
 * Needs `unshare` and the right to create a network namespace (root). Run as a script (by
 * `startIsolatedAgent`), this file is the namespace's side: loopback up, bridges, then the agent.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../../scripts/stack/context.js';
import { exitOf, type LogshipProcess } from './process.js';

/** Forwards every connection accepted by `server` to `target` (a Unix socket path or a TCP port on 127.0.0.1). */
function forward(server: Server, target: string | number, sockets: Set<Socket>): void {
  server.on('connection', (inbound) => {
    const outbound = typeof target === 'string' ? connect(target) : connect(target, '127.0.0.1');
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
}

function listen(server: Server, address: string | number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (typeof address === 'string') server.listen(address, done);
    else server.listen(address, '127.0.0.1', done);
  });
}

export interface IsolatedAgent extends LogshipProcess {
  /** Makes Kafka unreachable for the agent: no new connection, existing ones reset. */
  cut(): void;
  /** Makes Kafka reachable again. */
  restore(): Promise<void>;
  /** Closes the test's side of the bridges. */
  close(): Promise<void>;
}

/**
 * Starts `logship-agent --config <configFile>` in a network namespace of its own. `opsPort` is the
 * agent's ops port inside the namespace (its config must use it); `opsUrl` is where the test reaches it.
 */
export async function startIsolatedAgent(configFile: string, kafkaPort: number, opsPort: number): Promise<IsolatedAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'logship-netns-'));
  const kafkaSocket = join(dir, 'kafka.sock');
  const opsSocket = join(dir, 'ops.sock');
  const kafkaSockets = new Set<Socket>();
  const opsSockets = new Set<Socket>();
  let kafkaBridge = createServer();
  forward(kafkaBridge, kafkaPort, kafkaSockets);
  await listen(kafkaBridge, kafkaSocket);
  const opsBridge = createServer();
  forward(opsBridge, opsSocket, opsSockets);
  await listen(opsBridge, 0);
  const opsAddress = opsBridge.address();
  const opsUrl = `http://127.0.0.1:${typeof opsAddress === 'object' && opsAddress ? opsAddress.port : 0}`;

  const script = fileURLToPath(import.meta.url);
  const child = spawn('unshare', ['-n', '--', process.execPath, '--import', 'tsx', script, String(kafkaPort), kafkaSocket, String(opsPort), opsSocket, configFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let resolveUrl: (url: string) => void = () => undefined;
  const ready = new Promise<string>((resolve) => (resolveUrl = resolve));
  const onData = (chunk: Buffer): void => {
    output += chunk.toString();
    if (/ops server listening/.test(output)) resolveUrl(opsUrl);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = exitOf(child, (error) => (output += `\n${String(error)}\n`));
  let cut = false;
  return {
    child,
    opsUrl: ready,
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
    cut: () => {
      if (cut) return;
      cut = true;
      kafkaBridge.close();
      // The broker side is TCP (reset), the namespace's side a Unix socket (closed).
      for (const socket of kafkaSockets) {
        if (socket.remotePort === undefined) socket.destroy();
        else socket.resetAndDestroy();
      }
    },
    restore: async () => {
      if (!cut) return;
      kafkaBridge = createServer();
      forward(kafkaBridge, kafkaPort, kafkaSockets);
      await listen(kafkaBridge, kafkaSocket);
      cut = false;
    },
    close: async () => {
      for (const socket of [...kafkaSockets, ...opsSockets]) socket.destroy();
      await Promise.all([kafkaBridge, opsBridge].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    },
  };
}

/** The namespace's side: loopback up, the two bridges, then the agent in this same process. */
async function runInside(argv: string[]): Promise<void> {
  const [kafkaPort, kafkaSocket, opsPort, opsSocket, configFile] = argv;
  if (configFile === undefined) throw new Error('usage: isolated-network.ts <kafkaPort> <kafkaSocket> <opsPort> <opsSocket> <config>');
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  const sockets = new Set<Socket>();
  const toKafka = createServer();
  forward(toKafka, kafkaSocket as string, sockets);
  await listen(toKafka, Number(kafkaPort));
  const toOps = createServer();
  forward(toOps, Number(opsPort), sockets);
  await listen(toOps, opsSocket as string);
  // The bridges must not keep the process up once the agent is done.
  toKafka.unref();
  toOps.unref();
  process.argv = [process.argv[0] as string, join(REPO_ROOT, 'agent', 'main.ts'), '--config', configFile];
  await import(pathToFileURL(join(REPO_ROOT, 'agent', 'main.ts')).href);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  runInside(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`isolated agent failed: ${String(error)}\n`);
    process.exit(1);
  });
}

/**
 * The one HTTP server each binary runs for operations: Prometheus `/metrics`, liveness `/healthz` and
 * readiness `/readyz`. Readiness is a set of named checks; the body says which ones are failing.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Logger } from './logger.js';

export type Check = () => boolean | Promise<boolean>;

export interface OpsServerOptions {
  host: string;
  port: number;
  registry: Registry;
  logger: Logger;
  /** All must pass for `/readyz` to answer 200. */
  readiness?: Record<string, Check>;
  /** Extra facts `/readyz` reports in its body (e.g. stalled topics); they do not decide readiness. */
  readinessDetails?: () => Record<string, unknown>;
  /** All must pass for `/healthz` to answer 200; an empty set means "the process answers". */
  liveness?: Record<string, Check>;
}

export interface OpsServer {
  readonly url: string;
  close(): Promise<void>;
}

/** A registry with the standard process and Node.js metrics (memory, CPU, event loop lag) already in it. */
export function createMetricsRegistry(labels: Record<string, string> = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  collectDefaultMetrics({ register: registry });
  return registry;
}

export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const server = createServer((req, res) => {
    handle(req, res, options).catch((error: unknown) => {
      options.logger.error({ err: error, path: req.url }, 'ops request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error\n');
    });
  });
  // Probes and scrapes are short; a slow client must not pin a socket forever.
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  options.logger.info({ address: `${host}:${address.port}` }, 'ops server listening');
  return {
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, options: OpsServerOptions): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
    res.end('method not allowed\n');
    return;
  }
  switch (path) {
    case '/metrics': {
      const body = await options.registry.metrics();
      res.writeHead(200, { 'content-type': options.registry.contentType });
      res.end(body);
      return;
    }
    case '/healthz':
      await respondChecks(res, options.liveness ?? {});
      return;
    case '/readyz':
      await respondChecks(res, options.readiness ?? {}, options.readinessDetails?.());
      return;
    default:
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
  }
}

async function respondChecks(res: ServerResponse, checks: Record<string, Check>, details?: Record<string, unknown>): Promise<void> {
  const results: Record<string, boolean> = {};
  for (const [name, check] of Object.entries(checks)) {
    try {
      results[name] = await check();
    } catch {
      results[name] = false;
    }
  }
  const ok = Object.values(results).every(Boolean);
  res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify({ status: ok ? 'ok' : 'unavailable', checks: results, ...(details ? { details } : {}) })}\n`);
}

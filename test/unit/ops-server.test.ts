import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Counter } from 'prom-client';
import { createLogger } from '../../shared/logger.js';
import { createMetricsRegistry, startOpsServer, type OpsServer } from '../../shared/ops-server.js';

const silent = createLogger({ name: 'test', level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

describe('ops server (loopback HTTP)', () => {
  const registry = createMetricsRegistry({ component: 'test' });
  const lines = new Counter({ name: 'logship_test_lines_total', help: 'test lines', registers: [registry], labelNames: ['reason'] });
  let ready = false;
  let server: OpsServer;

  before(async () => {
    server = await startOpsServer({ host: '127.0.0.1', port: 0, registry, logger: silent, readiness: { producer: () => ready, scan: async () => true } });
  });
  after(() => server.close());

  it('serves Prometheus metrics: ours and the process defaults, with default labels', async () => {
    lines.inc({ reason: 'ok' }, 3);
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const body = await res.text();
    assert.match(body, /^logship_test_lines_total\{reason="ok",component="test"\} 3$/m);
    assert.match(body, /^process_resident_memory_bytes\{component="test"\} \d+/m);
  });

  it('answers /readyz 503 naming the failing check until every check passes', async () => {
    const notReady = await fetch(`${server.url}/readyz`);
    assert.equal(notReady.status, 503);
    assert.deepEqual(await notReady.json(), { status: 'unavailable', checks: { producer: false, scan: true } });
    ready = true;
    const nowReady = await fetch(`${server.url}/readyz`);
    assert.equal(nowReady.status, 200);
    assert.deepEqual(await nowReady.json(), { status: 'ok', checks: { producer: true, scan: true } });
  });

  it('reports readiness details in the /readyz body without letting them decide readiness', async () => {
    const detailed = await startOpsServer({ host: '127.0.0.1', port: 0, registry, logger: silent, readiness: { scan: () => true }, readinessDetails: () => ({ stalledTopics: [{ topic: 'logs.x', reason: 'unknown_topic' }] }) });
    try {
      const res = await fetch(`${detailed.url}/readyz`);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: 'ok', checks: { scan: true }, details: { stalledTopics: [{ topic: 'logs.x', reason: 'unknown_topic' }] } });
    } finally {
      await detailed.close();
    }
  });

  it('answers /healthz, 404 elsewhere, 405 for writes', async () => {
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${server.url}/nope`)).status, 404);
    assert.equal((await fetch(`${server.url}/metrics`, { method: 'POST' })).status, 405);
  });
});

/** The baseline: a plain `_bulk` loop over the same documents, in a child process pinned to the aggregator's CPU. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from '@elastic/elasticsearch';
import { indexTemplateBody, DEFAULT_TEMPLATE_PRIORITY } from '../aggregator/elasticsearch-template.js';
import { createElasticsearchClient } from '../shared/elasticsearch.js';
import { Field, KubernetesField, type LogRecord } from '../shared/record.js';
import { REPO_ROOT } from '../scripts/stack/context.js';
import { elasticsearchConfig } from '../test/helpers/stack.js';
import { countDocuments, deleteIndices } from './aggregator-readback.js';
import { benchRecord, messageCount, messageRecords } from './aggregator-records.js';
import { CPU, ES_REFRESH_INTERVAL_MS, ES_REQUEST_BYTES, PER_MESSAGE, PLAIN_BULK_CONCURRENCY, PLAIN_BULK_TIMEOUT_MS, RUN_TIMEOUT_MS } from './aggregator-settings.js';
import { log } from './aggregator-util.js';

// ---- the plain bulk loop (child process) ----------------------------------------------------------

export interface PlainBulkSpec {
  indexPrefix: string;
  /** Records of the backlog the Elasticsearch sink drained: the loop sends the same ones. */
  total: number;
  requestBytes: number;
  concurrency: number;
}

/** Child mode: builds the bodies, then times `_bulk` requests, `concurrency` in flight. Prints one JSON line. */
export async function plainBulk(specFile: string): Promise<void> {
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as PlainBulkSpec;
  const bodies: Buffer[] = [];
  let chunks: Buffer[] = [];
  let bytes = 0;
  let records = 0;
  const flush = (): void => {
    if (chunks.length > 0) bodies.push(Buffer.concat(chunks, bytes));
    chunks = [];
    bytes = 0;
  };
  for (let m = 0; m < messageCount(spec.total); m++) {
    for (let n = m * PER_MESSAGE; n < m * PER_MESSAGE + messageRecords(m, spec.total); n++) {
      const line = Buffer.from(`${benchRecord(n, spec.total)}\n`);
      const parsed = JSON.parse(line.toString()) as LogRecord;
      const day = parsed[Field.TIMESTAMP].slice(0, 10).replaceAll('-', '.');
      const action = Buffer.from(`{"index":{"_index":"${spec.indexPrefix}-${parsed[Field.KUBERNETES][KubernetesField.NAMESPACE]}-${day}","_id":"${parsed[Field.EVENT_ID]}"}}\n`);
      if (bytes + action.length + line.length > spec.requestBytes) flush();
      chunks.push(action, line);
      bytes += action.length + line.length;
      records++;
    }
  }
  flush();
  // A freshly started node on a loaded machine can take longer than the default 30 s for 5 MiB: this loop has no retries.
  const client = createElasticsearchClient({ ...elasticsearchConfig(), requestTimeoutMs: PLAIN_BULK_TIMEOUT_MS });
  let next = 0;
  let failed = 0;
  const startedAt = performance.now();
  const cpuBefore = process.cpuUsage();
  const worker = async (): Promise<void> => {
    for (let body = bodies[next++]; body !== undefined; body = bodies[next++]) {
      const response = await client.transport.request<{ errors?: boolean; items?: Record<string, { status?: number }>[] }>({
        method: 'POST',
        path: '/_bulk',
        querystring: { filter_path: 'errors,items.*.status' },
        bulkBody: body,
      });
      if (response.errors === true) failed++;
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, worker));
  const seconds = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  await client.close();
  process.stdout.write(`${JSON.stringify({ records, requests: bodies.length, failedRequests: failed, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
}

export interface PlainBulkResult {
  records: number;
  requests: number;
  failedRequests: number;
  seconds: number;
  cpuSeconds: number;
}

export async function runPlainBulk(work: string, spec: PlainBulkSpec): Promise<PlainBulkResult> {
  const specFile = join(work, 'plain-bulk.json');
  writeFileSync(specFile, JSON.stringify(spec));
  const child = spawn('taskset', ['-c', CPU, process.execPath, '--import', 'tsx', join(REPO_ROOT, 'bench', 'aggregator.ts'), '--plain-bulk', specFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  if (code !== 0) throw new Error(`plain bulk loop exited with ${String(code)}`);
  const last = output.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as PlainBulkResult;
}

/** One plain bulk loop into fresh indices (`<prefix>-<namespace>-<day>`) with the sink's template; the indices are deleted after. */
export async function plainBulkRun(es: Client, work: string, prefix: string, total: number): Promise<PlainBulkResult> {
  await es.indices.putIndexTemplate({
    name: prefix,
    ...indexTemplateBody({
      indexPatterns: [`${prefix}-*`],
      priority: DEFAULT_TEMPLATE_PRIORITY,
      numberOfShards: 1,
      numberOfReplicas: 0,
      refreshIntervalMs: ES_REFRESH_INTERVAL_MS,
      messageFieldType: 'text',
    }),
  });
  try {
    const r = await runPlainBulk(work, { indexPrefix: prefix, total, requestBytes: ES_REQUEST_BYTES, concurrency: PLAIN_BULK_CONCURRENCY });
    const documents = await countDocuments(es, `${prefix}-*`);
    log(`plain bulk: ${r.records} records in ${r.seconds.toFixed(2)} s (${r.requests} requests, ${PLAIN_BULK_CONCURRENCY} in flight); ${documents} documents`);
    if (r.failedRequests > 0 || documents !== r.records) log(`plain bulk: WARNING: ${r.failedRequests} requests with item errors, ${documents} documents for ${r.records} records`);
    return r;
  } finally {
    await deleteIndices(es, prefix);
  }
}

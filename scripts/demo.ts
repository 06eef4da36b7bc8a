/**
 * `npm run demo [-- --keep]`: logship's main job end to end on the local stack.
 *
 * 1. Brings the stack up (`stack up`: installs on a fresh machine, idempotent).
 * 2. Creates two labelled namespaces and four labelled pods bound to the demo's node in the stack's
 *    kube-apiserver.
 * 3. Starts one agent and two aggregator instances (one consumer group) from source, with generated
 *    config files: the agent enriches from the API server and produces to `demo.{cluster}.{namespace}`;
 *    the aggregators subscribe by regex and write to S3 (gzip NDJSON, Hive layout) and Elasticsearch.
 * 4. While they run, writes synthetic CRI logs the way a node does into a temporary
 *    `/var/log/pods`-style folder: a few thousand lines over five containers, long lines split into
 *    `P` chunks (some with the other stream's line between the chunks), stderr, and one kubelet
 *    rename rotation with the runtime still writing to the renamed file.
 * 5. Shows progress, waits (5 min deadline) until every line is in Kafka, S3 and Elasticsearch, then
 *    prints an Elasticsearch query and a DuckDB SQL query over the S3 objects, and a summary.
 * 6. Stops the binaries (SIGTERM), deletes everything the run created (unless `--keep`) and leaves
 *    the stack running. The last line of output is one JSON object; the exit status is 0 only when
 *    Kafka records = S3 rows = Elasticsearch documents = lines written, every message arrived as
 *    written (once), nothing was dead-lettered and every binary exited 0 on SIGTERM.
 *
 * The input is clean on purpose, so the dead-letter count must be 0; poison input is the tests' job.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Client as ElasticsearchClient } from '@elastic/elasticsearch';
import type { Admin, Consumer } from 'kafkajs';
import { stringify } from 'yaml';
import { PARTITION_COLUMNS } from '../aggregator/s3-layout.js';
import { createElasticsearchClient } from '../shared/elasticsearch.js';
import { elasticsearchConnectionSchema } from '../shared/elasticsearch-connection.js';
import { describeError } from '../shared/errors.js';
import { createKafka, kafkaConnectionSchema } from '../shared/kafka.js';
import { createKubeClients, type KubeClients } from '../shared/kube.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { Field, KubernetesField, LogField, RecordFlag, type LogRecord } from '../shared/record.js';
import { createS3Client } from '../shared/s3.js';
import { s3ConnectionSchema } from '../shared/s3-connection.js';
import { fetchMetricSum, sumMetric } from './metrics-text.js';
import { appendChunks, containerLogDir, criChunks, criTime, rotateLog, type CriStream } from './pod-log-writer.js';
import { REPO_ROOT } from './stack/context.js';
import { readEndpoints, type StackEndpoints } from './stack/endpoints.js';
import { deleteNamespaceNow } from './stack/namespaces.js';

// ---- what the demo writes ---------------------------------------------------------------------------

/** How long after the first line was written everything must have landed. */
const LANDING_TIMEOUT_MS = 5 * 60_000;
/** Progress is probed this often; a plain (non-TTY) progress line is printed every PRINT_INTERVAL_MS. */
const PROBE_INTERVAL_MS = 1_000;
const PRINT_INTERVAL_MS = 2_000;
/** The logs are written in this many rounds, ROUND_INTERVAL_MS apart, while the agent runs. */
const ROUNDS = 8;
const ROUND_INTERVAL_MS = 250;
/** The rotating container's file is renamed during this round, after part of the round is written. */
const ROTATE_ROUND = 4;
/** Lines' own timestamps spread over the last this-many minutes, so S3 gets several hour partitions. */
const TIME_SPAN_MINUTES = 150;
/** The example Elasticsearch query: stderr of this app. */
const QUERY_APP = 'payments-api';
const SECOND_MS = 1_000;

type Random = () => number;

interface LineContext {
  /** Unique in the run: every message carries it, so what landed can be matched to what was written. */
  id: string;
  time: Date;
  rnd: Random;
}

interface ContainerPlan {
  name: string;
  image: string;
  lines: number;
  stderrShare: number;
  /** Share of stdout lines longer than the runtime's 16 KiB chunk. */
  longShare: number;
  stdout: (c: LineContext) => string;
  stderr: (c: LineContext) => string;
  long?: (c: LineContext) => string;
  /** This container's 0.log is rotated once while the agent runs. */
  rotates?: boolean;
}

interface PodPlan {
  namespace: 'shop' | 'payments';
  name: string;
  labels: Record<string, string>;
  containers: ContainerPlan[];
}

const pick = <T>(rnd: Random, items: readonly T[]): T => items[Math.floor(rnd() * items.length)] as T;
const int = (rnd: Random, min: number, max: number): number => min + Math.floor(rnd() * (max - min + 1));

function longJson(c: LineContext, targetBytes: number, item: (i: number) => Record<string, unknown>): string {
  const items: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < targetBytes; i++) {
    const text = JSON.stringify(item(i));
    items.push(text);
    bytes += text.length + 1;
  }
  return `[${items.join(',')}] req_id=${c.id}`;
}

const PATHS = ['/', '/products', '/products/1432', '/products/877', '/cart', '/checkout', '/static/app.js', '/static/app.css', '/healthz'] as const;

const NGINX: ContainerPlan = {
  name: 'nginx',
  image: 'nginx:1.27',
  lines: 1_200,
  stderrShare: 0.06,
  longShare: 0,
  rotates: true,
  stdout: (c) => {
    const path = pick(c.rnd, PATHS);
    const status = c.rnd() < 0.04 ? pick(c.rnd, [404, 499, 502]) : 200;
    return `10.0.${int(c.rnd, 0, 9)}.${int(c.rnd, 2, 250)} - - "GET ${path} HTTP/1.1" ${status} ${int(c.rnd, 120, 48_000)} "-" "Mozilla/5.0" rt=${(c.rnd() / 5).toFixed(3)} req_id=${c.id}`;
  },
  stderr: (c) => `[warn] 29#29: *${int(c.rnd, 1, 99_999)} upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/1/00/${int(c.rnd, 1_000, 9_999)} req_id=${c.id}`,
};

const CART: ContainerPlan = {
  name: 'cart',
  image: 'registry.example/shop/cart:2.4.1',
  lines: 700,
  stderrShare: 0.1,
  longShare: 0,
  stdout: (c) => JSON.stringify({ level: 'info', msg: pick(c.rnd, ['cart updated', 'cart read', 'item added', 'item removed']), cart_id: `c-${int(c.rnd, 100, 999)}`, items: int(c.rnd, 0, 12), req_id: c.id }),
  stderr: (c) => JSON.stringify({ level: 'error', msg: 'redis: i/o timeout', attempt: int(c.rnd, 1, 3), req_id: c.id }),
};

const ENVOY: ContainerPlan = {
  name: 'envoy',
  image: 'envoyproxy/envoy:v1.31',
  lines: 300,
  stderrShare: 0.05,
  longShare: 0,
  stdout: (c) => `[${c.time.toISOString()}] "POST /cart.v1.Cart/Update HTTP/2" 200 - via_upstream - "-" ${int(c.rnd, 40, 900)} ${int(c.rnd, 20, 400)} ${int(c.rnd, 1, 40)} "cart:8080" req_id=${c.id}`,
  stderr: (c) => `[warning][config] gRPC config stream to xds-grpc closed: 13, req_id=${c.id}`,
};

const API: ContainerPlan = {
  name: 'api',
  image: 'registry.example/payments/api:7.0.2',
  lines: 1_100,
  stderrShare: 0.08,
  longShare: 0.02,
  stdout: (c) => `INFO  PaymentController - POST /v1/payments ${pick(c.rnd, [201, 201, 201, 402])} amount=${(c.rnd() * 200).toFixed(2)} currency=${pick(c.rnd, ['EUR', 'USD', 'JPY'])} req_id=${c.id}`,
  stderr: (c) => `ERROR PaymentService - card declined by issuer (code ${pick(c.rnd, ['05', '51', '54'])}) req_id=${c.id}`,
  long: (c) => `DEBUG PaymentController - request body: ${longJson(c, int(c.rnd, 17_000, 45_000), (i) => ({ sku: `SKU-${String(i).padStart(5, '0')}`, qty: (i % 3) + 1, price: ((i * 37) % 200).toFixed(2) }))}`,
};

const WORKER: ContainerPlan = {
  name: 'worker',
  image: 'registry.example/payments/worker:7.0.2',
  lines: 700,
  stderrShare: 0.12,
  longShare: 0.03,
  stdout: (c) => `INFO  SettlementJob - settled payment pay_${int(c.rnd, 100_000, 999_999)} in ${int(c.rnd, 3, 900)} ms req_id=${c.id}`,
  stderr: (c) => `WARN  SettlementJob - retrying payment pay_${int(c.rnd, 100_000, 999_999)}: acquirer returned 503 req_id=${c.id}`,
  long: (c) => `INFO  SettlementJob - batch report: ${longJson(c, int(c.rnd, 20_000, 36_000), (i) => ({ payment: `pay_${String(100_000 + i)}`, status: i % 11 === 0 ? 'retry' : 'settled' }))}`,
};

const PODS: PodPlan[] = [
  { namespace: 'shop', name: 'web', labels: { app: 'web', tier: 'frontend', version: 'v3' }, containers: [NGINX] },
  { namespace: 'shop', name: 'cart', labels: { app: 'cart', tier: 'backend' }, containers: [CART, ENVOY] },
  { namespace: 'payments', name: 'api', labels: { app: QUERY_APP, tier: 'backend' }, containers: [API] },
  { namespace: 'payments', name: 'worker', labels: { app: 'payments-worker', tier: 'batch' }, containers: [WORKER] },
];

const NAMESPACE_LABELS: Record<PodPlan['namespace'], Record<string, string>> = {
  shop: { team: 'storefront', env: 'demo' },
  payments: { team: 'payments', env: 'demo', 'pci-scope': 'true' },
};

/** A small seeded generator: the same run id yields the same log content. */
function mulberry32(seed: number): Random {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

// ---- the run's names --------------------------------------------------------------------------------

interface RunNames {
  id: string;
  cluster: string;
  nodeName: string;
  namespaces: Record<PodPlan['namespace'], string>;
  topics: string[];
  topicPattern: string;
  deadLetterTopic: string;
  groupId: string;
  counterGroupId: string;
  s3Prefix: string;
  indexPrefix: string;
  dir: string;
}

function runNames(): RunNames {
  const tag = `${Date.now().toString(36)}-${randomBytes(2).toString('hex')}`;
  const id = `demo-${tag}`;
  const namespaces = { shop: `shop-${tag}`, payments: `payments-${tag}` };
  // The agent's topic template is `demo.{cluster}.{namespace}`; the cluster is the run id.
  const topicPrefix = `demo.${id}.`;
  return {
    id,
    cluster: id,
    nodeName: `node-${tag}`,
    namespaces,
    topics: Object.values(namespaces).map((ns) => `${topicPrefix}${ns}`),
    topicPattern: `^${topicPrefix.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')}`,
    // Outside the topic pattern, or the aggregators would consume their own dead letters.
    deadLetterTopic: `${id}.deadletter`,
    groupId: `${id}-aggregators`,
    counterGroupId: `${id}-counter`,
    s3Prefix: id,
    indexPrefix: id,
    dir: mkdtempSync(join(tmpdir(), `logship-${id}-`)),
  };
}

// ---- output -----------------------------------------------------------------------------------------

class Output {
  private readonly tty = process.stdout.isTTY;
  private progressShown = false;
  private lastPlainMs = 0;

  line(text = ''): void {
    this.clearProgress();
    process.stdout.write(`${text}\n`);
  }

  /** One updating line on a terminal; a plain line every PRINT_INTERVAL_MS otherwise (or when `force`). */
  progress(text: string, force = false): void {
    if (this.tty) {
      process.stdout.write(`\r\x1b[2K${text}`);
      this.progressShown = true;
      if (force) this.clearProgress(true);
    } else if (force || Date.now() - this.lastPlainMs >= PRINT_INTERVAL_MS) {
      this.lastPlainMs = Date.now();
      process.stdout.write(`${text}\n`);
    }
  }

  private clearProgress(keep = false): void {
    if (!this.progressShown) return;
    process.stdout.write(keep ? '\n' : '\r\x1b[2K');
    this.progressShown = false;
  }
}

const out = new Output();

function elapsed(startMs: number): string {
  return `${((Date.now() - startMs) / SECOND_MS).toFixed(1)}s`;
}

// ---- child processes --------------------------------------------------------------------------------

/** A logship binary run from source through tsx, its output in a log file of the run folder. */
class Binary {
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

/** Polls `probe` until it returns true, or throws after `timeoutMs` with the last error seen. */
async function poll(description: string, probe: () => Promise<boolean>, timeoutMs: number, intervalMs: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    signal.throwIfAborted();
    try {
      if (await probe()) return;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}${lastError === undefined ? '' : `: ${describeError(lastError)}`}`);
    await sleep(intervalMs, undefined, { signal });
  }
}

/** What the agent's metrics say about its progress, for a failure report. */
async function agentDiagnosis(opsUrl: string): Promise<string> {
  let text: string;
  try {
    text = await (await fetch(`${opsUrl}/metrics`, { signal: AbortSignal.timeout(3_000) })).text();
  } catch (error) {
    return `the agent's ops server does not answer (${describeError(error)}): its event loop may be blocked`;
  }
  const names = ['files_tracked', 'lines_read_total', 'records_produced_total', 'kafka_messages_acked_total', 'unshipped_bytes', 'errors_total'];
  return `agent metrics: ${names.map((name) => `${name}=${sumMetric(text, `logship_agent_${name}`)}`).join(' ')}`;
}

// ---- cleanup ----------------------------------------------------------------------------------------

/** What a cleanup step returns when it decided to keep its resource after all. */
const KEPT = Symbol('kept');

interface CleanupStep {
  what: string;
  /** Data the run created: kept with --keep. Processes are stopped whatever the flag. */
  data: boolean;
  run: () => Promise<unknown>;
}

/** What the run created, undone in reverse order; every step runs even when an earlier one fails. */
class Cleanup {
  private readonly steps: CleanupStep[] = [];

  add(what: string, data: boolean, run: () => Promise<unknown>): void {
    this.steps.push({ what, data, run });
  }

  /** `done` lists the data removed; stopped processes and closed clients are not listed. */
  async run(keepData: boolean): Promise<{ done: string[]; kept: string[]; failed: string[] }> {
    const result = { done: [] as string[], kept: [] as string[], failed: [] as string[] };
    for (const step of this.steps.reverse()) {
      if (step.data && keepData) {
        result.kept.push(step.what);
        continue;
      }
      try {
        if ((await step.run()) === KEPT) result.kept.push(step.what);
        else if (step.data) result.done.push(step.what);
      } catch (error) {
        result.failed.push(`${step.what}: ${describeError(error)}`);
      }
    }
    return result;
  }
}

// ---- Kubernetes -------------------------------------------------------------------------------------

interface CreatedContainer {
  pod: PodPlan;
  podName: string;
  namespace: string;
  uid: string;
  plan: ContainerPlan;
}

async function createKubeObjects(kube: KubeClients, names: RunNames, rnd: Random, cleanup: Cleanup): Promise<CreatedContainer[]> {
  for (const [logical, namespace] of Object.entries(names.namespaces) as [PodPlan['namespace'], string][]) {
    await kube.core.createNamespace({ body: { metadata: { name: namespace, labels: { ...NAMESPACE_LABELS[logical], 'logship.io/demo-run': names.id } } } });
    cleanup.add(`namespace ${namespace}`, true, () => deleteNamespaceNow(kube.core, namespace));
  }
  const created: CreatedContainer[] = [];
  // Names and hashes the way a Deployment's ReplicaSet makes them.
  const alnum = 'bcdfghjklmnpqrstvwxz2456789';
  const random = (length: number): string => Array.from({ length }, () => alnum.charAt(Math.floor(rnd() * alnum.length))).join('');
  for (const pod of PODS) {
    const namespace = names.namespaces[pod.namespace];
    const hash = random(10);
    const podName = `${pod.name}-${hash}-${random(5)}`;
    const response = await kube.core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: podName, labels: { ...pod.labels, 'pod-template-hash': hash }, annotations: { 'logship.io/demo-run': names.id } },
        spec: { nodeName: names.nodeName, containers: pod.containers.map((c) => ({ name: c.name, image: c.image })) },
      },
    });
    // No kubelet confirms a graceful deletion: zero grace.
    cleanup.add(`pod ${namespace}/${podName}`, true, () => kube.core.deleteNamespacedPod({ name: podName, namespace, gracePeriodSeconds: 0 }));
    const uid = response.metadata?.uid;
    if (uid === undefined) throw new Error(`the API server gave pod ${namespace}/${podName} no uid`);
    for (const plan of pod.containers) created.push({ pod, podName, namespace, uid, plan });
  }
  return created;
}

// ---- the node's log files ---------------------------------------------------------------------------

interface LogEvent {
  time: string;
  stream: CriStream;
  message: string;
}

interface ContainerLog {
  container: CreatedContainer;
  file: string;
  events: LogEvent[];
}

interface WriteStats {
  lines: number;
  physicalLines: number;
  partialChains: number;
  interleaved: number;
  stderr: number;
  /** `<pod>/<container>/0.log → 0.log.<time>`, once the rotation happened. */
  rotation?: string;
  /** Every message written, for the check that what landed is what was written. */
  messages: Set<string>;
  /** stderr lines per app label, for the example query's expected count. */
  stderrByApp: Map<string, number>;
}

function planLogs(containers: CreatedContainer[], root: string, rnd: Random): ContainerLog[] {
  const endMs = Date.now() - 60_000;
  const startMs = endMs - TIME_SPAN_MINUTES * 60_000;
  return containers.map((container) => {
    const { plan } = container;
    const events: LogEvent[] = [];
    let forceStderr = false;
    for (let i = 0; i < plan.lines; i++) {
      const timeMs = startMs + Math.floor(((endMs - startMs) * i) / plan.lines);
      const c: LineContext = { id: `${plan.name}-${String(i).padStart(5, '0')}`, time: new Date(timeMs), rnd };
      const time = criTime(timeMs, Math.floor(rnd() * 1_000_000));
      const long: boolean = plan.long !== undefined && !forceStderr && rnd() < plan.longShare;
      const stream: CriStream = !long && (forceStderr || rnd() < plan.stderrShare) ? 'stderr' : 'stdout';
      const message = long && plan.long ? plan.long(c) : stream === 'stderr' ? plan.stderr(c) : plan.stdout(c);
      events.push({ time, stream, message });
      // Half of the long lines are followed by a stderr line, which the writer puts between their chunks.
      forceStderr = long && rnd() < 0.5;
    }
    const dir = containerLogDir(root, { namespace: container.namespace, pod: container.podName, uid: container.uid, container: plan.name });
    return { container, file: join(dir, '0.log'), events };
  });
}

/**
 * The physical CRI lines of some events, as a runtime interleaves them: when a long line (several
 * chunks) is followed by a line on the other stream, that line lands between the first chunks.
 */
function physicalLines(events: readonly LogEvent[], stats: WriteStats): Buffer[] {
  const lines: Buffer[] = [];
  for (let i = 0; i < events.length; i++) {
    const event = events[i] as LogEvent;
    const chunks = criChunks(event.time, event.stream, event.message);
    const next = events[i + 1];
    if (chunks.length > 1) stats.partialChains++;
    if (chunks.length > 1 && next !== undefined && next.stream !== event.stream) {
      const nextChunks = criChunks(next.time, next.stream, next.message);
      if (nextChunks.length === 1) {
        lines.push(chunks[0] as Buffer, ...nextChunks, ...chunks.slice(1));
        stats.interleaved++;
        i++;
        continue;
      }
    }
    lines.push(...chunks);
  }
  return lines;
}

/**
 * Appends every container's events in ROUNDS rounds. In ROTATE_ROUND, once the agent shipped lines of
 * the rotating container (it holds the file open), that file is rotated the kubelet's way: part of
 * the round, rename to `0.log.<time>`, the rest still written to the renamed file (the runtime has not
 * reopened yet), and the following rounds go to a fresh `0.log`.
 */
async function writeLogs(logs: ContainerLog[], stats: WriteStats, agent: { shipped: (podUid: string) => boolean; diagnose: () => Promise<string> }, signal: AbortSignal): Promise<void> {
  const write = (file: string, events: readonly LogEvent[]): void => {
    const lines = physicalLines(events, stats);
    appendChunks(file, lines);
    stats.physicalLines += lines.length;
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const log of logs) {
      const from = Math.floor((log.events.length * round) / ROUNDS);
      const to = Math.floor((log.events.length * (round + 1)) / ROUNDS);
      const events = log.events.slice(from, to);
      if (round === ROTATE_ROUND && log.container.plan.rotates === true) {
        try {
          await poll(`the agent shipping lines of ${log.container.podName}`, () => Promise.resolve(agent.shipped(log.container.uid)), 60_000, 100, signal);
        } catch (error) {
          if (signal.aborted) throw error;
          throw new Error(`${describeError(error)}; ${await agent.diagnose()}`, { cause: error });
        }
        const split = Math.floor(events.length * 0.75);
        write(log.file, events.slice(0, split));
        const rotated = rotateLog(log.file);
        write(rotated, events.slice(split));
        stats.rotation = `${log.container.podName}/${log.container.plan.name}/0.log → ${basename(rotated)}`;
      } else {
        write(log.file, events);
      }
      for (const event of events) {
        stats.lines++;
        stats.messages.add(event.message);
        if (event.stream === 'stderr') {
          stats.stderr++;
          const app = log.container.pod.labels.app ?? '';
          stats.stderrByApp.set(app, (stats.stderrByApp.get(app) ?? 0) + 1);
        }
      }
    }
    await sleep(ROUND_INTERVAL_MS, undefined, { signal });
  }
}

// ---- reading back what landed -----------------------------------------------------------------------

/** Records (NDJSON lines) in the run's topics, read by a consumer group of its own. */
class KafkaCounter {
  records = 0;
  private readonly byKey = new Map<string, number>();
  /** `topic/partition/offset` of every message counted: a message delivered again is not counted twice. */
  private readonly seen = new Set<string>();

  constructor(private readonly consumer: Consumer) {}

  async start(topics: string[]): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const position = `${topic}/${String(partition)}/${message.offset}`;
        if (this.seen.has(position)) return;
        this.seen.add(position);
        const value = message.value?.toString('utf8') ?? '';
        let count = 0;
        for (const line of value.split('\n')) if (line !== '') count++;
        this.records += count;
        const key = message.key?.toString('utf8') ?? '';
        this.byKey.set(key, (this.byKey.get(key) ?? 0) + count);
      },
    });
  }

  /** The agent keys messages by pod uid. */
  shipped(podUid: string): boolean {
    return (this.byKey.get(podUid) ?? 0) > 0;
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}

interface S3Object {
  etag: string;
  gzipped: Buffer;
  lines: string[];
}

/** Every NDJSON object under the run's prefix; only new or changed objects are downloaded again. */
class S3Rows {
  private readonly objects = new Map<string, S3Object>();

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly prefix: string,
  ) {}

  async refresh(): Promise<void> {
    let token: string | undefined;
    const seen = new Set<string>();
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}/`, ContinuationToken: token }));
      for (const object of page.Contents ?? []) {
        const key = object.Key;
        if (key === undefined || !key.endsWith('.ndjson.gz')) continue;
        seen.add(key);
        const etag = object.ETag ?? '';
        if (this.objects.get(key)?.etag === etag) continue;
        const body = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
        const gzipped = Buffer.from(await (body.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
        this.objects.set(key, { etag, gzipped, lines: gunzipSync(gzipped).toString('utf8').split('\n').filter((l) => l !== '') });
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    for (const key of this.objects.keys()) if (!seen.has(key)) this.objects.delete(key);
  }

  get objectCount(): number {
    return this.objects.size;
  }

  get rowCount(): number {
    let rows = 0;
    for (const object of this.objects.values()) rows += object.lines.length;
    return rows;
  }

  *records(): Generator<LogRecord> {
    for (const object of this.objects.values()) for (const line of object.lines) yield JSON.parse(line) as LogRecord;
  }

  /** Writes the objects under `dir`, keeping their keys (and so the Hive layout). */
  async download(dir: string): Promise<void> {
    for (const [key, object] of this.objects) {
      const file = join(dir, key);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, object.gzipped);
    }
  }

  async deleteAll(): Promise<void> {
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}/` }));
      const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
      if (keys.length === 0) return;
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys } }));
    }
  }
}

async function countDocuments(es: ElasticsearchClient, pattern: string, refresh = false): Promise<number> {
  if (refresh) await es.indices.refresh({ index: pattern, ignore_unavailable: true, allow_no_indices: true });
  return (await es.count({ index: pattern, ignore_unavailable: true, allow_no_indices: true })).count;
}

/** Messages between each partition's committed offset (or its start) and its end. */
async function consumerLag(admin: Admin, groupId: string, topics: string[]): Promise<number> {
  const committed = new Map<string, number>();
  for (const t of await admin.fetchOffsets({ groupId, topics })) {
    for (const p of t.partitions) committed.set(`${t.topic}/${String(p.partition)}`, Number(p.offset));
  }
  let lag = 0;
  for (const topic of topics) {
    for (const p of await admin.fetchTopicOffsets(topic)) {
      const from = Math.max(committed.get(`${topic}/${String(p.partition)}`) ?? -1, Number(p.low));
      lag += Math.max(0, Number(p.high) - from);
    }
  }
  return lag;
}

/** The group's lag once it reached 0, or as last measured after 20 s (null when it could not be read). */
async function settledLag(admin: Admin, names: RunNames, signal: AbortSignal): Promise<number | null> {
  let lag: number | null = null;
  const deadline = Date.now() + 20_000;
  while (lag !== 0 && Date.now() < deadline) {
    lag = await consumerLag(admin, names.groupId, names.topics).catch(() => null);
    if (lag !== 0) await sleep(250, undefined, { signal });
  }
  return lag;
}

/** Deletes consumer groups that exist (a group whose consumer never joined has nothing to delete). */
async function deleteGroups(admin: Admin, groupIds: string[]): Promise<void> {
  const existing = new Set((await admin.listGroups()).groups.map((g) => g.groupId));
  const present = groupIds.filter((id) => existing.has(id));
  if (present.length > 0) await admin.deleteGroups(present);
}

/** Messages in a topic (0 when it does not exist): each dead letter is one message. */
async function topicMessages(admin: Admin, topic: string): Promise<number> {
  if (!(await admin.listTopics()).includes(topic)) return 0;
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
}

// ---- the two example queries ------------------------------------------------------------------------

async function elasticsearchExample(es: ElasticsearchClient, names: RunNames, expected: number): Promise<void> {
  const labelField = `${Field.KUBERNETES}.${KubernetesField.LABELS}.app`;
  const request = {
    index: `${names.indexPrefix}-*`,
    query: { bool: { filter: [{ term: { [labelField]: QUERY_APP } }, { term: { [Field.STREAM]: 'stderr' } }] } },
    sort: [{ [Field.TIMESTAMP]: 'asc' as const }],
    size: 3,
    track_total_hits: true,
    _source: [Field.TIMESTAMP, `${Field.KUBERNETES}.${KubernetesField.POD}`, Field.MESSAGE],
  };
  out.line(`Elasticsearch: stderr lines of the pods labelled app=${QUERY_APP} (a term query on the flattened labels field)`);
  out.line(`  GET ${request.index}/_search`);
  const { index: _index, ...body } = request;
  out.line('  {');
  const entries = Object.entries(body);
  entries.forEach(([key, value], i) => out.line(`    ${JSON.stringify(key)}: ${JSON.stringify(value)}${i < entries.length - 1 ? ',' : ''}`));
  out.line('  }');
  const response = await es.search<LogRecord>(request);
  const total = typeof response.hits.total === 'number' ? response.hits.total : (response.hits.total?.value ?? 0);
  out.line(`  → ${total} hits (${expected} stderr lines were written for app=${QUERY_APP}); the first ${response.hits.hits.length}:`);
  for (const hit of response.hits.hits) {
    const doc = hit._source;
    if (doc === undefined) continue;
    out.line(`    ${doc[Field.TIMESTAMP]}  ${doc[Field.KUBERNETES][KubernetesField.POD]}  ${doc[Field.MESSAGE]}`);
  }
  out.line();
}

function cellText(value: unknown): string {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' ? String(value) : JSON.stringify(value);
}

async function sqlExample(s3Rows: S3Rows, names: RunNames, bucket: string): Promise<number> {
  const dir = join(names.dir, 's3');
  await s3Rows.download(dir);
  const [, namespace, dt, hour] = PARTITION_COLUMNS;
  const glob = join(dir, names.s3Prefix, `${PARTITION_COLUMNS.map((c) => `${c}=*`).join('/')}/*.ndjson.gz`);
  const sql = [
    `SELECT ${namespace}, ${dt}, ${hour}, count(*)::INTEGER AS lines, count(*) FILTER (${Field.STREAM} = 'stderr')::INTEGER AS stderr`,
    `FROM read_json('${glob.replace(/'/g, "''")}',`,
    `               format = 'newline_delimited', compression = 'gzip', hive_partitioning = true, hive_types_autocast = false)`,
    'GROUP BY ALL ORDER BY ALL',
  ];
  out.line(`SQL (DuckDB) over the S3 objects (s3://${bucket}/${names.s3Prefix}/…) downloaded to ${dir} with their Hive layout:`);
  for (const line of sql) out.line(`  ${line}`);
  // DuckDB's JSON reader is built into the package; nothing is fetched.
  const instance = await DuckDBInstance.create(':memory:', { autoinstall_known_extensions: 'false', autoload_known_extensions: 'true' });
  const db = await instance.connect();
  try {
    const rows = (await db.runAndReadAll(sql.join('\n'))).getRowObjectsJS();
    const header = [namespace, dt, hour, 'lines', 'stderr'];
    const table = [header, ...rows.map((r) => header.map((h) => cellText(r[h])))];
    const widths = header.map((_h, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
    out.line(`  → ${rows.length} rows:`);
    for (const row of table) out.line(`    ${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ')}`);
    out.line();
    return rows.reduce((n, r) => n + Number(r.lines), 0);
  } finally {
    db.closeSync();
    instance.closeSync();
  }
}

// ---- the run ----------------------------------------------------------------------------------------

/** The demo's closing JSON line (also read by test/integration/demo.test.ts). */
export interface DemoSummary {
  ok: boolean;
  run_id: string;
  lines_written: number;
  kafka_records: number;
  s3_objects: number;
  s3_rows: number;
  es_docs: number;
  dead_letters: number;
  lag: number | null;
  enriched: number;
  messages_intact: boolean;
  sql_rows_total: number | null;
  exit_codes: Record<string, number | null>;
  seconds: number;
  kept: boolean;
}

function runStackUp(): Promise<number> {
  return new Promise((resolve, reject) => {
    // Its progress goes to stderr; its endpoints JSON (stdout) is not needed: the demo prints its own.
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'stack', 'cli.ts'), 'up'], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : 128)));
  });
}

function writeConfig(file: string, title: string, config: Record<string, unknown>): string {
  writeFileSync(file, `# ${title}\n# Generated by scripts/demo.ts; every setting is described in docs/configuration.md.\n${stringify(config)}`);
  return file;
}

/** The agent's and the aggregators' config files, in the run folder: what an operator would write. */
function writeConfigs(endpoints: StackEndpoints, names: RunNames, logRoot: string, s3Connection: Record<string, unknown>): { agentConfig: string; aggregatorConfig: string } {
  const agentConfig = writeConfig(join(names.dir, 'agent.yaml'), `logship demo ${names.id}: the node agent`, {
    cluster: names.cluster,
    nodeName: names.nodeName,
    ops: { host: '127.0.0.1', port: 0 },
    files: { root: logRoot, pollIntervalMs: 100, rescanIntervalMs: 1_000, rotateWaitMs: 2_000 },
    kubernetes: { enabled: true, kubeconfig: endpoints.kubernetes.kubeconfig },
    kafka: { brokers: endpoints.kafka.brokers, clientId: 'logship-demo-agent', topicTemplate: 'demo.{cluster}.{namespace}' },
    checkpoints: { dir: join(names.dir, 'agent-state'), intervalMs: 500 },
    shutdown: { timeoutMs: 15_000 },
  });
  const aggregatorConfig = writeConfig(join(names.dir, 'aggregator.yaml'), `logship demo ${names.id}: the aggregator (both instances)`, {
    ops: { host: '127.0.0.1', port: 0 },
    kafka: {
      brokers: endpoints.kafka.brokers,
      clientId: 'logship-demo-aggregator',
      groupId: names.groupId,
      topicPattern: names.topicPattern,
      topicRefreshIntervalMs: 2_000,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 1_000,
      rebalanceTimeoutMs: 20_000,
      maxWaitTimeMs: 200,
      commitIntervalMs: 500,
    },
    deadLetter: { topic: names.deadLetterTopic },
    sinks: [
      {
        name: 'archive',
        type: 's3',
        // Small and frequent objects for a demo; production keeps the 60 s default for large objects.
        batch: { maxAgeMs: 3_000 },
        retry: { maxDelayMs: 5_000 },
        s3: { bucket: endpoints.s3.bucket, prefix: names.s3Prefix, connection: s3Connection },
      },
      {
        name: 'search',
        type: 'elasticsearch',
        batch: { maxAgeMs: 500 },
        retry: { maxDelayMs: 5_000 },
        elasticsearch: {
          connection: { nodes: [endpoints.elasticsearch.url] },
          index: `${names.indexPrefix}-{namespace}-{yyyy.MM.dd}`,
          templateName: names.indexPrefix,
          numberOfReplicas: 0,
          refreshIntervalMs: 1_000,
        },
      },
    ],
    shutdown: { timeoutMs: 20_000 },
  });
  return { agentConfig, aggregatorConfig };
}

/** The counts so far, for the last line when the run fails before its summary. */
type LiveCounts = Pick<DemoSummary, 'lines_written' | 'kafka_records' | 's3_objects' | 's3_rows' | 'es_docs'>;

async function run(endpoints: StackEndpoints, names: RunNames, keep: boolean, signal: AbortSignal, cleanup: Cleanup, startedMs: number, live: LiveCounts): Promise<DemoSummary> {
  const rnd = mulberry32(0x10c5);
  const logDir = join(names.dir, 'logs');
  const logRoot = join(names.dir, 'var-log-pods');
  mkdirSync(logDir, { recursive: true });
  mkdirSync(logRoot, { recursive: true });
  const logger: Logger = createLogger({ name: 'logship-demo', level: 'warn', destination: createWriteStream(join(logDir, 'demo.log')) });

  // Clients of the demo itself, through the project's own wrappers.
  const kafka = createKafka(kafkaConnectionSchema.parse({ brokers: endpoints.kafka.brokers, clientId: 'logship-demo' }), logger);
  const admin = kafka.admin();
  await admin.connect();
  cleanup.add('Kafka admin client', false, () => admin.disconnect());
  const s3Connection = {
    endpoint: endpoints.s3.endpoint,
    region: endpoints.s3.region,
    forcePathStyle: true,
    accessKeyId: endpoints.s3.accessKeyId,
    secretAccessKey: { file: endpoints.s3.secretAccessKeyFile },
  };
  const s3 = createS3Client(s3ConnectionSchema.parse(s3Connection));
  cleanup.add('S3 client', false, async () => s3.destroy());
  const s3Rows = new S3Rows(s3, endpoints.s3.bucket, names.s3Prefix);
  const es = createElasticsearchClient(elasticsearchConnectionSchema.parse({ nodes: [endpoints.elasticsearch.url] }));
  cleanup.add('Elasticsearch client', false, () => es.close());
  const kube = createKubeClients({ kubeconfig: endpoints.kubernetes.kubeconfig });

  // Kubernetes: namespaces and pods bound to the demo's node, as the scheduler would leave them.
  const containers = await createKubeObjects(kube, names, rnd, cleanup);
  const podCount = new Set(containers.map((c) => c.uid)).size;
  out.line(`Kubernetes: namespaces ${Object.values(names.namespaces).join(', ')} and ${podCount} pods on node ${names.nodeName}:`);
  for (const c of containers) out.line(`  ${c.namespace}/${c.podName}  container ${c.plan.name}  labels ${JSON.stringify(c.pod.labels)}`);

  // Kafka: the topics the agent's template yields (3 partitions each), and the dead-letter topic.
  await admin.createTopics({ topics: [...names.topics, names.deadLetterTopic].map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true });
  cleanup.add(`Kafka topics ${[...names.topics, names.deadLetterTopic].join(', ')}`, true, () => admin.deleteTopics({ topics: [...names.topics, names.deadLetterTopic] }));
  cleanup.add(`consumer groups ${names.groupId}, ${names.counterGroupId}`, true, () => deleteGroups(admin, [names.groupId, names.counterGroupId]));
  cleanup.add(`S3 objects under s3://${endpoints.s3.bucket}/${names.s3Prefix}/`, true, () => s3Rows.deleteAll());
  cleanup.add(`Elasticsearch indices ${names.indexPrefix}-* and template ${names.indexPrefix}`, true, async () => {
    await es.indices.delete({ index: `${names.indexPrefix}-*`, ignore_unavailable: true, allow_no_indices: true });
    await es.indices.deleteIndexTemplate({ name: names.indexPrefix });
  });
  out.line(`Kafka: topics ${names.topics.join(', ')} (pattern ${names.topicPattern}), dead letters to ${names.deadLetterTopic}`);

  // The binaries, from source, with generated config files.
  const { agentConfig, aggregatorConfig } = writeConfigs(endpoints, names, logRoot, s3Connection);
  const binaries = [
    new Binary('agent', 'agent', agentConfig, join(logDir, 'agent.log')),
    new Binary('aggregator-1', 'aggregator', aggregatorConfig, join(logDir, 'aggregator-1.log')),
    new Binary('aggregator-2', 'aggregator', aggregatorConfig, join(logDir, 'aggregator-2.log')),
  ];
  const exitCodes: Record<string, number | null> = {};
  const stopAll = async (): Promise<void> => {
    // The agent first (it flushes to Kafka), then the aggregators (they flush to the sinks and commit).
    for (const binary of binaries) exitCodes[binary.name] ??= await binary.stop(30_000);
  };
  cleanup.add('agent and aggregators', false, stopAll);
  // An aggregator is ready for the demo once its consumer runs; a failing sink health check is shown, not fatal.
  const [agent, ...aggregators] = await Promise.all(binaries.map((b, i) => b.ready(90_000, signal, i === 0 ? undefined : ['consumer'])));
  const aggregatorUrls = aggregators.map((a) => a.url);
  out.line(`[${elapsed(startedMs)}] Started from source (configs in ${names.dir}): agent ${agent?.url ?? ''}, aggregators ${aggregatorUrls.join(' and ')} (/metrics, /healthz, /readyz)`);
  for (const [i, a] of aggregators.entries()) {
    if (a.failing.length > 0) out.line(`  note: aggregator-${i + 1} /readyz reports ${a.failing.join(', ')} unhealthy (see its log); the demo goes on and checks what lands`);
  }

  const counter = new KafkaCounter(kafka.consumer({ groupId: names.counterGroupId, maxWaitTimeInMs: 200 }));
  cleanup.add('Kafka counting consumer', false, () => counter.stop());
  await counter.start(names.topics);

  // Write the logs while everything runs, and watch them land.
  const logs = planLogs(containers, logRoot, rnd);
  const expectedLines = logs.reduce((n, l) => n + l.events.length, 0);
  out.line(`[${elapsed(startedMs)}] Writing ${expectedLines} log lines into ${logRoot} (CRI format, ${ROUNDS} rounds, one rotation)…`);
  const written: WriteStats = { lines: 0, physicalLines: 0, partialChains: 0, interleaved: 0, stderr: 0, messages: new Set(), stderrByApp: new Map() };
  const writer: { done: boolean; error?: Error } = { done: false };
  const agentState = { shipped: (uid: string) => counter.shipped(uid), diagnose: () => agentDiagnosis(agent?.url ?? '') };
  const writing: Promise<Error | undefined> = writeLogs(logs, written, agentState, signal).then(
    () => {
      writer.done = true;
      return undefined;
    },
    (error: unknown) => (writer.error = error instanceof Error ? error : new Error(String(error))),
  );
  let esDocs = 0;
  const status = (): string => {
    Object.assign(live, { lines_written: written.lines, kafka_records: counter.records, s3_objects: s3Rows.objectCount, s3_rows: s3Rows.rowCount, es_docs: esDocs });
    return `[${elapsed(startedMs)}] written ${written.lines}/${expectedLines} lines · Kafka ${counter.records} records · S3 ${s3Rows.rowCount} rows in ${s3Rows.objectCount} objects · Elasticsearch ${esDocs} docs`;
  };
  const landedBy = Date.now() + LANDING_TIMEOUT_MS;
  let landed = false;
  for (;;) {
    signal.throwIfAborted();
    if (writer.error !== undefined) throw writer.error;
    try {
      await s3Rows.refresh();
      esDocs = await countDocuments(es, `${names.indexPrefix}-*`);
    } catch (error) {
      logger.warn({ err: error }, 'progress probe failed');
    }
    landed = writer.done && counter.records >= expectedLines && s3Rows.rowCount >= expectedLines && esDocs >= expectedLines;
    if (landed || Date.now() > landedBy) break;
    out.progress(status());
    await sleep(PROBE_INTERVAL_MS, undefined, { signal });
  }
  const writeFailure = await writing;
  if (writeFailure !== undefined) throw writeFailure;
  esDocs = await countDocuments(es, `${names.indexPrefix}-*`, true);
  out.progress(status(), true);
  out.line(
    landed
      ? `Everything landed ${elapsed(startedMs)} after the start.`
      : `Not everything landed within ${LANDING_TIMEOUT_MS / SECOND_MS} s.`,
  );

  // Lag: the aggregators commit every 500 ms once both sinks wrote; give them a moment.
  const lag = await settledLag(admin, names, signal);
  const deadLetters = await topicMessages(admin, names.deadLetterTopic);
  let deadLetterMetric = 0;
  for (const url of aggregatorUrls) deadLetterMetric += await fetchMetricSum(url, 'logship_aggregator_dead_letters_total');
  out.line();

  // What landed, checked against what was written.
  let enriched = 0;
  let intact = 0;
  const seenMessages = new Set<string>();
  const eventIds = new Set<string>();
  /** Rows whose event_id was seen before, by file: a duplicate a replay would have to explain. */
  const duplicates = new Map<string, { rows: number; minOffset: number; maxOffset: number }>();
  for (const record of s3Rows.records()) {
    const eventId = record[Field.EVENT_ID];
    if (eventIds.has(eventId)) {
      const { [LogField.FILE]: file, [LogField.OFFSET]: offset } = record[Field.LOG];
      const d = duplicates.get(file) ?? { rows: 0, minOffset: offset, maxOffset: offset };
      duplicates.set(file, { rows: d.rows + 1, minOffset: Math.min(d.minOffset, offset), maxOffset: Math.max(d.maxOffset, offset) });
    }
    eventIds.add(eventId);
    const k8s = record[Field.KUBERNETES];
    if (record[Field.LOG][LogField.FLAGS]?.includes(RecordFlag.METADATA_FALLBACK) !== true && k8s[KubernetesField.LABELS].app !== undefined) enriched++;
    const message = record[Field.MESSAGE];
    if (written.messages.has(message) && !seenMessages.has(message)) intact++;
    seenMessages.add(message);
  }
  const s3RowCount = s3Rows.rowCount;

  if (landed) await elasticsearchExample(es, names, written.stderrByApp.get(QUERY_APP) ?? 0);
  const sqlTotal = s3RowCount > 0 ? await sqlExample(s3Rows, names, endpoints.s3.bucket) : null;

  await stopAll();

  const summary: DemoSummary = {
    ok: false,
    run_id: names.id,
    lines_written: written.lines,
    kafka_records: counter.records,
    s3_objects: s3Rows.objectCount,
    s3_rows: s3RowCount,
    es_docs: esDocs,
    dead_letters: Math.max(deadLetters, deadLetterMetric),
    lag,
    enriched: s3RowCount === 0 ? 0 : Number((enriched / s3RowCount).toFixed(4)),
    messages_intact: intact === written.lines && s3RowCount === written.lines,
    sql_rows_total: sqlTotal,
    exit_codes: exitCodes,
    seconds: 0,
    kept: keep,
  };
  const problems = findProblems(summary, eventIds.size);
  summary.ok = problems.length === 0;

  out.line('== logship demo: summary ==');
  const rows: [string, string][] = [
    ['lines written', `${written.lines} (${written.physicalLines} physical CRI lines: ${written.partialChains} long lines split into P/F chunks, ${written.interleaved} of them with a stderr line between their chunks; ${written.stderr} stderr lines; rotated: ${written.rotation ?? 'nothing'})`],
    ['Kafka records', `${summary.kafka_records} in ${names.topics.length} topics × 3 partitions`],
    ['S3', `${summary.s3_rows} rows (${eventIds.size} distinct event_ids) in ${summary.s3_objects} objects under s3://${endpoints.s3.bucket}/${names.s3Prefix}/`],
    ['Elasticsearch', `${summary.es_docs} documents in ${names.indexPrefix}-*`],
    ['dead letters', `${deadLetters} in ${names.deadLetterTopic} (aggregators' metric: ${deadLetterMetric}); the input is clean, so 0 is expected`],
    ['consumer lag', lag === null ? 'unknown' : `${lag} messages (group ${names.groupId}, 2 members)`],
    ['enriched', `${(summary.enriched * 100).toFixed(1)}% of the rows carry pod labels from the API server (no metadata_fallback flag)`],
    ['messages', summary.messages_intact ? 'every message arrived exactly as written (long lines merged back from their chunks)' : `${intact} of ${written.lines} messages arrived as written (${s3RowCount - eventIds.size} rows repeat an event_id)`],
    ...[...duplicates].map(([file, d]): [string, string] => ['duplicates', `${d.rows} rows of ${relative(logRoot, file)} repeat an event_id (byte offsets ${d.minOffset}–${d.maxOffset})`]),
    ['exit codes', Object.entries(exitCodes).map(([name, code]) => `${name} ${String(code)}`).join(', ')],
  ];
  for (const [label, value] of rows) out.line(`${label.padEnd(15)}${value}`);
  out.line(summary.ok ? 'OK: every line written is in S3 and in Elasticsearch, exactly once, and nothing was dead-lettered.' : `FAILED:\n  - ${problems.join('\n  - ')}`);
  if (!summary.ok) {
    for (const binary of binaries) {
      const lines = binary.problems(5);
      if (lines.length > 0) out.line(`${binary.name}, its last warnings (or last lines) from ${binary.logFile}:\n  ${lines.join('\n  ')}`);
    }
  }
  return summary;
}

function findProblems(s: DemoSummary, distinctIds: number): string[] {
  const problems: string[] = [];
  if (s.lines_written === 0) problems.push('no lines were written');
  if (s.kafka_records !== s.lines_written) problems.push(`Kafka holds ${s.kafka_records} records, ${s.lines_written} lines were written`);
  if (s.s3_rows !== s.lines_written) problems.push(`S3 holds ${s.s3_rows} rows (${distinctIds} distinct), ${s.lines_written} lines were written`);
  if (s.es_docs !== s.lines_written) problems.push(`Elasticsearch holds ${s.es_docs} documents, ${s.lines_written} lines were written`);
  if (s.dead_letters !== 0) problems.push(`${s.dead_letters} records were dead-lettered`);
  if (!s.messages_intact) problems.push('the messages in S3 are not exactly the ones written, once each');
  for (const [name, code] of Object.entries(s.exit_codes)) if (code !== 0) problems.push(`${name} exited with ${String(code)} on SIGTERM`);
  return problems;
}

async function main(argv: string[]): Promise<number> {
  const unknown = argv.filter((a) => a !== '--keep');
  if (unknown.length > 0) {
    process.stderr.write(`demo: unknown argument ${unknown.join(' ')}\nusage: npm run demo [-- --keep]\n`);
    return 2;
  }
  const keep = argv.includes('--keep');
  const startedMs = Date.now();
  // The machine may run Node 20; the AWS SDK's notice about its future Node 22 floor is noise here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  out.line('logship demo: bringing the stack up (installs it on first use)…');
  const stackCode = await runStackUp();
  if (stackCode !== 0) {
    process.stderr.write(`demo: the stack did not come up (exit ${stackCode})\n`);
    return stackCode;
  }
  const endpoints = readEndpoints();
  const names = runNames();
  out.line(`Run ${names.id}: Kafka ${endpoints.kafka.brokers.join(',')}, S3 ${endpoints.s3.endpoint} (bucket ${endpoints.s3.bucket}), Elasticsearch ${endpoints.elasticsearch.url}, Kubernetes ${endpoints.kubernetes.server}`);

  const cleanup = new Cleanup();
  let summary: DemoSummary | undefined;
  let failure: unknown;
  const live: LiveCounts = { lines_written: 0, kafka_records: 0, s3_objects: 0, s3_rows: 0, es_docs: 0 };
  // Registered first, so removed last; kept with --keep, and after a failure for its logs and configs.
  cleanup.add(`run folder ${names.dir}`, true, async () => {
    if (summary?.ok !== true) return KEPT;
    rmSync(names.dir, { recursive: true, force: true });
    return undefined;
  });
  try {
    summary = await run(endpoints, names, keep, abort.signal, cleanup, startedMs, live);
  } catch (error) {
    failure = error;
  }
  const cleaned = await cleanup.run(keep);

  out.line();
  if (failure !== undefined) out.line(`FAILED: ${abort.signal.aborted ? 'interrupted' : describeError(failure)}`);
  if (summary?.ok !== true && !keep) out.line(`The run's logs and configs are kept in ${names.dir} (logs/agent.log, logs/aggregator-*.log).`);
  if (cleaned.failed.length > 0) out.line(`Cleanup left: ${cleaned.failed.join('; ')}`);
  if (keep) {
    out.line('Kept for exploring (--keep):');
    out.line(`  Elasticsearch  curl -s '${endpoints.elasticsearch.url}/${names.indexPrefix}-*/_search?q=kubernetes.labels.app:${QUERY_APP}&size=3&pretty'`);
    out.line(`  S3             s3://${endpoints.s3.bucket}/${names.s3Prefix}/ at ${endpoints.s3.endpoint} (access key ${endpoints.s3.accessKeyId}, secret in ${endpoints.s3.secretAccessKeyFile})`);
    out.line(`  Kafka          ${endpoints.kafka.brokers.join(',')}: topics ${names.topics.join(', ')}, dead letters ${names.deadLetterTopic}, group ${names.groupId}`);
    out.line(`  Kubernetes     namespaces ${Object.values(names.namespaces).join(', ')} (kubeconfig ${endpoints.kubernetes.kubeconfig})`);
    out.line(`  files          ${names.dir}: agent.yaml, aggregator.yaml, var-log-pods/, logs/, s3/`);
    out.line('  Nothing removes them later by itself (`npm run stack -- down --purge` wipes all the stack\'s data).');
  } else {
    out.line(`Cleaned up: ${cleaned.done.join('; ')}.`);
  }
  out.line('The stack keeps running for the next demo or test; stop it with `npm run stack -- down`.');
  const seconds = Number(((Date.now() - startedMs) / SECOND_MS).toFixed(1));
  const final = summary ?? {
    ok: false,
    run_id: names.id,
    error: abort.signal.aborted ? 'interrupted' : failure === undefined ? 'unknown' : (describeError(failure).split('\n')[0] ?? ''),
    ...live,
    dead_letters: null,
    kept: keep,
  };
  out.line(JSON.stringify({ ...final, seconds }));
  return summary?.ok === true ? 0 : abort.signal.aborted ? 130 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`demo: ${describeError(error)}\n`);
    process.exit(1);
  },
);

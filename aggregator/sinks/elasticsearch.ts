/**
 * The Elasticsearch sink: writes each record as one document through the Bulk API, `_id` = the
 * record's `event_id` (a replay overwrites), into an index named from the record itself
 * (`logship-{namespace}-{yyyy.MM.dd}`). The document is the record's JSON line as it came from Kafka:
 * nothing is parsed or re-serialised.
 *
 * A batch is split into bulk requests of at most `maxRequestBytes`, `concurrency` of them in flight.
 * Every item of every response is read: 2xx is written; 429 and 5xx are pending (the runner resends
 * only those); any other 4xx (a mapping conflict, an id too long) is rejected for good and goes to the
 * dead letter with Elasticsearch's reason. A request that fails as a whole (unreachable, timeout, 429,
 * 5xx, and also 401/403 or another 4xx: an auth problem must not dead-letter the data) leaves its
 * records pending. Retries, backoff, metrics and dead letters are the runner's.
 *
 * The default index name does not start with `logs-`: on the default distribution `logs-*-*` belongs
 * to the built-in data stream template (priority 100) and to Fleet integrations (priority 200); a
 * `logs-<namespace>-<date>` index would become a data stream without our template, and our template
 * would take over (or collide with) theirs with it.
 *
 * Data streams are not supported: they accept only `create`, which does not overwrite, and a replay
 * that reaches a data stream after a rollover lands in a new backing index as a duplicate. Daily
 * indices keep "a replay overwrites" true.
 */
import { Readable } from 'node:stream';
import { errors, type Client, type estypes } from '@elastic/elasticsearch';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { ErrorCode, SinkError } from '../../shared/errors.js';
import { RateLimitedLog, redactUrlCredentials, type Logger } from '../../shared/logger.js';
import { indexTemplateBody } from '../elasticsearch-template.js';
import { ReplayState, type ReplayLimits } from '../replay-filter.js';
import { copyLine, DeadLetterReason, lineBytes, type Batch, type RejectedRecord, type SendResult, type Sink, type SinkRecord } from '../sink.js';
import { compileIndexName, type ElasticsearchSinkOptions, type IndexName } from './elasticsearch-options.js';

/** Longest dead-letter detail kept from an item error. */
export const MAX_DETAIL_CHARS = 500;
const LOG_INTERVAL_MS = 60_000;
const HOUR_MS = 3_600_000;
const NEWLINE_BYTE = 0x0a;
/** Bulk bodies are streamed in chunks of this size (see bulkBodyChunks). */
const BODY_CHUNK_BYTES = 256 * 1024;

/** Only the parts of a bulk response the sink reads: keeps big responses cheap to receive and parse. */
const BULK_FILTER_PATH = 'errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.type,items.*.error.caused_by.reason';

// ---- bulk requests --------------------------------------------------------------------------------

/**
 * Records of one bulk request and the start of each one's action line (shared by all records of an
 * index); the action lines and the body are built only when the request is sent.
 */
export interface BulkRequestPlan {
  readonly records: SinkRecord[];
  /** `{"index":{"_index":"…","_id":` of each record; the action ends with its JSON event_id and `}}`. */
  readonly prefixes: string[];
  bytes: number;
}

/** What closes an action line after its `_id`. */
const ACTION_END = '}}\n';

/**
 * Splits records into bulk requests of at most `maxRequestBytes` (a record larger than that alone).
 * Action lines name the index and `_id`; the index name is computed once per namespace, cluster and
 * hour, not once per record.
 */
export function planBulkRequests(records: readonly SinkRecord[], indexName: IndexName, maxRequestBytes: number): BulkRequestPlan[] {
  const plans: BulkRequestPlan[] = [];
  const prefixes = new Map<string, { prefix: string; bytes: number }>();
  let current: BulkRequestPlan | undefined;
  // Neighbouring records nearly always share an index: the last prefix is tried first.
  let last = { namespace: '', cluster: '', hour: Number.NaN, prefix: '', prefixBytes: 0 };
  for (const record of records) {
    const { namespace, cluster, timeMs, eventId } = record.fields;
    const hour = indexName.usesDate ? Math.floor(timeMs / HOUR_MS) : 0;
    if (hour !== last.hour || namespace !== last.namespace || cluster !== last.cluster) {
      const key = `${namespace}\n${cluster}\n${hour}`;
      let known = prefixes.get(key);
      if (known === undefined) {
        const prefix = `{"index":{"_index":${JSON.stringify(indexName.render(record.fields))},"_id":`;
        known = { prefix, bytes: Buffer.byteLength(prefix) };
        prefixes.set(key, known);
      }
      last = { namespace, cluster, hour, prefix: known.prefix, prefixBytes: known.bytes };
    }
    const bytes = last.prefixBytes + Buffer.byteLength(JSON.stringify(eventId)) + ACTION_END.length + lineBytes(record) + 1;
    if (current === undefined || (current.bytes + bytes > maxRequestBytes && current.records.length > 0)) {
      current = { records: [], prefixes: [], bytes: 0 };
      plans.push(current);
    }
    current.records.push(record);
    current.prefixes.push(last.prefix);
    current.bytes += bytes;
  }
  return plans;
}

/**
 * The NDJSON body (action line, the record's own bytes, newline; for every record) in chunks of up
 * to `chunkBytes`, each built when the request reads it: a bulk request in flight holds a chunk or
 * two, not a copy of its records (8 requests of 5 MiB at the defaults). A record longer than a
 * chunk comes as one chunk of its own size.
 */
export function* bulkBodyChunks(plan: BulkRequestPlan, chunkBytes = BODY_CHUNK_BYTES): Generator<Buffer> {
  let remaining = plan.bytes;
  let chunk = Buffer.allocUnsafe(Math.min(chunkBytes, remaining));
  let at = 0;
  for (let i = 0; i < plan.records.length; i++) {
    const record = plan.records[i] as SinkRecord;
    const action = `${plan.prefixes[i] as string}${JSON.stringify(record.fields.eventId)}${ACTION_END}`;
    const size = Buffer.byteLength(action) + lineBytes(record) + 1;
    if (at + size > chunk.length) {
      if (at > 0) yield chunk.subarray(0, at);
      chunk = Buffer.allocUnsafe(Math.max(size, Math.min(chunkBytes, remaining)));
      at = 0;
    }
    at += chunk.write(action, at);
    at += copyLine(record, chunk, at);
    chunk[at++] = NEWLINE_BYTE;
    remaining -= size;
  }
  if (at > 0) yield chunk.subarray(0, at);
}

export type ItemOutcome =
  | { readonly kind: 'written' }
  | { readonly kind: 'pending'; readonly status: number; readonly detail: string }
  | { readonly kind: 'rejected'; readonly status: number; readonly detail: string };

/** 2xx written; 429 and 5xx pending (can succeed later); any other status rejected for good. */
export function classifyItem(item: Partial<Record<estypes.BulkOperationType, Partial<estypes.BulkResponseItem>>> | undefined): ItemOutcome {
  const result = item ? Object.values(item)[0] : undefined;
  const status = result?.status;
  if (typeof status !== 'number') return { kind: 'pending', status: 0, detail: 'no status for this item in the bulk response' };
  if (status >= 200 && status < 300) return { kind: 'written' };
  const detail = describeItemError(result?.error, status);
  return status === 429 || status >= 500 ? { kind: 'pending', status, detail } : { kind: 'rejected', status, detail };
}

/** `<type>: <reason> (caused by <type>: <reason>)`, cut to {@link MAX_DETAIL_CHARS}. */
export function describeItemError(error: Partial<estypes.ErrorCause> | undefined, status: number): string {
  if (!error) return `status ${status}`;
  let detail = `${error.type ?? `status ${status}`}: ${error.reason ?? ''}`;
  const cause = error.caused_by;
  if (cause) detail += ` (caused by ${cause.type}: ${cause.reason ?? ''})`;
  return truncate(detail, MAX_DETAIL_CHARS);
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// ---- the sink -------------------------------------------------------------------------------------

interface PlanOutcome {
  readonly pending: SinkRecord[];
  readonly rejected: RejectedRecord[];
  /** Why records are pending, by HTTP status (0 for no response): a small summary for the error. */
  readonly reasons: Map<number, { count: number; detail: string }>;
}

export interface ElasticsearchSinkDeps {
  readonly logger: Logger;
  /**
   * Replay detection's bounds; off when absent. Elasticsearch overwrites a replay through `_id`, so
   * this only saves indexing work: the state is kept in memory, per owned partition, and starts empty
   * after a restart or rebalance.
   */
  readonly replays?: ReplayLimits;
  readonly now?: () => number;
}

export function createElasticsearchSink(name: string, options: ElasticsearchSinkOptions, deps: ElasticsearchSinkDeps): Sink {
  const indexName = compileIndexName(options.index);
  const logger = deps.logger.child({ sink: name });
  const rateLimited = new RateLimitedLog(logger, LOG_INTERVAL_MS);
  const client: Client = createElasticsearchClient(options.connection, 'connection');
  /** Per topic-partition: records returned pending for the batch starting at `firstOffset`. */
  const retries = new Map<string, { firstOffset: number; records: number }>();
  /** Per topic-partition: what was written, by origin (replay detection). */
  const replayStates = new Map<string, ReplayState>();
  /** Per topic-partition: the origins' highs of the batch being sent (kept across its retries). */
  const batchHighs = new Map<string, { firstOffset: number; highs: Map<string, number>; dropped: number }>();
  const now = deps.now ?? Date.now;

  async function sendPlan(plan: BulkRequestPlan, signal: AbortSignal): Promise<PlanOutcome> {
    const outcome: PlanOutcome = { pending: [], rejected: [], reasons: new Map() };
    const allPending = (status: number, detail: string): PlanOutcome => {
      outcome.pending.push(...plan.records);
      outcome.reasons.set(status, { count: plan.records.length, detail });
      return outcome;
    };
    if (signal.aborted) return allPending(0, 'aborted before sending');
    let response: estypes.BulkResponse;
    try {
      response = await client.transport.request<estypes.BulkResponse>(
        { method: 'POST', path: '/_bulk', querystring: { filter_path: BULK_FILTER_PATH }, bulkBody: Readable.from(bulkBodyChunks(plan), { objectMode: false }), meta: { name: 'bulk' } },
        // The length is known: a plain request rather than chunked, and the HTTP client checks the body against it.
        { signal, headers: { 'content-length': String(plan.bytes) } },
      );
    } catch (error) {
      const status = error instanceof errors.ResponseError ? (error.statusCode ?? 0) : 0;
      const detail = describeRequestError(error);
      if (status === 413 && plan.records.length === 1) {
        // One record alone is over the cluster's request limit: it can never be written.
        outcome.rejected.push({ record: plan.records[0] as SinkRecord, reason: DeadLetterReason.REJECTED, detail: truncate(detail, MAX_DETAIL_CHARS) });
        return outcome;
      }
      if (status >= 400 && status < 500 && status !== 429 && status !== 408) {
        // Auth, privileges, a request too large: about the request, not the records. Keep them.
        rateLimited.warn(
          'bulk_request_refused',
          { status, detail, records: plan.records.length, requestBytes: plan.bytes },
          status === 413
            ? 'Elasticsearch refused a bulk request as too large; records are kept and retried. Lower maxRequestBytes below http.max_content_length'
            : 'Elasticsearch refused a bulk request; records are kept and retried, not dead-lettered. Check credentials and index privileges',
        );
      }
      return allPending(status, detail);
    }
    // Never trust the shape blindly: a missing item must leave its record pending, not throw.
    const items = (response as Partial<estypes.BulkResponse>).items ?? [];
    if (items.length !== plan.records.length) {
      rateLimited.warn('bulk_response_mismatch', { items: items.length, records: plan.records.length }, 'bulk response item count differs from the request; resending');
      return allPending(0, `bulk response has ${items.length} items for ${plan.records.length} records`);
    }
    if (!response.errors) return outcome;
    for (let i = 0; i < items.length; i++) {
      const record = plan.records[i] as SinkRecord;
      const item = classifyItem(items[i]);
      if (item.kind === 'written') continue;
      if (item.kind === 'rejected') {
        outcome.rejected.push({ record, reason: DeadLetterReason.REJECTED, detail: item.detail });
        continue;
      }
      outcome.pending.push(record);
      const reason = outcome.reasons.get(item.status);
      if (reason) reason.count++;
      else outcome.reasons.set(item.status, { count: 1, detail: item.detail });
    }
    return outcome;
  }

  return {
    name,

    async start(signal) {
      try {
        if (!options.installTemplate) {
          await client.info(undefined, { signal });
          return;
        }
        await client.indices.putIndexTemplate(
          {
            name: options.templateName,
            ...indexTemplateBody({
              indexPatterns: [indexName.pattern],
              priority: options.templatePriority,
              numberOfShards: options.numberOfShards,
              numberOfReplicas: options.numberOfReplicas,
              refreshIntervalMs: options.refreshIntervalMs,
              messageFieldType: options.messageFieldType,
            }),
          },
          { signal },
        );
        logger.info({ template: options.templateName, pattern: indexName.pattern }, 'index template installed');
      } catch (error) {
        const what = options.installTemplate ? `could not install index template "${options.templateName}"` : 'could not reach Elasticsearch';
        throw new SinkError(`elasticsearch sink "${name}": ${what}: ${describeRequestError(error)}`, {
          code: ErrorCode.SINK_UNAVAILABLE,
          retriable: isRetriableRequestError(error),
          cause: errorSummary(error),
        });
      }
    },

    async send(batch: Batch, signal: AbortSignal): Promise<SendResult> {
      const key = `${batch.topic}\n${batch.partition}`;
      if (batch.records.length === 0) return { status: 'delivered' };
      let records = batch.records;
      let replaysDropped = 0;
      const replayLimits = deps.replays;
      let replayState: ReplayState | undefined;
      if (replayLimits !== undefined) {
        replayState = replayStates.get(key) ?? new ReplayState();
        replayStates.set(key, replayState);
        // A retry sends the records left pending, which were kept the first time: the state has not
        // moved since, so they are kept again, and the highs of the first attempt still stand.
        const verdict = replayState.judge(records);
        records = verdict.kept;
        const previous = batchHighs.get(key);
        if (previous?.firstOffset === batch.firstOffset) replaysDropped = previous.dropped;
        else {
          batchHighs.set(key, { firstOffset: batch.firstOffset, highs: verdict.highs, dropped: verdict.dropped });
          replaysDropped = verdict.dropped;
        }
        if (records.length === 0) {
          batchHighs.delete(key);
          return { status: 'delivered', replaysDropped };
        }
      }
      const plans = planBulkRequests(records, indexName, options.maxRequestBytes);
      const outcomes: PlanOutcome[] = new Array<PlanOutcome>(plans.length);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < plans.length) {
          const i = next++;
          outcomes[i] = await sendPlan(plans[i] as BulkRequestPlan, signal);
        }
      };
      await Promise.all(Array.from({ length: Math.min(options.concurrency, plans.length) }, worker));

      const pending = outcomes.flatMap((o) => o.pending);
      const rejected = outcomes.flatMap((o) => o.rejected);
      const previous = retries.get(key);
      const retriedBefore = previous?.firstOffset === batch.firstOffset ? previous.records : 0;
      if (pending.length === 0) {
        retries.delete(key);
        const highs = batchHighs.get(key);
        batchHighs.delete(key);
        if (replayState !== undefined && replayLimits !== undefined && highs !== undefined) replayState.commit(highs.highs, now(), replayLimits);
        return {
          status: 'delivered',
          ...(replaysDropped > 0 ? { replaysDropped } : {}),
          ...(rejected.length > 0 ? { rejected } : {}),
          ...(retriedBefore > 0 ? { retried: retriedBefore } : {}),
        };
      }
      retries.set(key, { firstOffset: batch.firstOffset, records: retriedBefore + pending.length });
      const error = new SinkError(`elasticsearch: ${pending.length} of ${records.length} records not written: ${summarize(outcomes)}`, {
        code: ErrorCode.SINK_UNAVAILABLE,
        retriable: true,
      });
      return { status: 'retryable', error, pending, ...(rejected.length > 0 ? { rejected } : {}) };
    },

    release(topic, partition) {
      retries.delete(`${topic}\n${partition}`);
      replayStates.delete(`${topic}\n${partition}`);
      batchHighs.delete(`${topic}\n${partition}`);
    },

    async healthcheck(signal) {
      // Cluster health rather than a ping of `/`: some distributions (and proxies) do not serve `/`,
      // and a cluster without a master answers health with an error, which is what readiness wants.
      try {
        await client.cluster.health({ timeout: '5s' }, { signal });
      } catch (error) {
        throw new SinkError(`elasticsearch sink "${name}": health check failed: ${describeRequestError(error)}`, { code: ErrorCode.SINK_UNAVAILABLE, retriable: true, cause: errorSummary(error) });
      }
    },

    async close() {
      retries.clear();
      await client.close();
    },
  };
}

/** `429 ×12 (es_rejected_execution_exception: …), no response ×3 (ConnectionError: …)`. */
function summarize(outcomes: readonly PlanOutcome[]): string {
  const merged = new Map<number, { count: number; detail: string }>();
  for (const outcome of outcomes) {
    for (const [status, reason] of outcome.reasons) {
      const seen = merged.get(status);
      if (seen) seen.count += reason.count;
      else merged.set(status, { ...reason });
    }
  }
  return [...merged]
    .map(([status, { count, detail }]) => `${status === 0 ? 'no response' : `status ${status}`} ×${count} (${truncate(detail, 200)})`)
    .join(', ');
}

/**
 * One line about a failed request, without credentials: the HTTP status and Elasticsearch's error
 * for a response, the client's error name and message otherwise. The client's error objects carry
 * the whole request (body included) in `meta`, so they are never logged or attached as a cause.
 */
function describeRequestError(error: unknown): string {
  if (error instanceof errors.ResponseError) {
    const body = error.body as { error?: { type?: string; reason?: string } | string } | undefined;
    const es = typeof body?.error === 'object' ? `${body.error.type ?? 'error'}: ${body.error.reason ?? ''}` : typeof body?.error === 'string' ? body.error : '';
    return redactUrlCredentials(`HTTP ${error.statusCode ?? '?'}${es ? ` ${es}` : ''}`);
  }
  if (error instanceof Error) return redactUrlCredentials(`${error.name}: ${error.message}`);
  return redactUrlCredentials(String(error));
}

function isRetriableRequestError(error: unknown): boolean {
  if (error instanceof errors.ResponseError) {
    const status = error.statusCode ?? 0;
    return status === 408 || status === 429 || status >= 500;
  }
  return error instanceof errors.ConnectionError || error instanceof errors.TimeoutError || error instanceof errors.NoLivingConnectionsError;
}

/** A plain error holding only the description: the client's own carries the request in `meta`. */
function errorSummary(error: unknown): Error {
  return new Error(describeRequestError(error));
}

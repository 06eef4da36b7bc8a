import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { indexTemplateBody, KEYWORD_IGNORE_ABOVE, recordMappings } from '../../../aggregator/elasticsearch-template.js';
import { lineOf, sinkRecord, type SinkRecord } from '../../../aggregator/sink.js';
import { bulkBodyChunks, classifyItem, describeItemError, MAX_DETAIL_CHARS, planBulkRequests } from '../../../aggregator/sinks/elasticsearch.js';
import { compileIndexName, elasticsearchSinkOptionsSchema, indexNameProblems, sanitizeIndexValue } from '../../../aggregator/sinks/elasticsearch-options.js';
import { Field, KubernetesField, LogField } from '../../../shared/record.js';

function record(i: number, over: { namespace?: string; cluster?: string; timestamp?: string; message?: string } = {}): SinkRecord {
  const timestamp = over.timestamp ?? '2026-11-22T04:17:19.123456789Z';
  const namespace = over.namespace ?? 'payments';
  const cluster = over.cluster ?? 'prod-apne2';
  const eventId = `evt-${i}`;
  const doc = {
    [Field.TIMESTAMP]: timestamp,
    [Field.MESSAGE]: over.message ?? `line ${i} "quoted" ünïcödé`,
    [Field.STREAM]: 'stdout',
    [Field.EVENT_ID]: eventId,
    [Field.KUBERNETES]: { [KubernetesField.CLUSTER]: cluster, [KubernetesField.NAMESPACE]: namespace, [KubernetesField.LABELS]: { app: 'api' } },
    [Field.LOG]: { [LogField.FILE]: '/var/log/pods/x/0.log', [LogField.OFFSET]: i * 100 },
  };
  const line = Buffer.from(JSON.stringify(doc));
  return sinkRecord({ topic: 'logs.prod.payments', partition: 0, offset: i, index: 0 }, line, {
    timeMs: Date.parse(timestamp),
    eventId,
    cluster,
    namespace,
    pod: 'api',
    container: 'api',
  });
}

describe('index name templates', () => {
  it('renders namespace, cluster and the record\'s own UTC date', () => {
    const name = compileIndexName('logs-{cluster}-{namespace}-{yyyy.MM.dd}');
    assert.equal(name.render({ namespace: 'payments', cluster: 'prod', timeMs: Date.parse('2026-11-22T23:59:59.999Z') }), 'logs-prod-payments-2026.11.22');
    // Local midnight elsewhere is irrelevant: the day is UTC's.
    assert.equal(name.render({ namespace: 'payments', cluster: 'prod', timeMs: Date.parse('2026-11-23T00:00:00+09:00') }), 'logs-prod-payments-2026.11.22');
    assert.equal(name.pattern, 'logs-*-*-*');
    assert.equal(compileIndexName('k8s-{namespace}-{yyyy-MM-dd_HH}').render({ namespace: 'a', cluster: 'c', timeMs: Date.parse('2026-01-02T03:04:05Z') }), 'k8s-a-2026-01-02_03');
    assert.equal(compileIndexName('logs-{yyyy.MM}').render({ namespace: 'a', cluster: 'c', timeMs: Date.parse('2026-01-31T23:00:00Z') }), 'logs-2026.01');
    assert.equal(compileIndexName('logs-{namespace}{cluster}').pattern, 'logs-*');
  });

  it('lower-cases values and replaces characters an index name cannot hold', () => {
    assert.equal(sanitizeIndexValue('Prod/EU West#1'), 'prod_eu_west_1');
    assert.equal(sanitizeIndexValue('a*b?c"d<e>f|g,h\\i:j'), 'a_b_c_d_e_f_g_h_i_j');
    assert.equal(sanitizeIndexValue(''), '_');
    assert.equal(sanitizeIndexValue('x'.repeat(300)).length, 100);
    const name = compileIndexName('logs-{namespace}-{cluster}-{namespace}-{cluster}-{yyyy.MM.dd}');
    const long = 'n'.repeat(100);
    assert.equal(name.render({ namespace: long, cluster: long, timeMs: 0 }).length, 255);
  });

  it('lists every problem of an invalid template', () => {
    assert.deepEqual(indexNameProblems('logs-{namespace}-{yyyy.MM.dd}'), []);
    assert.match(indexNameProblems('{namespace}-logs').join(), /must start with/);
    assert.match(indexNameProblems('-logs').join(), /must start with/);
    assert.match(indexNameProblems('Logs-{namespace}').join(), /must start with/);
    assert.match(indexNameProblems('logs-{pod}').join(), /unknown placeholder \{pod\}/);
    assert.match(indexNameProblems('logs-{yyyy/MM}').join(), /unknown placeholder/);
    assert.match(indexNameProblems('logs-{.}').join(), /unknown placeholder/);
    assert.match(indexNameProblems('logs-App-{namespace}').join(), /only lower-case/);
    assert.match(indexNameProblems('logs-{namespace').join(), /only lower-case/);
    assert.match(indexNameProblems('logs x').join(), /only lower-case/);
    assert.throws(() => compileIndexName('logs-{pod}'), /unknown placeholder/);
  });
});

describe('elasticsearchSinkOptionsSchema', () => {
  it('fills defaults and rejects unknown keys and bad templates by path', () => {
    const options = elasticsearchSinkOptionsSchema.parse({ connection: { nodes: ['http://127.0.0.1:9200'] } });
    assert.equal(options.index, 'logship-{namespace}-{yyyy.MM.dd}');
    assert.equal(options.maxRequestBytes, 5 * 1024 * 1024);
    assert.equal(options.concurrency, 2);
    assert.equal(options.numberOfReplicas, 1);
    assert.equal(options.installTemplate, true);
    assert.ok(options.templatePriority > 100);
    assert.equal(compileIndexName(options.index).pattern, 'logship-*-*');
    const bad = elasticsearchSinkOptionsSchema.safeParse({ connection: { nodes: ['http://127.0.0.1:9200'] }, index: 'logs-{pod}', concurrency: 0, extra: 1 });
    assert.equal(bad.success, false);
    const paths = bad.error.issues.map((i) => i.path.join('.') || i.code);
    assert.ok(paths.includes('index'), paths.join());
    assert.ok(paths.includes('concurrency'), paths.join());
    assert.ok(paths.includes('unrecognized_keys'), paths.join());
  });
});

describe('bulk request planning', () => {
  it('sends each record\'s bytes untouched after an index action with _id = event_id', () => {
    const first = record(1);
    const second = record(2, { namespace: 'Web', timestamp: '2026-11-23T00:00:00.5Z' });
    const records = [first, second];
    const [plan, ...rest] = planBulkRequests(records, compileIndexName('logs-{namespace}-{yyyy.MM.dd}'), 5 * 1024 * 1024);
    assert.equal(rest.length, 0);
    assert.ok(plan);
    const body = Buffer.concat([...bulkBodyChunks(plan)]);
    assert.equal(body.length, plan.bytes);
    const lines = body.toString('utf8').split('\n');
    assert.equal(lines.pop(), '', 'the body ends with a newline');
    assert.deepEqual(JSON.parse(lines[0] ?? ''), { index: { _index: 'logs-payments-2026.11.22', _id: 'evt-1' } });
    assert.equal(lines[1], lineOf(first).toString('utf8'));
    assert.deepEqual(JSON.parse(lines[2] ?? ''), { index: { _index: 'logs-web-2026.11.23', _id: 'evt-2' } });
    assert.ok(body.subarray(body.length - 1 - lineOf(second).length, body.length - 1).equals(lineOf(second)));
  });

  it('splits a batch into requests no larger than maxRequestBytes, in order, a larger record alone', () => {
    const records = Array.from({ length: 200 }, (_, i) => record(i, { message: 'x'.repeat(i % 7 === 0 ? 300 : 50) }));
    records.splice(100, 0, record(1000, { message: 'y'.repeat(5000) }));
    const max = 2048;
    const plans = planBulkRequests(records, compileIndexName('logs-{namespace}'), max);
    assert.ok(plans.length > 10);
    for (const plan of plans) {
      assert.ok(plan.bytes <= max || plan.records.length === 1, `request of ${plan.bytes} bytes with ${plan.records.length} records`);
      assert.equal(Buffer.concat([...bulkBodyChunks(plan, 512)]).length, plan.bytes);
    }
    assert.deepEqual(plans.flatMap((p) => p.records), records);
    assert.ok(plans.some((p) => p.records.length === 1 && p.bytes > max));
  });

  it('streams the same body in chunks of any size, each ending at a record boundary', () => {
    const records = Array.from({ length: 60 }, (_, i) => record(i, { message: 'z'.repeat(i % 5 === 0 ? 700 : 40) }));
    const [plan] = planBulkRequests(records, compileIndexName('logs-{namespace}'), 5 * 1024 * 1024);
    assert.ok(plan);
    const whole = Buffer.concat([...bulkBodyChunks(plan)]);
    assert.equal(whole.length, plan.bytes);
    for (const chunkBytes of [1, 300, 1000, 4096]) {
      const chunks: Buffer[] = [...bulkBodyChunks(plan, chunkBytes)];
      assert.ok(Buffer.concat(chunks).equals(whole), `chunks of ${chunkBytes} bytes`);
      for (const chunk of chunks) {
        assert.equal(chunk.at(-1), 0x0a);
        // Over the size only when one action and record alone are larger.
        if (chunk.length > chunkBytes) assert.equal(chunk.toString('utf8').split('\n').length, 3, `a ${chunk.length}-byte chunk of ${chunkBytes}`);
      }
    }
  });
});

describe('bulk item classification', () => {
  it('writes 2xx, keeps 429 and 5xx pending, rejects other 4xx with type and reason', () => {
    assert.deepEqual(classifyItem({ index: { status: 201 } }), { kind: 'written' });
    assert.deepEqual(classifyItem({ index: { status: 200 } }), { kind: 'written' });
    assert.deepEqual(classifyItem({ index: { status: 429, error: { type: 'es_rejected_execution_exception', reason: 'rejected execution' } } }), {
      kind: 'pending',
      status: 429,
      detail: 'es_rejected_execution_exception: rejected execution',
    });
    assert.equal(classifyItem({ index: { status: 503, error: { type: 'unavailable_shards_exception', reason: 'primary shard is not active' } } }).kind, 'pending');
    assert.deepEqual(
      classifyItem({
        index: {
          status: 400,
          error: {
            type: 'document_parsing_exception',
            reason: '[1:2] failed to parse field [log.offset] of type [long]',
            caused_by: { type: 'illegal_argument_exception', reason: 'For input string: "abc"' },
          },
        },
      }),
      {
        kind: 'rejected',
        status: 400,
        detail: 'document_parsing_exception: [1:2] failed to parse field [log.offset] of type [long] (caused by illegal_argument_exception: For input string: "abc")',
      },
    );
    assert.equal(classifyItem({ index: { status: 409 } }).kind, 'rejected');
    // A response without a status for an item is never taken as written.
    assert.equal(classifyItem({}).kind, 'pending');
    assert.equal(classifyItem(undefined).kind, 'pending');
  });

  it('cuts long error details', () => {
    const detail = describeItemError({ type: 'mapper_parsing_exception', reason: 'r'.repeat(5000) }, 400);
    assert.equal(detail.length, MAX_DETAIL_CHARS);
    assert.ok(detail.startsWith('mapper_parsing_exception: rrr'));
    assert.equal(describeItemError(undefined, 400), 'status 400');
  });
});

describe('index template', () => {
  it('maps the record with a fixed mapping: flattened maps, date_nanos, keywords with ignore_above', () => {
    const body = indexTemplateBody({ indexPatterns: ['logs-*-*'], priority: 200, numberOfShards: 2, numberOfReplicas: 0, refreshIntervalMs: 1500, messageFieldType: 'text' });
    assert.deepEqual(body.index_patterns, ['logs-*-*']);
    assert.equal(body.priority, 200);
    assert.deepEqual(body.template?.settings?.index, { number_of_shards: 2, number_of_replicas: 0, refresh_interval: '1500ms', mapping: { total_fields: { limit: 500 } } });
    const mappings = body.template.mappings;
    assert.equal(mappings?.dynamic, false);
    const props = mappings.properties ?? {};
    assert.deepEqual(props[Field.TIMESTAMP], { type: 'date_nanos' });
    assert.deepEqual(props[Field.MESSAGE], { type: 'text' });
    const k8s = (props[Field.KUBERNETES] as { properties: Record<string, { type: string; ignore_above?: number }> }).properties;
    for (const field of [KubernetesField.LABELS, KubernetesField.ANNOTATIONS, KubernetesField.NAMESPACE_LABELS]) {
      assert.deepEqual(k8s[field], { type: 'flattened', ignore_above: KEYWORD_IGNORE_ABOVE }, field);
    }
    for (const field of [KubernetesField.CLUSTER, KubernetesField.NAMESPACE, KubernetesField.POD, KubernetesField.POD_UID, KubernetesField.IMAGE]) {
      assert.equal(k8s[field]?.type, 'keyword', field);
    }
    const log = (props[Field.LOG] as { properties: Record<string, { type: string }> }).properties;
    assert.deepEqual([log[LogField.FILE]?.type, log[LogField.OFFSET]?.type, log[LogField.FLAGS]?.type], ['keyword', 'long', 'keyword']);
    assert.deepEqual(recordMappings('match_only_text').properties?.[Field.MESSAGE], { type: 'match_only_text' });
  });
});

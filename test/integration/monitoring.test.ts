/**
 * The monitoring assets hold together: the alert rules pass `promtool check rules` and their unit
 * tests, every dashboard panel has a query and every query is valid PromQL, and every metric the
 * rules and the dashboard name is one the real agent and aggregator binaries export on /metrics.
 *
 * promtool comes from Debian's prometheus package; `scripts/install-promtool.sh` installs it when it
 * is missing (as root, through apt-get).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { REPO_ROOT } from '../../scripts/stack/context.js';
import { agentConfigFile, appendLines, cri, makeRoot, metricValue, podDir } from '../helpers/agent.js';
import { aggregatorConfigFile, deleteS3Prefix, RecordProducer, startAggregatorProcess, testS3Client } from '../helpers/aggregator.js';
import { startLogshipProcess, type LogshipProcess } from '../helpers/process.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const ALERTS_FILE = join(REPO_ROOT, 'monitoring', 'alerts.yaml');
const ALERTS_TEST_FILE = join(REPO_ROOT, 'monitoring', 'alerts.test.yaml');
const DASHBOARD_FILE = join(REPO_ROOT, 'monitoring', 'grafana-dashboard.json');
const INSTALL_PROMTOOL = join(REPO_ROOT, 'scripts', 'install-promtool.sh');
const GUIDE_FILE = join(REPO_ROOT, 'docs', 'operating.md');

/** Labels Prometheus attaches to every scraped series (target labels), not exported by the binaries. */
const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'node', '__name__']);
/** Series Prometheus makes itself. */
const SYNTHETIC_METRICS = new Set(['up']);
/** Words that look like identifiers in PromQL but are not metric names once function calls are excluded. */
const PROMQL_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];
const LINES = 20;

interface CommandResult {
  code: number;
  /** Standard output alone. */
  stdout: string;
  /** Standard output, then standard error. */
  output: string;
}

function run(command: string, args: string[], timeoutMs = 60_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: REPO_ROOT, timeout: timeoutMs }, (error, stdout, stderr) => {
      // A non-zero exit is a result; failing to start (or a timeout) is an error.
      if (error && typeof error.code !== 'number') reject(new Error(`${command} ${args.join(' ')}: ${error.message}`, { cause: error }));
      else resolve({ code: error ? Number(error.code) : 0, stdout, output: `${stdout}${stderr}` });
    });
  });
}

// ---- Reading PromQL (just enough to find metric names and label matchers)

/** Metric names an expression reads: identifiers that are not functions, keywords, labels, durations or strings. */
function metricNames(expr: string): Set<string> {
  const names = new Set<string>();
  // `{__name__=~"a|b"}` names metrics inside a string.
  for (const match of expr.matchAll(/__name__\s*=~?\s*"([^"]*)"/g)) {
    for (const alternative of (match[1] ?? '').split('|')) if (/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(alternative)) names.add(alternative);
  }
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\$\{\w+\}|\$\w+/g, '1')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\b\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?\b/gi, ' ');
  for (const match of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const word = match[0];
    const rest = stripped.slice(match.index + word.length);
    if (/^\s*\(/.test(rest) || PROMQL_KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return names;
}

/** Label names matched in selectors attached to a metric name: `name{label="…", other=~"…"}`. */
function selectorLabels(expr: string): { metric: string; labels: string[] }[] {
  const result: { metric: string; labels: string[] }[] = [];
  for (const match of expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const labels = [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1] ?? '');
    result.push({ metric: match[1] ?? '', labels });
  }
  return result;
}

/** A dashboard expression with Grafana's variables replaced by values Prometheus accepts. */
function substituteGrafanaVariables(expr: string): string {
  return expr
    .replace(/"(?:[^"\\]|\\.)*"/g, (literal) => literal.replace(/\$\{\w+\}|\$\w+/g, '.*'))
    .replace(/\$__rate_interval|\$__interval|\$__range/g, '5m')
    .replace(/\$\{?topN\}?/g, '10');
}

// ---- What the rules and the dashboard hold

interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[];
}

interface DashboardTarget {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string };
}

interface DashboardPanel {
  id?: number;
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: DashboardTarget[];
  gridPos?: { h: number; w: number; x: number; y: number };
  panels?: DashboardPanel[];
}

interface DashboardVariable {
  name: string;
  type: string;
  query?: string | { query?: string };
}

interface Dashboard {
  schemaVersion: number;
  uid: string;
  title: string;
  panels: DashboardPanel[];
  templating: { list: DashboardVariable[] };
}

/** The anchors of docs/operating.md's headings, as GitHub renders them. */
function guideAnchors(): Set<string> {
  const guide = readFileSync(GUIDE_FILE, 'utf8');
  return new Set([...guide.matchAll(/^#+ (.+)$/gm)].map((m) => (m[1] ?? '').toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-')));
}

function readRules(): RuleFile {
  return parse(readFileSync(ALERTS_FILE, 'utf8')) as RuleFile;
}

function readDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
}

/** Every panel but rows, including those inside collapsed rows. */
function allPanels(dashboard: Dashboard): DashboardPanel[] {
  return dashboard.panels.flatMap((p) => (p.type === 'row' ? (p.panels ?? []) : [p]));
}

/** Each PromQL expression with where it comes from: alert and recording rules, panel targets, and the selectors of `label_values()` variables. */
function allExpressions(): { where: string; expr: string }[] {
  const expressions: { where: string; expr: string }[] = [];
  for (const group of readRules().groups) {
    for (const rule of group.rules) expressions.push({ where: `alerts.yaml ${rule.alert ?? rule.record ?? '?'}`, expr: rule.expr });
  }
  const dashboard = readDashboard();
  for (const panel of allPanels(dashboard)) {
    for (const target of panel.targets ?? []) expressions.push({ where: `dashboard "${panel.title ?? ''}" ${target.refId ?? ''}`, expr: target.expr ?? '' });
  }
  for (const variable of dashboard.templating.list) {
    const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
    const selector = /^label_values\((.*),\s*\w+\)$/.exec(query ?? '')?.[1];
    if (variable.type === 'query' && selector !== undefined) expressions.push({ where: `dashboard variable ${variable.name}`, expr: selector });
  }
  return expressions;
}

// ---- What a binary exports

interface Exposition {
  /** Metric family name → type, from the `# TYPE` lines (printed for every registered metric, samples or not). */
  types: Map<string, string>;
  /** Metric family name → label names seen on its samples. */
  labels: Map<string, Set<string>>;
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const labels = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type?.[1] !== undefined && type[2] !== undefined) {
      types.set(type[1], type[2]);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s/.exec(line);
    if (sample?.[1] === undefined) continue;
    const family = familyOf(sample[1], types) ?? sample[1];
    const set = labels.get(family) ?? new Set<string>();
    for (const m of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) if (m[1] !== undefined) set.add(m[1]);
    labels.set(family, set);
  }
  return { types, labels };
}

/** The family a sample or query name belongs to: itself, or a histogram's (summary's) base name without `_bucket`/`_sum`/`_count`. */
function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of HISTOGRAM_SUFFIXES) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const type = types.get(base);
    if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
  }
  return undefined;
}

async function scrape(opsUrl: string): Promise<Exposition> {
  const response = await fetch(`${opsUrl}/metrics`);
  assert.equal(response.status, 200);
  return parseExposition(await response.text());
}

describe('monitoring: alert rules and Grafana dashboard', () => {
  let promtool = 'promtool';

  before(async () => {
    // Installs Debian's prometheus package when promtool is missing (idempotent), and prints where it
    // is on standard output; apt's progress goes to standard error.
    const installed = await run('bash', [INSTALL_PROMTOOL], 10 * 60_000);
    assert.equal(installed.code, 0, `install-promtool.sh failed:\n${installed.output}`);
    promtool = installed.stdout.trim().split('\n').pop() ?? 'promtool';
  });

  it('reads metric names and label matchers out of PromQL', () => {
    assert.deepEqual(
      [...metricNames('histogram_quantile(0.99, sum by (le, sink) (rate(a_seconds_bucket{job=~"$job", sink="x"}[$__rate_interval]))) > 900')],
      ['a_seconds_bucket'],
    );
    assert.deepEqual([...metricNames('b > 256 * 1024 and on (job, instance) (c > 1e6 or rate(d_total[10m]) > 0) unless e offset 10m')], ['b', 'c', 'd_total', 'e']);
    assert.deepEqual([...metricNames('topk($topN, max by (topic) (f)) / ignoring(result) g:recorded')], ['f', 'g:recorded']);
    assert.deepEqual([...metricNames('{__name__=~"h|i", job=~"$job"}')], ['h', 'i']);
    assert.deepEqual(selectorLabels('rate(x_total{result="rejected", job=~"a"}[5m]) or y'), [{ metric: 'x_total', labels: ['result', 'job'] }]);
  });

  it('passes promtool check rules, and the rules unit tests', async (t) => {
    const checked = await run(promtool, ['check', 'rules', ALERTS_FILE]);
    t.diagnostic(checked.output.trim());
    assert.equal(checked.code, 0, checked.output);
    assert.match(checked.output, /SUCCESS: \d+ rules found/);

    const tested = await run(promtool, ['test', 'rules', ALERTS_TEST_FILE]);
    assert.equal(tested.code, 0, tested.output);
    assert.match(tested.output, /SUCCESS/);
  });

  it('gives every alert a severity, a summary, a description and a runbook section of docs/operating.md', () => {
    const alerts = readRules().groups.flatMap((g) => g.rules.filter((r) => r.alert !== undefined));
    assert.ok(alerts.length >= 8, `${String(alerts.length)} alerts`);
    const anchors = guideAnchors();
    for (const alert of alerts) {
      assert.match(alert.labels?.severity ?? '', /^(critical|warning|info)$/, `${alert.alert ?? ''} severity`);
      assert.ok(alert.annotations?.summary, `${alert.alert ?? ''} summary`);
      assert.ok(alert.annotations.description, `${alert.alert ?? ''} description`);
      const anchor = /^docs\/operating\.md#(.+)$/.exec(alert.annotations.runbook_url ?? '')?.[1];
      assert.ok(anchor !== undefined && anchors.has(anchor), `${alert.alert ?? ''}: runbook_url ${alert.annotations.runbook_url ?? '(none)'} is not a section of docs/operating.md`);
    }
  });

  it('has an operating guide whose links reach its own sections and files that exist', () => {
    const guide = readFileSync(GUIDE_FILE, 'utf8');
    const anchors = guideAnchors();
    const broken: string[] = [];
    for (const [, target] of guide.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (target === undefined || /^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split('#');
      if (path !== undefined && path !== '' && !existsSync(join(REPO_ROOT, 'docs', path))) broken.push(target);
      else if ((path === undefined || path === '') && anchor !== undefined && !anchors.has(anchor)) broken.push(target);
    }
    assert.deepEqual(broken, []);
  });

  it('has a dashboard whose every panel has a valid PromQL target on the datasource variable', async () => {
    const dashboard = readDashboard();
    assert.ok(dashboard.schemaVersion >= 36, `schemaVersion ${String(dashboard.schemaVersion)}`);
    const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    assert.equal(variables.get('datasource')?.type, 'datasource');
    assert.equal(variables.get('datasource')?.query, 'prometheus');
    for (const name of ['job', 'namespace', 'pod']) assert.equal(variables.get(name)?.type, 'query', `variable ${name}`);

    const panels = allPanels(dashboard);
    assert.ok(panels.length >= 20, `${String(panels.length)} panels`);
    const ids = new Set<number>();
    for (const panel of panels) {
      const title = panel.title ?? `panel ${String(panel.id)}`;
      assert.ok(panel.id !== undefined && !ids.has(panel.id), `${title}: missing or duplicate id`);
      ids.add(panel.id);
      assert.ok(panel.gridPos, `${title}: no gridPos`);
      assert.equal(panel.datasource?.uid, '${datasource}', `${title}: datasource`);
      const targets = panel.targets ?? [];
      assert.ok(targets.length > 0, `${title}: no target`);
      assert.equal(new Set(targets.map((t) => t.refId)).size, targets.length, `${title}: duplicate refId`);
      for (const target of targets) assert.ok(target.expr !== undefined && target.expr.trim() !== '', `${title} ${target.refId ?? ''}: empty expr`);
    }

    // promtool parses every expression (variables substituted) as a recording rule.
    const expressions = allExpressions().filter((e) => e.where.startsWith('dashboard'));
    const rules = expressions.map((e, i) => {
      const expr = substituteGrafanaVariables(e.expr);
      assert.ok(!expr.includes('$'), `${e.where}: unknown variable in ${e.expr}`);
      return { record: `dashboard:expression_${String(i)}`, expr };
    });
    const dir = mkdtempSync(join(tmpdir(), 'logship-dashboard-rules-'));
    try {
      const file = join(dir, 'dashboard-rules.yaml');
      writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
      const checked = await run(promtool, ['check', 'rules', file]);
      const named = [...checked.output.matchAll(/dashboard:expression_(\d+)/g)].map((m) => `${m[0]} is ${expressions[Number(m[1])]?.where ?? '?'}`);
      assert.equal(checked.code, 0, `${checked.output}\n${named.join('\n')}`);
      assert.match(checked.output, new RegExp(`SUCCESS: ${String(rules.length)} rules found`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('every metric named is exported by the binaries', () => {
    const name = uniqueName('it-monitoring');
    const namespace = 'ns-mon';
    const topic = `${name}.${namespace}`;
    const deadLetterTopic = `${name}-deadletter`;
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const producer = new RecordProducer();
    const s3 = testS3Client();
    let agent: LogshipProcess | undefined;
    let aggregator: LogshipProcess | undefined;

    before(async () => {
      await producer.connect();
      await producer.createTopics([{ topic, partitions: 1 }]);
    });

    after(async () => {
      await agent?.stop();
      await aggregator?.stop();
      await producer.deleteTopics([topic, deadLetterTopic]);
      await producer.close();
      await deleteS3Prefix(s3, name);
      s3.destroy();
      rmSync(root, { recursive: true, force: true });
      rmSync(stateDir, { recursive: true, force: true });
    });

    it('declares every metric the rules and the dashboard read, with the labels they match on', async (t) => {
      // A little work first, so that labelled series exist: lines through the agent to Kafka, then to
      // S3 through the aggregator, and one message that is not JSON (a dead letter).
      const file = join(podDir(root, namespace, 'api-0', 'uid-mon-0', 'app').dir, '0.log');
      appendLines(file, Array.from({ length: LINES }, (_, i) => cri(`monitoring line ${String(i)}`, { stream: i % 2 === 0 ? 'stdout' : 'stderr' })));
      agent = startLogshipProcess('agent', agentConfigFile({ root, stateDir, topicPrefix: name }));
      aggregator = startAggregatorProcess(
        aggregatorConfigFile({ groupId: `${name}-group`, topics: [topic], s3Prefix: name, deadLetterTopic, s3Sink: { batch: { maxAgeMs: 300 } } }),
      );
      const [agentUrl, aggregatorUrl] = await Promise.all([agent.opsUrl, aggregator.opsUrl]);
      await producer.sendRaw(topic, ['this is not a record']);
      await waitFor('the agent to produce every line', async () => (await metricValue(agentUrl, 'logship_agent_records_produced_total')) >= LINES, 60_000, 200);
      await waitFor('the aggregator to write every line to S3', async () => (await metricValue(aggregatorUrl, 'logship_aggregator_sink_records_total', { sink: 'archive' })) >= LINES, 60_000, 200);
      await waitFor('a dead letter', async () => (await metricValue(aggregatorUrl, 'logship_aggregator_dead_letters_total', { reason: 'invalid_json' })) >= 1, 60_000, 200);

      const exported = { agent: await scrape(agentUrl), aggregator: await scrape(aggregatorUrl) };
      const recorded = new Set(readRules().groups.flatMap((g) => g.rules.flatMap((r) => (r.record === undefined ? [] : [r.record]))));
      const problems: string[] = [];
      const withoutSamples = new Set<string>();
      let checked = 0;
      for (const { where, expr } of allExpressions()) {
        for (const metric of metricNames(expr)) {
          if (SYNTHETIC_METRICS.has(metric) || recorded.has(metric)) continue;
          checked++;
          // The agent's and the aggregator's own metrics come from that binary; process and Node.js metrics from both.
          const owners = metric.startsWith('logship_agent_') ? [exported.agent] : metric.startsWith('logship_aggregator_') ? [exported.aggregator] : [exported.agent, exported.aggregator];
          for (const owner of owners) {
            if (familyOf(metric, owner.types) === undefined) problems.push(`${where}: ${metric} is not exported`);
          }
        }
        for (const { metric, labels } of selectorLabels(expr)) {
          if (SYNTHETIC_METRICS.has(metric) || recorded.has(metric)) continue;
          const owner = metric.startsWith('logship_agent_') ? exported.agent : exported.aggregator;
          const family = familyOf(metric, owner.types);
          const seen = family === undefined ? undefined : owner.labels.get(family);
          if (seen === undefined) {
            withoutSamples.add(metric);
            continue;
          }
          for (const label of labels) {
            if (!TARGET_LABELS.has(label) && !(label === 'le' && metric.endsWith('_bucket')) && !seen.has(label)) problems.push(`${where}: ${metric} has no label ${label}`);
          }
        }
      }
      t.diagnostic(`${String(checked)} metric references checked; label matchers not checkable (no samples yet): ${[...withoutSamples].sort().join(', ') || 'none'}`);
      assert.deepEqual(problems, []);
      assert.ok(checked > 50, `${String(checked)} references`);

      // The dashboard's headline series have samples after that little work.
      assert.ok(exported.aggregator.labels.get('logship_aggregator_end_to_end_delay_seconds')?.has('sink'), 'end-to-end delay observed per sink');
      assert.ok(exported.aggregator.labels.get('logship_aggregator_consumer_lag')?.has('partition'), 'consumer lag per partition');
      assert.ok(exported.agent.labels.get('logship_agent_errors_total')?.has('reason'), 'agent errors by reason');
    });
  });
});

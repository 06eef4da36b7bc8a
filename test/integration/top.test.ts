/**
 * `logship-agent top` in a real terminal: tmux gives it an 80×24 pseudo-terminal, the command runs
 * from the bundle the images ship (scripts/bundle.ts) under Node's permission model with reading
 * allowed and writing to the filesystem denied (what a read-only root filesystem allows), against a
 * live agent shipping to the stack's Kafka. The screen must show the agent's real counts as they grow
 * (the totals equal to the lines written), a rate while lines arrive, the file tracked, no errors, the
 * process' memory and CPU, fit 80 columns, and the command must exit 0 on `q`. `logship-aggregator
 * top --once` (no terminal: one plain frame) must show a live aggregator's sink, lag and dead letters.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bundleBinaries } from '../../scripts/bundle.js';
import { agentConfigFile, appendLines, cri, makeRoot, metricValue, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { aggregatorConfigFile, deleteS3Prefix, logRecord, RecordProducer, startAggregatorProcess, testS3Client } from '../helpers/aggregator.js';
import type { LogshipProcess } from '../helpers/process.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const POD_UID = '44444444-4444-4444-8444-444444444444';
/** Node's permission model: reading anywhere, no filesystem writes, no child processes, no workers. */
const NO_WRITES = ['--experimental-permission', '--allow-fs-read=*', '--disable-warning=ExperimentalWarning'];

/** The bundle the images ship, made once for both suites. */
const appDir = mkdtempSync(join(tmpdir(), 'logship-top-bundle-'));
let bundled: Promise<unknown> | undefined;
const bundleOnce = (): Promise<unknown> => (bundled ??= bundleBinaries(appDir));
after(() => rmSync(appDir, { recursive: true, force: true }));

/** One tmux server of the test's own (its own socket), so that nothing touches a user's sessions. */
class Terminal {
  private readonly socket = uniqueName('logship-top');

  constructor(command: string, columns = 80, rows = 24) {
    this.tmux('new-session', '-d', '-s', 'top', '-x', String(columns), '-y', String(rows), command);
  }

  tmux(...args: string[]): string {
    return execFileSync('tmux', ['-L', this.socket, ...args], { encoding: 'utf8' });
  }

  /** The visible screen, wrapped lines joined (a line wider than the terminal shows as one long line). */
  screen(): string[] {
    return this.tmux('capture-pane', '-p', '-J', '-t', 'top').split('\n');
  }

  close(): void {
    spawnSync('tmux', ['-L', this.socket, 'kill-server'], { stdio: 'ignore' });
  }
}

/** `  lines read    12.3k/s    1.23k` → { rate: '12.3k/s', total: '1.23k' } */
function row(screen: readonly string[], label: string): { rate: string; total: string } | undefined {
  const line = screen.find((l) => l.startsWith(`  ${label} `));
  if (line === undefined) return undefined;
  const cells = line.slice(label.length + 2).trim().split(/\s+/);
  return { rate: cells[0] ?? '', total: cells[1] ?? '' };
}

describe('logship-agent top', () => {
  const topicPrefix = uniqueName('it-top');
  const topic = `${topicPrefix}.ns-top`;
  const collector = new RecordCollector();
  const exitFile = join(mkdtempSync(join(tmpdir(), 'logship-top-exit-')), 'code');
  let agent: AgentProcess | undefined;
  let terminal: Terminal | undefined;

  before(async () => {
    await bundleOnce();
    await collector.start([topic]);
  });
  after(async () => {
    terminal?.close();
    await agent?.stop();
    await collector.stop([topic]);
  });

  it('the permission model used below does deny writes', () => {
    const attempt = spawnSync(process.execPath, [...NO_WRITES, '-e', `require('node:fs').writeFileSync(${JSON.stringify(join(appDir, 'probe'))}, 'x')`], { encoding: 'utf8' });
    assert.notEqual(attempt.status, 0);
    assert.match(attempt.stderr, /ERR_ACCESS_DENIED/);
  });

  it('shows a live agent\'s counts moving, fits 80 columns, writes no file, and quits on q', async () => {
    const pod = podDir(makeRoot(), 'ns-top', 'web-1', POD_UID, 'app');
    const file = join(pod.dir, '0.log');
    appendLines(file, Array.from({ length: 300 }, (_, i) => cri(`first-${i}`)));
    const root = join(pod.dir, '..', '..');
    agent = startAgentProcess(agentConfigFile({ root, stateDir: mkdtempSync(join(tmpdir(), 'logship-top-state-')), topicPrefix }));
    const url = await agent.opsUrl;

    const top = [process.execPath, ...NO_WRITES, join(appDir, 'agent.mjs'), 'top', '--url', url].map((a) => `'${a}'`).join(' ');
    terminal = new Terminal(`${top}; echo $? > '${exitFile}'`);
    const term = terminal;

    // The first batch: the screen's totals reach exactly what was written and shipped.
    const first = await waitFor('the screen to show the 300 lines read and produced, with rates (a second frame)', () => {
      const screen = term.screen();
      const lines = row(screen, 'lines read');
      return lines?.total === '300' && lines.rate !== '…' && row(screen, 'records produced')?.total === '300' ? screen : undefined;
    }, 60_000);
    assert.match(first[0] ?? '', new RegExp(`^logship-agent · ${url.replace(/[.]/g, '\\.')} · up \\d`));
    assert.match(first.find((l) => l.startsWith('  files tracked')) ?? '', /files tracked\s+1 \(1 open\)$/);
    assert.match(first.find((l) => l.startsWith('  errors')) ?? '', /errors\s+none$/);
    assert.match(first.find((l) => l.startsWith('  lost bytes')) ?? '', /lost bytes\s+0$/);
    assert.match(first.find((l) => l.startsWith('  Kafka errors')) ?? '', /Kafka errors\s+none$/);
    assert.match(first.find((l) => l.startsWith('  stalled topics')) ?? '', /stalled topics\s+0$/);
    assert.match(first.find((l) => l.startsWith('  process')) ?? '', /RSS \d+(\.\d+)? MiB · heap \d+(\.\d+)? MiB · CPU \d+\.\d%$/);
    for (const line of first) assert.ok(line.length <= 80, `a line wider than 80 columns: ${line}`);

    // The second batch: a rate while the lines arrive, then the new totals.
    appendLines(file, Array.from({ length: 200 }, (_, i) => cri(`second-${i}`)));
    const rate = await waitFor('a non-zero rate of lines read', () => {
      const r = row(term.screen(), 'lines read')?.rate;
      return r !== undefined && /^[\d.]+k?\/s$/.test(r) && r !== '0/s' ? r : undefined;
    }, 30_000, 50);
    assert.ok(Number.parseFloat(rate) > 0);
    await waitFor('the screen to show 500 lines read', () => row(term.screen(), 'lines read')?.total === '500', 30_000);
    await waitFor('the rate to fall back to 0 once the lines are read', () => row(term.screen(), 'lines read')?.rate === '0/s', 30_000);
    await collector.waitForCount(500);

    term.tmux('send-keys', '-t', 'top', 'q');
    await waitFor('top to exit', () => existsSync(exitFile) && readFileSync(exitFile, 'utf8').trim() !== '', 10_000);
    assert.equal(readFileSync(exitFile, 'utf8').trim(), '0', 'top exits 0 on q');
  });
});

describe('logship-aggregator top', () => {
  const topic = uniqueName('it-top-aggregator');
  const prefix = uniqueName('it-top');
  const producer = new RecordProducer();
  const s3 = testS3Client();
  let aggregator: LogshipProcess | undefined;

  before(async () => {
    await bundleOnce();
    await producer.connect();
    await producer.createTopics([{ topic, partitions: 3 }]);
  });
  after(async () => {
    await aggregator?.stop();
    await producer.deleteTopics([topic]);
    await producer.close();
    await deleteS3Prefix(s3, prefix);
    s3.destroy();
  });

  it('prints one frame with the sink\'s records, the lag and the dead letters of a live aggregator (--once, piped)', async () => {
    aggregator = startAggregatorProcess(aggregatorConfigFile({ groupId: uniqueName('it-top-group'), topics: [topic], s3Prefix: prefix, deadLetterTopic: `${topic}.dlq` }));
    const url = await aggregator.opsUrl;
    const now = Date.now();
    await producer.send(topic, Array.from({ length: 400 }, (_, i) => logRecord(i, 'ns-top', now - i * 1000)));
    await waitFor('the S3 sink to write 400 records', async () => (await metricValue(url, 'logship_aggregator_sink_records_total', { sink: 'archive' })) === 400, 60_000);
    await waitFor('the lag to be 0', async () => (await metricValue(url, 'logship_aggregator_consumer_lag')) === 0, 30_000);

    const result = spawnSync(process.execPath, [...NO_WRITES, join(appDir, 'aggregator.mjs'), 'top', '--url', url, '--once'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(result.status, 0, result.stderr);
    const screen = result.stdout.trimEnd().split('\n');
    assert.match(screen[0] ?? '', new RegExp(`^logship-aggregator · ${url.replace(/[.]/g, '\\.')} · up \\d`));
    assert.deepEqual(row(screen, 'records in'), { rate: '0/s', total: '400' });
    assert.match(screen.find((l) => l.startsWith('  archive')) ?? '', /^ {2}archive +0\/s +0 B\/s +400 +0 +0 +–$/, 'records/s, bytes/s, records, retries, errors, no delay in an idle interval');
    const partitions = await metricValue(url, 'logship_aggregator_assigned_partitions');
    assert.ok(partitions > 0);
    assert.match(screen.find((l) => l.startsWith('  consumer lag')) ?? '', new RegExp(`consumer lag +0 messages · ${partitions} partitions$`));
    assert.match(screen.find((l) => l.startsWith('  dead letters')) ?? '', /dead letters +none$/);
    assert.match(screen.find((l) => l.startsWith('  process')) ?? '', /RSS \d+(\.\d+)? MiB · heap \d+(\.\d+)? MiB · CPU \d+\.\d%$/);
    for (const line of screen) assert.ok(line.length <= 80, `a line wider than 80 columns: ${line}`);
  });
});

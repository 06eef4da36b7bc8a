import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Scrape } from '../../../shared/top/prom-text.js';
import { agentView, aggregatorView, formatBytes, formatCount, formatSeconds, MetricWindow, render, WIDTH } from '../../../shared/top/views.js';

const T0 = Date.parse('2026-12-07T12:00:00Z');

function aggregatorText(records: number, bucketsLe: Record<string, number>, lagA: number): string {
  const buckets = Object.entries(bucketsLe).map(([le, n]) => `logship_aggregator_end_to_end_delay_seconds_bucket{le="${le}",sink="archive"} ${n}`);
  return [
    '# HELP logship_aggregator_records_in_total Records decoded from Kafka messages (poison excluded).',
    '# TYPE logship_aggregator_records_in_total counter',
    `logship_aggregator_records_in_total ${records}`,
    `logship_aggregator_messages_in_total ${records / 10}`,
    `logship_aggregator_bytes_in_total ${records * 400}`,
    `logship_aggregator_sink_records_total{sink="archive"} ${records}`,
    `logship_aggregator_sink_records_total{sink="search-with-a-very-long-sink-name"} ${records - 5}`,
    `logship_aggregator_sink_bytes_total{sink="archive"} ${records * 400}`,
    'logship_aggregator_sink_errors_total{sink="archive",result="retryable"} 2',
    ...buckets,
    `logship_aggregator_end_to_end_delay_seconds_count{sink="archive"} ${bucketsLe['+Inf'] ?? 0}`,
    `logship_aggregator_consumer_lag{topic="logs.prod.web",partition="0"} ${lagA}`,
    'logship_aggregator_consumer_lag{topic="logs.prod.web",partition="1"} 3',
    'logship_aggregator_assigned_partitions 6',
    'logship_aggregator_dead_letters_total{reason="rejected",sink="search"} 4',
    'logship_aggregator_dead_letters_total{reason="invalid_json",sink=""} 0',
    `process_cpu_seconds_total ${records / 100_000}`,
    'process_resident_memory_bytes 83886080',
    `process_start_time_seconds ${T0 / 1000 - 3_725}`,
    'logship_weird{label="a \\"quoted\\" value"} NaN',
  ].join('\n');
}

describe('top: reading /metrics', () => {
  it('parses samples, labels with escapes, and sums by label', () => {
    const scrape = new Scrape(aggregatorText(1000, { '1': 0, '+Inf': 0 }, 7), T0);
    assert.equal(scrape.sum('logship_aggregator_records_in_total'), 1000);
    assert.equal(scrape.sum('logship_aggregator_sink_records_total', { sink: 'archive' }), 1000);
    assert.equal(scrape.sum('logship_aggregator_consumer_lag'), 10);
    assert.equal(scrape.sum('logship_absent'), undefined);
    assert.deepEqual(scrape.labelValues('logship_aggregator_sink_records_total', 'sink'), ['archive', 'search-with-a-very-long-sink-name']);
    assert.equal(scrape.has('logship_weird'), false, 'a NaN sample is skipped');
  });

  it('turns two scrapes into rates, and a histogram\'s new observations into quantiles', () => {
    const prev = new Scrape(aggregatorText(1000, { '0.5': 10, '1': 20, '2': 20, '+Inf': 20 }, 7), T0);
    const cur = new Scrape(aggregatorText(3000, { '0.5': 10, '1': 30, '2': 120, '+Inf': 120 }, 7), T0 + 2000);
    const w = new MetricWindow(cur, prev);
    assert.equal(w.rate('logship_aggregator_records_in_total'), 1000);
    assert.equal(new MetricWindow(cur).rate('logship_aggregator_records_in_total'), undefined, 'no rate on the first frame');
    // 100 new observations: 10 in (0.5, 1], 90 in (1, 2]. p50 = 1 + (50 - 10) / 90.
    assert.ok(Math.abs((w.quantile('logship_aggregator_end_to_end_delay_seconds', 0.5, { sink: 'archive' }) ?? 0) - (1 + 40 / 90)) < 1e-9);
    assert.equal(new MetricWindow(prev, prev).quantile('logship_aggregator_end_to_end_delay_seconds', 0.5, { sink: 'archive' }), undefined, 'nothing observed');
    const reset = new MetricWindow(new Scrape(aggregatorText(500, {}, 0), T0 + 1000), prev);
    assert.equal(reset.rate('logship_aggregator_records_in_total'), 500, 'a restarted component counts from 0');
  });

  it('draws the aggregator in 80 columns: sinks, lag, dead letters, delay, CPU', () => {
    const prev = new Scrape(aggregatorText(1000, { '0.5': 10, '1': 20, '2': 20, '+Inf': 20 }, 7), T0);
    const cur = new Scrape(aggregatorText(3000, { '0.5': 10, '1': 30, '2': 120, '+Inf': 120 }, 7), T0 + 2000);
    const lines = render(new MetricWindow(cur, prev), 'http://127.0.0.1:9103', T0 + 2000);
    assert.deepEqual(lines, aggregatorView(new MetricWindow(cur, prev), 'http://127.0.0.1:9103', T0 + 2000));
    for (const line of lines) assert.ok(line.length <= WIDTH, `wider than ${WIDTH}: ${line}`);
    const text = lines.join('\n');
    assert.match(lines[0] ?? '', /^logship-aggregator · http:\/\/127\.0\.0\.1:9103 · up 1h02m · 12:00:02 +q: quit$/);
    assert.match(text, /\n {2}records in +1\.00k\/s +3\.00k\n/);
    assert.match(text, /\n {2}archive +1\.00k\/s +391 KiB\/s +3\.00k +0 +2 +1\.4s\/2\.0s\n/);
    assert.match(text, /\n {2}search-with…/);
    assert.match(text, /consumer lag +10 messages · 6 partitions · worst logs\.prod\.web\/0: 7\n/);
    assert.match(text, /dead letters +rejected 4\n/);
    assert.match(text, /process +RSS 80\.0 MiB · heap – · CPU 1\.0%$/);
    assert.doesNotMatch(text, /replays dropped/, 'shown only by aggregators that count them');
  });

  it('draws the agent: flow, files, backlog, lost bytes, errors and stalled topics by reason', () => {
    const text = (lines: number, lost: number): string =>
      [
        `logship_agent_lines_read_total ${lines}`,
        `logship_agent_bytes_read_total ${lines * 170}`,
        `logship_agent_records_produced_total ${lines}`,
        'logship_agent_files_tracked 40',
        'logship_agent_files_open 38',
        'logship_agent_unshipped_bytes 1048576',
        'logship_agent_producer_buffered_bytes 0',
        `logship_agent_lost_bytes_total{reason="deleted_before_read"} ${lost}`,
        'logship_agent_lost_bytes_total{reason="truncated"} 0',
        'logship_agent_errors_total{reason="unparsed"} 0',
        'logship_agent_errors_total{reason="file_vanished"} 3',
        'logship_agent_kafka_send_errors_total{reason="unknown_topic"} 12',
        'logship_agent_stalled_topics 1',
        'logship_agent_topic_stalled{topic="logs.prod.gone",reason="unknown_topic"} 1',
      ].join('\n');
    const w = new MetricWindow(new Scrape(text(250_000, 4096), T0 + 1000), new Scrape(text(50_000, 0), T0));
    const lines = agentView(w, 'http://127.0.0.1:9102', T0 + 1000);
    for (const line of lines) assert.ok(line.length <= WIDTH, `wider than ${WIDTH}: ${line}`);
    const screen = lines.join('\n');
    assert.match(screen, /\n {2}lines read +200k\/s +250k\n/);
    assert.match(screen, /\n {2}bytes read +32\.4 MiB\/s +40\.5 MiB\n/);
    assert.match(screen, /files tracked +40 \(38 open\)/);
    assert.match(screen, /backlog +1\.00 MiB unshipped · 0 B buffered for Kafka/);
    assert.match(screen, /lost bytes +deleted_before_read 4\.00 KiB \(\+4\.00 KiB\/s\)\n/);
    assert.match(screen, /errors +file_vanished 3\n/);
    assert.match(screen, /Kafka errors +unknown_topic 12\n/);
    assert.match(screen, /stalled topics +1: logs\.prod\.gone \(unknown_topic\)\n/);
    const older = agentView(new MetricWindow(new Scrape('logship_agent_lines_read_total 5', T0)), 'http://127.0.0.1:9102', T0).join('\n');
    assert.match(older, /lost bytes +0\n/, 'an agent without the metric shows 0 lost bytes');
    assert.doesNotMatch(older, /stalled topics/);
  });

  it('says so when the metrics are not a logship component\'s', () => {
    assert.deepEqual(render(new MetricWindow(new Scrape('up 1\n', T0)), 'http://127.0.0.1:9090', T0), ['http://127.0.0.1:9090/metrics has no logship agent or aggregator metrics']);
  });

  it('formats counts, bytes and durations to fit', () => {
    assert.deepEqual([0, 950, 1234, 12_345, 1_234_567, 2.5].map(formatCount), ['0', '950', '1.23k', '12.3k', '1.23M', '2.5']);
    assert.deepEqual([512, 3 * 2 ** 20 + 2 ** 18, 5 * 2 ** 30].map(formatBytes), ['512 B', '3.25 MiB', '5.00 GiB']);
    assert.deepEqual([0.85, 2.14, 245, 3725].map(formatSeconds), ['850ms', '2.1s', '4m05s', '1h02m']);
  });
});

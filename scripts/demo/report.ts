/** The demo's closing report: one row per place the lines went, then OK or the problems found. */
import { relative } from 'node:path';
import type { Binary } from './binary.js';
import type { DemoSummary, RowCheck } from './checks.js';
import type { WriteStats } from './log-writer.js';
import { out } from './output.js';
import type { RunNames } from './run-names.js';

export interface Report {
  summary: DemoSummary;
  problems: string[];
  written: WriteStats;
  rows: RowCheck;
  deadLetters: number;
  deadLetterMetric: number;
  names: RunNames;
  bucket: string;
  logRoot: string;
  binaries: readonly Binary[];
}

export function printSummary({ summary, problems, written, rows: checked, deadLetters, deadLetterMetric, names, bucket, logRoot, binaries }: Report): void {
  const { lag, exit_codes: exitCodes } = summary;
  out.line('== logship demo: summary ==');
  const rows: [string, string][] = [
    ['lines written', `${written.lines} (${written.physicalLines} physical CRI lines: ${written.partialChains} long lines split into P/F chunks, ${written.interleaved} of them with a stderr line between their chunks; ${written.stderr} stderr lines; rotated: ${written.rotation ?? 'nothing'})`],
    ['Kafka records', `${summary.kafka_records} in ${names.topics.length} topics × 3 partitions`],
    ['S3', `${summary.s3_rows} rows (${checked.distinctEventIds} distinct event_ids) in ${summary.s3_objects} objects under s3://${bucket}/${names.s3Prefix}/`],
    ['Elasticsearch', `${summary.es_docs} documents in ${names.indexPrefix}-*`],
    ['dead letters', `${deadLetters} in ${names.deadLetterTopic} (aggregators' metric: ${deadLetterMetric}); the input is clean, so 0 is expected`],
    ['consumer lag', lag === null ? 'unknown' : `${lag} messages (group ${names.groupId}, 2 members)`],
    ['enriched', `${(summary.enriched * 100).toFixed(1)}% of the rows carry pod labels from the API server (no metadata_fallback flag)`],
    ['messages', summary.messages_intact ? 'every message arrived exactly as written (long lines merged back from their chunks)' : `${checked.intact} of ${written.lines} messages arrived as written (${summary.s3_rows - checked.distinctEventIds} rows repeat an event_id)`],
    ...[...checked.duplicates].map(([file, d]): [string, string] => ['duplicates', `${d.rows} rows of ${relative(logRoot, file)} repeat an event_id (byte offsets ${d.minOffset}–${d.maxOffset})`]),
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
}

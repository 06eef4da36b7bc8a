/** The checks of what landed against what was written, and the demo's closing summary they decide. */
import { Field, KubernetesField, LogField, RecordFlag, type LogRecord } from '../../shared/record.js';

/** What the S3 rows say, checked against the messages written. */
export interface RowCheck {
  /** Rows that carry pod labels from the API server (no metadata_fallback flag). */
  enriched: number;
  /** Messages written that arrived exactly as written, counted once each. */
  intact: number;
  distinctEventIds: number;
  /** Rows whose event_id was seen before, by file: a duplicate a replay would have to explain. */
  duplicates: Map<string, { rows: number; minOffset: number; maxOffset: number }>;
}

export function checkRows(records: Iterable<LogRecord>, written: ReadonlySet<string>): RowCheck {
  let enriched = 0;
  let intact = 0;
  const seenMessages = new Set<string>();
  const eventIds = new Set<string>();
  const duplicates: RowCheck['duplicates'] = new Map();
  for (const record of records) {
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
    if (written.has(message) && !seenMessages.has(message)) intact++;
    seenMessages.add(message);
  }
  return { enriched, intact, distinctEventIds: eventIds.size, duplicates };
}

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

/** The counts so far, for the last line when the run fails before its summary. */
export type LiveCounts = Pick<DemoSummary, 'lines_written' | 'kafka_records' | 's3_objects' | 's3_rows' | 'es_docs'>;

export function findProblems(s: DemoSummary, distinctIds: number): string[] {
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

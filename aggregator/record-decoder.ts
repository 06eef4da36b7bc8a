/**
 * Turns one Kafka message of a logship topic into records: the value holds one or more NDJSON
 * records, each followed by `\n` (see README, "Kafka topic format"). Each line is parsed once to
 * read the few fields the aggregator needs; the line's bytes go to the sinks untouched.
 * Lines that cannot be records come back as poison with a dead-letter reason, never thrown.
 */
import { Field, KubernetesField } from '../shared/record.js';
import { DeadLetterReason, type RecordFields, type SinkRecord } from './sink.js';

const NEWLINE = 0x0a;

export interface PoisonRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly index: number;
  /** The offending bytes (the whole value for a message that is not NDJSON at all). */
  readonly line: Buffer;
  readonly reason: DeadLetterReason;
  readonly detail: string;
}

export interface DecodedMessage {
  readonly records: SinkRecord[];
  readonly poison: PoisonRecord[];
}

export interface DecodeOptions {
  /** Records longer than this go to the dead letter (`too_large`). */
  readonly maxRecordBytes: number;
}

export function decodeMessage(topic: string, partition: number, offset: number, value: Buffer | null, options: DecodeOptions): DecodedMessage {
  const records: SinkRecord[] = [];
  const poison: PoisonRecord[] = [];
  if (value === null || value.length === 0) {
    poison.push({ topic, partition, offset, index: 0, line: Buffer.alloc(0), reason: DeadLetterReason.INVALID_JSON, detail: 'empty message value' });
    return { records, poison };
  }
  let start = 0;
  let index = 0;
  while (start < value.length) {
    let end = value.indexOf(NEWLINE, start);
    if (end === -1) end = value.length;
    if (end > start) {
      const decoded = decodeLine(value, start, end, options);
      if ('fields' in decoded) records.push({ topic, partition, offset, index, value, start, end, fields: decoded.fields });
      else poison.push({ topic, partition, offset, index, line: value.subarray(start, end), reason: decoded.reason, detail: decoded.detail });
      index++;
    }
    start = end + 1;
  }
  return { records, poison };
}

type LineResult = { fields: RecordFields } | { reason: DeadLetterReason; detail: string };

/** Reads the fields of the record in `value[start, end)` (one line without its newline). */
export function decodeLine(value: Buffer, start: number, end: number, options: DecodeOptions): LineResult {
  const bytes = end - start;
  if (bytes > options.maxRecordBytes) {
    return { reason: DeadLetterReason.TOO_LARGE, detail: `record of ${bytes} bytes exceeds maxRecordBytes ${options.maxRecordBytes}` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8', start, end));
  } catch (error) {
    return { reason: DeadLetterReason.INVALID_JSON, detail: (error as Error).message.slice(0, 200) };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { reason: DeadLetterReason.INVALID_JSON, detail: 'not a JSON object' };
  }
  return extractFields(parsed as Record<string, unknown>);
}

function extractFields(record: Record<string, unknown>): LineResult {
  const timestamp = record[Field.TIMESTAMP];
  const eventId = record[Field.EVENT_ID];
  const kubernetes = record[Field.KUBERNETES];
  if (typeof timestamp !== 'string') return missing(Field.TIMESTAMP);
  const timeMs = Date.parse(timestamp);
  if (Number.isNaN(timeMs)) return { reason: DeadLetterReason.MISSING_FIELD, detail: `${Field.TIMESTAMP} is not an RFC 3339 time` };
  if (typeof eventId !== 'string' || eventId === '') return missing(Field.EVENT_ID);
  if (typeof kubernetes !== 'object' || kubernetes === null) return missing(Field.KUBERNETES);
  const k8s = kubernetes as Record<string, unknown>;
  const namespace = k8s[KubernetesField.NAMESPACE];
  const cluster = k8s[KubernetesField.CLUSTER];
  if (typeof namespace !== 'string' || namespace === '') return missing(`${Field.KUBERNETES}.${KubernetesField.NAMESPACE}`);
  if (typeof cluster !== 'string' || cluster === '') return missing(`${Field.KUBERNETES}.${KubernetesField.CLUSTER}`);
  const pod = k8s[KubernetesField.POD];
  const container = k8s[KubernetesField.CONTAINER];
  return {
    fields: {
      timeMs,
      eventId,
      cluster,
      namespace,
      pod: typeof pod === 'string' ? pod : '',
      container: typeof container === 'string' ? container : '',
    },
  };
}

function missing(field: string): LineResult {
  return { reason: DeadLetterReason.MISSING_FIELD, detail: `${field} is missing or not a string` };
}

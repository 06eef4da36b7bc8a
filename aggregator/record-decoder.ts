/**
 * Turns one Kafka message of a logship topic into records: the value holds one or more NDJSON
 * records, each followed by `\n` (see docs/how-it-works.md, "Kafka topic format"). Each line is parsed once to
 * read the few fields the aggregator needs; the line's bytes go to the sinks untouched.
 * Lines that cannot be records come back as poison with a dead-letter reason, never thrown.
 */
import { Field, KubernetesField } from '../shared/record.js';
import { originOf } from './replay-filter.js';
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
  const timeMs = parseTimestamp(timestamp);
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
  const origin = originOf(eventId, record[Field.STREAM]);
  return {
    fields: {
      timeMs,
      eventId,
      cluster,
      namespace,
      pod: typeof pod === 'string' ? pod : '',
      container: typeof container === 'string' ? container : '',
      origin: origin?.origin,
      originOffset: origin?.offset ?? 0,
    },
  };
}

function missing(field: string): LineResult {
  return { reason: DeadLetterReason.MISSING_FIELD, detail: `${field} is missing or not a string` };
}

/**
 * Milliseconds of a record's `@timestamp`, exactly as `Date.parse` reads it (fractions beyond
 * milliseconds cut off), computed directly for the form the runtimes write,
 * `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with up to 9 fraction digits; anything else goes to `Date.parse`
 * (NaN when it is no time).
 */
export function parseTimestamp(text: string): number {
  const length = text.length;
  // 20 characters without a fraction, 30 with nanoseconds; V8 reads longer fractions its own way.
  if (length < 20 || length > 30 || text.charCodeAt(length - 1) !== 0x5a /* Z */) return Date.parse(text);
  const year = digitsAt(text, 0, 4);
  const month = digitsAt(text, 5, 2);
  const day = digitsAt(text, 8, 2);
  const hour = digitsAt(text, 11, 2);
  const minute = digitsAt(text, 14, 2);
  const second = digitsAt(text, 17, 2);
  // Days past the 28th (Date.parse rolls some over into the next month and refuses others) and
  // years below 1000 are left to Date.parse.
  const plain =
    year >= 1000 && month >= 1 && month <= 12 && day >= 1 && day <= 28 && hour >= 0 && hour <= 23 && minute >= 0 && minute <= 59 && second >= 0 && second <= 59 &&
    text.charCodeAt(4) === 0x2d && text.charCodeAt(7) === 0x2d && text.charCodeAt(10) === 0x54 /* T */ && text.charCodeAt(13) === 0x3a && text.charCodeAt(16) === 0x3a;
  if (!plain) return Date.parse(text);
  let millis = 0;
  if (length > 20) {
    // `.` and at least one digit before the Z; the first three digits are the milliseconds.
    if (text.charCodeAt(19) !== 0x2e || length === 21) return Date.parse(text);
    for (let k = 20; k < length - 1; k++) {
      const digit = text.charCodeAt(k) - 0x30;
      if (digit < 0 || digit > 9) return Date.parse(text);
      if (k < 23) millis += digit * (k === 20 ? 100 : k === 21 ? 10 : 1);
    }
  }
  return daysFromCivil(year, month, day) * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis;
}

/** Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's days_from_civil). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

/** The decimal number of `count` digits at `at`; -1 when one of them is not a digit. */
function digitsAt(text: string, at: number, count: number): number {
  let n = 0;
  for (let k = at; k < at + count; k++) {
    const digit = text.charCodeAt(k) - 0x30;
    if (digit < 0 || digit > 9) return -1;
    n = n * 10 + digit;
  }
  return n;
}

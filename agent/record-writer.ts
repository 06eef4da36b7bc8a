/**
 * Builds the JSON text of records for one file. Everything that is the same for every line of a file
 * (its Kubernetes metadata, its path, the event-id prefix) is serialised once; per line only the
 * timestamp, message, stream, offset and flags are written. Keys come from shared/record.ts in the
 * order DESIGN.md shows.
 */
import { Field, LogField, RecordFlag, type KubernetesMetadata } from '../shared/record.js';
import { eventId } from './event-id.js';
import type { LogEntry } from './line-assembler.js';

const k = JSON.stringify;
const OPEN = `{${k(Field.TIMESTAMP)}:`;
const MESSAGE = `,${k(Field.MESSAGE)}:`;
const STREAM = `,${k(Field.STREAM)}:"`;
const EVENT_ID = `",${k(Field.EVENT_ID)}:"`;
const KUBERNETES = `",${k(Field.KUBERNETES)}:`;
const LOG = `,${k(Field.LOG)}:{${k(LogField.FILE)}:`;
const OFFSET = `,${k(LogField.OFFSET)}:`;
const FLAGS = `,${k(LogField.FLAGS)}:`;
/** Room left for the JSON around a message when cutting it to fit a Kafka message. */
const ENVELOPE_SLACK_BYTES = 512;

export interface BuiltRecord {
  json: string;
  /** UTF-8 size of `json`. */
  bytes: number;
  truncated: boolean;
}

export class RecordWriter {
  private readonly kubernetesJson: string;
  private readonly fileJson: string;

  constructor(
    readonly metadata: KubernetesMetadata,
    file: string,
    private readonly eventIdPrefix: string,
    /** Largest record allowed (it must fit in one Kafka message); longer messages are cut and flagged. */
    private readonly maxRecordBytes: number,
    /** Flags every record of this file carries (e.g. metadata_fallback). */
    private readonly extraFlags: readonly RecordFlag[] = [],
  ) {
    this.kubernetesJson = k(metadata);
    this.fileJson = k(file);
  }

  build(entry: LogEntry): BuiltRecord {
    const flags = this.extraFlags.length === 0 ? entry.flags : [...entry.flags, ...this.extraFlags];
    const json = this.render(entry, entry.message, flags);
    const bytes = Buffer.byteLength(json);
    if (bytes > this.maxRecordBytes) {
      const overhead = bytes - Buffer.byteLength(entry.message);
      const message = cutUtf8(entry.message, Math.max(0, this.maxRecordBytes - overhead - ENVELOPE_SLACK_BYTES));
      const cutFlags = flags.includes(RecordFlag.TRUNCATED) ? flags : [...flags, RecordFlag.TRUNCATED];
      const cut = this.render(entry, message, cutFlags);
      return { json: cut, bytes: Buffer.byteLength(cut), truncated: true };
    }
    return { json, bytes, truncated: false };
  }

  private render(entry: LogEntry, message: string, flags: readonly RecordFlag[]): string {
    return (
      OPEN +
      k(entry.time) +
      MESSAGE +
      k(message) +
      STREAM +
      entry.stream +
      EVENT_ID +
      eventId(this.eventIdPrefix, entry.start) +
      KUBERNETES +
      this.kubernetesJson +
      LOG +
      this.fileJson +
      OFFSET +
      String(entry.start) +
      (flags.length === 0 ? '}}' : `${FLAGS}${k(flags)}}}`)
    );
  }
}

/** Cuts a string to at most `maxBytes` UTF-8 bytes without splitting a character. */
export function cutUtf8(text: string, maxBytes: number): string {
  const buffer = Buffer.from(text, 'utf8');
  if (buffer.length <= maxBytes) return text;
  let end = maxBytes;
  // Back off continuation bytes (10xxxxxx) so the cut lands on a character boundary.
  while (end > 0 && ((buffer[end] as number) & 0xc0) === 0x80) end--;
  return buffer.subarray(0, end).toString('utf8');
}

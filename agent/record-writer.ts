/**
 * Builds the JSON text of records for one file. Everything that is the same for every line of a file
 * (its Kubernetes metadata, its path, the event-id prefix) is serialised once; per line only the
 * timestamp, message, stream, offset and flags are written. Keys come from shared/record.ts in the
 * order DESIGN.md shows.
 *
 * Two ways produce the same bytes:
 * - `build` renders a record from a `LogEntry` as a string (any entry: merged partial lines, multiline
 *   events, flagged, truncated or unparsed lines);
 * - `writeCriLine` is the hot path for the common case, a whole CRI line with a valid UTF-8 message:
 *   it copies the line's bytes straight into the output buffer, JSON-escaping the message on the way,
 *   with the file's constant parts as prepared byte strings. No string is decoded or built per line.
 */
import { isUtf8 } from 'node:buffer';
import { Field, LogField, RecordFlag, type KubernetesMetadata, type Stream } from '../shared/record.js';
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

/** `{"@timestamp":"` and `","message":"`: what surrounds the time on the hot path. */
const OPEN_BYTES = Buffer.from(`${OPEN}"`);
const MESSAGE_BYTES = Buffer.from(`"${MESSAGE}"`);
/** Hex digits of the offset in an event id (see event-id.ts); offsets beyond take the string path. */
const EVENT_ID_OFFSET_DIGITS = 12;
const MAX_HEX_OFFSET = 16 ** EVENT_ID_OFFSET_DIGITS;
/** Decimal digits of the largest file offset (Number.MAX_SAFE_INTEGER). */
const MAX_DECIMAL_DIGITS = 16;
/** A JSON escape is at most 6 bytes (`\u001f`) for one input byte. */
const MAX_ESCAPE_BYTES = 6;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const HEX_DIGITS = Buffer.from('0123456789abcdef');

/** Per byte value: 0 copied as is (printable ASCII), 1 needs a JSON escape, 2 non-ASCII (copied, UTF-8 checked). */
const BYTE_CLASS = new Uint8Array(256);
for (let b = 0; b < 0x20; b++) BYTE_CLASS[b] = 1;
BYTE_CLASS[QUOTE] = 1;
BYTE_CLASS[BACKSLASH] = 1;
for (let b = 0x80; b < 0x100; b++) BYTE_CLASS[b] = 2;
/** The short escapes JSON.stringify uses; other control bytes become `\u00XX`. */
const SHORT_ESCAPES = new Map<number, number>([
  [0x08, 0x62], // \b
  [0x09, 0x74], // \t
  [0x0a, 0x6e], // \n
  [0x0c, 0x66], // \f
  [0x0d, 0x72], // \r
  [QUOTE, QUOTE],
  [BACKSLASH, BACKSLASH],
]);

export interface BuiltRecord {
  json: string;
  /** UTF-8 size of `json`. */
  bytes: number;
  truncated: boolean;
}

export class RecordWriter {
  private readonly kubernetesJson: string;
  private readonly fileJson: string;
  /** `","stream":"<stream>","event_id":"<prefix>` per stream. */
  private readonly streamBytes: Record<Stream, Buffer>;
  /** `","kubernetes":{…},"log":{"file":"…","offset":` */
  private readonly originBytes: Buffer;
  /** The record's end: the file's constant flags, if any, then `}}`. */
  private readonly closeBytes: Buffer;
  /** Bytes of a hot-path record besides its time and message. */
  private readonly fixedBytes: number;

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
    this.streamBytes = {
      stdout: Buffer.from(`"${STREAM}stdout${EVENT_ID}${eventIdPrefix}`),
      stderr: Buffer.from(`"${STREAM}stderr${EVENT_ID}${eventIdPrefix}`),
    };
    this.originBytes = Buffer.from(`${KUBERNETES}${this.kubernetesJson}${LOG}${this.fileJson}${OFFSET}`);
    this.closeBytes = Buffer.from(extraFlags.length === 0 ? '}}' : `${FLAGS}${k(extraFlags)}}}`);
    this.fixedBytes =
      OPEN_BYTES.length + MESSAGE_BYTES.length + this.streamBytes.stdout.length + EVENT_ID_OFFSET_DIGITS + this.originBytes.length + MAX_DECIMAL_DIGITS + this.closeBytes.length;
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

  /**
   * Room `writeCriLine` may need for a line with a time of `timeBytes` and a message of
   * `messageBytes`, or -1 when such a record could exceed the maximum record size (`build` cuts it).
   */
  maxCriRecordBytes(timeBytes: number, messageBytes: number): number {
    const bytes = this.fixedBytes + timeBytes + MAX_ESCAPE_BYTES * messageBytes;
    return bytes <= this.maxRecordBytes ? bytes : -1;
  }

  /**
   * The hot path: writes the record of a whole CRI line into `out` at `at`, straight from the line's
   * bytes, and returns where it ends. The time is `src[timeStart, timeEnd)`, the message
   * `src[messageStart, messageEnd)`, `offset` the line's file offset. `out` must have the room
   * `maxCriRecordBytes` gave. Returns -1 (having written garbage after `at`) when the line needs
   * `build` instead: invalid UTF-8 to repair and flag, or a time that is not plain ASCII.
   */
  writeCriLine(src: Buffer, timeStart: number, timeEnd: number, stream: Stream, messageStart: number, messageEnd: number, offset: number, out: Buffer, at: number): number {
    if (offset >= MAX_HEX_OFFSET) return -1;
    let p = at;
    out.set(OPEN_BYTES, p);
    p += OPEN_BYTES.length;
    p = copyPlainAscii(src, timeStart, timeEnd, out, p);
    if (p < 0) return -1;
    out.set(MESSAGE_BYTES, p);
    p += MESSAGE_BYTES.length;
    const plainEnd = copyPlainAscii(src, messageStart, messageEnd, out, p);
    p = plainEnd >= 0 ? plainEnd : writeEscaped(src, messageStart, messageEnd, out, p);
    if (p < 0) return -1;
    const streamBytes = this.streamBytes[stream];
    out.set(streamBytes, p);
    p += streamBytes.length;
    p = writeHex12(out, p, offset);
    out.set(this.originBytes, p);
    p += this.originBytes.length;
    p = writeDecimal(out, p, offset);
    out.set(this.closeBytes, p);
    return p + this.closeBytes.length;
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

/**
 * Copies `src[start, end)` to `out` at `at` as the inside of a JSON string, escaping what JSON.stringify
 * escapes; returns where it ends, or -1 when the bytes are not valid UTF-8.
 */
function writeEscaped(src: Buffer, start: number, end: number, out: Buffer, at: number): number {
  let p = at;
  let nonAscii = false;
  for (let i = start; i < end; i++) {
    const byte = src[i] as number;
    const kind = BYTE_CLASS[byte];
    if (kind === 0) {
      out[p++] = byte;
    } else if (kind === 2) {
      nonAscii = true;
      out[p++] = byte;
    } else {
      p = writeEscape(out, p, byte);
    }
  }
  return nonAscii && !isUtf8(src.subarray(start, end)) ? -1 : p;
}

/** 32-bit view of the memory of the last buffer `copyPlainAscii` read (the agent reuses its read buffer). */
let wordsOf: ArrayBufferLike | undefined;
let words: Int32Array = new Int32Array(0);
/** The word-wise path below takes a word's bytes from its low end first. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Copies `src[start, end)` to `out` at `at` if it is printable ASCII without `"` or `\` (what goes
 * into a JSON string as is) and returns where the copy ends; returns -1 as soon as another byte shows
 * up. Reads four bytes at a time and tests them together with bit tricks, which costs about a third
 * less than a byte loop (a native copy costs more than either for lines this short).
 */
export function copyPlainAscii(src: Buffer, start: number, end: number, out: Buffer, at: number): number {
  let p = at;
  let i = start;
  if (LITTLE_ENDIAN) {
    if (src.buffer !== wordsOf) {
      wordsOf = src.buffer;
      words = new Int32Array(src.buffer, 0, src.buffer.byteLength >> 2);
    }
    const base = src.byteOffset;
    // Bytes before the first whole word; then whole words.
    while (i < end && ((base + i) & 3) !== 0) {
      const byte = src[i++] as number;
      if (BYTE_CLASS[byte] !== 0) return -1;
      out[p++] = byte;
    }
    const view = words;
    const wordsEnd = (base + end) >> 2;
    for (let w = (base + i) >> 2; w < wordsEnd; w++) {
      const x = view[w] as number;
      // A byte's high bit is set in: x (byte >= 0x80), `control` (byte < 0x20), `quote` (byte == "), `backslash` (byte == \).
      const control = ((x - 0x20202020) | 0) & ~x;
      const q = x ^ 0x22222222;
      const quote = ((q - 0x01010101) | 0) & ~q;
      const b = x ^ 0x5c5c5c5c;
      const backslash = ((b - 0x01010101) | 0) & ~b;
      if (((x | control | quote | backslash) & 0x80808080) !== 0) return -1;
      out[p] = x & 0xff;
      out[p + 1] = (x >> 8) & 0xff;
      out[p + 2] = (x >> 16) & 0xff;
      out[p + 3] = x >>> 24;
      p += 4;
      i += 4;
    }
  }
  // The bytes after the last whole word (or all of them on a big-endian machine).
  for (; i < end; i++) {
    const byte = src[i] as number;
    if (BYTE_CLASS[byte] !== 0) return -1;
    out[p++] = byte;
  }
  return p;
}

/** The JSON escape of one byte (a control byte, `"` or `\`), exactly as JSON.stringify writes it. */
function writeEscape(out: Buffer, at: number, byte: number): number {
  out[at] = BACKSLASH;
  const short = SHORT_ESCAPES.get(byte);
  if (short !== undefined) {
    out[at + 1] = short;
    return at + 2;
  }
  out[at + 1] = 0x75; // u
  out[at + 2] = 0x30;
  out[at + 3] = 0x30;
  out[at + 4] = HEX_DIGITS[byte >> 4] as number;
  out[at + 5] = HEX_DIGITS[byte & 0xf] as number;
  return at + 6;
}

/** `value` (< 16^12) as 12 lowercase hex digits, like `eventId`. */
function writeHex12(out: Buffer, at: number, value: number): number {
  const high = Math.floor(value / 0x1000000);
  const low = value - high * 0x1000000;
  for (let i = 0; i < 6; i++) {
    out[at + 5 - i] = HEX_DIGITS[(high >>> (4 * i)) & 0xf] as number;
    out[at + 11 - i] = HEX_DIGITS[(low >>> (4 * i)) & 0xf] as number;
  }
  return at + EVENT_ID_OFFSET_DIGITS;
}

/** A non-negative safe integer in decimal, like `String(value)`. */
function writeDecimal(out: Buffer, at: number, value: number): number {
  let digits = 1;
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  let p = at + digits;
  let rest = value;
  do {
    const next = Math.floor(rest / 10);
    out[--p] = 0x30 + (rest - next * 10);
    rest = next;
  } while (rest > 0);
  return at + digits;
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

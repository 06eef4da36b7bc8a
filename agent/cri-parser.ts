/**
 * Parses one line of a CRI log file (containerd, CRI-O):
 *
 *   `<RFC3339Nano time> <stdout|stderr> <P|F>[:tag...] <message>`
 *
 * Every line of every container on the node goes through here, so the parser works on bytes: it
 * compares a handful of bytes at known positions, scans only the short time and tag fields, and
 * returns the message as a view into the input (no copy, no decoding). The only allocation besides
 * the result is the time string, which is kept exactly as the runtime wrote it. Everything before the
 * message must be ASCII (a real time and tag always are): a line that breaks this is malformed.
 */
import type { Stream } from '../shared/record.js';

/** One parsed physical line, CRI or docker json-file; `partial` means more chunks of the same line follow. */
export type ParsedLine =
  | { kind: 'ok'; time: string; stream: Stream; partial: boolean; message: Buffer }
  | { kind: 'invalid'; reason: 'malformed' };

/** Shared result for every line that does not parse; frozen so no caller can alter it for the others. */
export const MALFORMED: ParsedLine = Object.freeze({ kind: 'invalid', reason: 'malformed' });

const SPACE = 0x20;
const COLON = 0x3a;
const NON_ASCII = 0x80;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const UPPER_T = 0x54;
const LOWER_T = 0x74;
const UPPER_Z = 0x5a;
const LOWER_Z = 0x7a;
const TAG_PARTIAL = 0x50; // 'P'
const TAG_FULL = 0x46; // 'F'
const S = 0x73;
const D = 0x64;
const O = 0x6f;
const U = 0x75;
const E = 0x65;
const R = 0x72;

/** `2026-11-22T04:17:19Z` is the shortest RFC 3339 time; nanoseconds plus an offset stay well under the maximum. */
const MIN_TIME_BYTES = 20;
const MAX_TIME_BYTES = 40;
/** `stdout` and `stderr` are both six bytes. */
const STREAM_BYTES = 6;
/** Position of the `T` between date and time in `YYYY-MM-DDTHH:MM:SS`. */
const DATE_TIME_SEPARATOR_INDEX = 10;

const EMPTY = Buffer.alloc(0);

/**
 * Where the fields of a CRI line are, as found by `scanCriLine`. Everything before `messageStart` is
 * ASCII, so byte offsets there are also character offsets in the decoded line.
 */
export interface CriLayout {
  /** End of the time field: the time is `line[0, timeEnd)`. */
  timeEnd: number;
  stream: Stream;
  partial: boolean;
  /** First byte of the message; equals the line's length when the message is empty. */
  messageStart: number;
}

/** Reused by `parseCriLine`, which is synchronous and keeps nothing from it. */
const scratch: CriLayout = { timeEnd: 0, stream: 'stdout', partial: false, messageStart: 0 };

/**
 * Parses one CRI line, given without its trailing `\n` (any other byte, `\r` included, is message).
 * The message is a subarray of `line`: copy it before `line`'s memory is reused.
 */
export function parseCriLine(line: Buffer): ParsedLine {
  if (!scanCriLine(line, scratch)) return MALFORMED;
  const { timeEnd, stream, partial, messageStart } = scratch;
  const message = messageStart < line.length ? line.subarray(messageStart) : EMPTY;
  return { kind: 'ok', time: line.toString('latin1', 0, timeEnd), stream, partial, message };
}

/**
 * The allocation-free core of `parseCriLine`: checks the line's shape and fills `layout` with where
 * its fields are. Returns false, leaving `layout` in an unspecified state, when the line is not CRI.
 * The line assembler uses it to decode a whole line in one call instead of slicing it first.
 */
export function scanCriLine(line: Buffer, layout: CriLayout): boolean {
  return scanCriLineAt(line, 0, line.length, layout);
}

/**
 * `scanCriLine` for the line `buffer[start, end)` of a larger buffer (a read chunk), without slicing
 * it: the positions in `layout` are indexes into `buffer`.
 */
export function scanCriLineAt(buffer: Buffer, start: number, end: number, layout: CriLayout): boolean {
  const timeEnd = indexOfSpaceInAscii(buffer, start, start + MAX_TIME_BYTES + 1, end);
  if (timeEnd - start < MIN_TIME_BYTES || !isTimeShaped(buffer, start, timeEnd)) return false;

  const streamStart = timeEnd + 1;
  const stream = streamAt(buffer, streamStart, end);
  if (stream === undefined) return false;

  const tagStart = streamStart + STREAM_BYTES + 1;
  const tag = tagStart < end ? buffer[tagStart] : undefined;
  if (tag !== TAG_PARTIAL && tag !== TAG_FULL) return false;

  let tagEnd = tagStart + 1;
  if (tagEnd < end && buffer[tagEnd] === COLON) {
    tagEnd = indexOfSpaceInAscii(buffer, tagEnd, end, end);
    if (tagEnd === -1) return false;
  } else if (tagEnd < end && buffer[tagEnd] !== SPACE) {
    return false;
  }

  layout.timeEnd = timeEnd;
  layout.stream = stream;
  layout.partial = tag === TAG_PARTIAL;
  // Runtimes write `... F ` for an empty message; a line ending right after the tag is empty too.
  layout.messageStart = Math.min(tagEnd + 1, end);
  return true;
}

/**
 * Index of the first space in `line[from, limit)`, or of `limit` when the line ends there (`lineEnd`);
 * -1 when a non-ASCII byte comes first or no space is found before `limit`. A plain loop suits these
 * short fields.
 */
function indexOfSpaceInAscii(line: Buffer, from: number, limit: number, lineEnd: number): number {
  const end = Math.min(limit, lineEnd);
  for (let i = from; i < end; i++) {
    const byte = line[i] ?? 0;
    if (byte === SPACE) return i;
    if (byte >= NON_ASCII) return -1;
  }
  return end === lineEnd ? end : -1;
}

/** Cheap shape check of `line[start, end)`: starts with a digit, `T` after the date, ends with `Z` or an offset digit. */
function isTimeShaped(line: Buffer, start: number, end: number): boolean {
  const first = line[start] ?? 0;
  const separator = line[start + DATE_TIME_SEPARATOR_INDEX];
  const last = line[end - 1] ?? 0;
  return (
    first >= DIGIT_0 &&
    first <= DIGIT_9 &&
    (separator === UPPER_T || separator === LOWER_T) &&
    (last === UPPER_Z || last === LOWER_Z || (last >= DIGIT_0 && last <= DIGIT_9))
  );
}

/** `stdout` or `stderr` at `at`, followed by a space, before `end`; anything else is undefined. */
function streamAt(line: Buffer, at: number, end: number): Stream | undefined {
  if (at + STREAM_BYTES >= end) return undefined;
  if (line[at] !== S || line[at + 1] !== LOWER_T || line[at + 2] !== D || line[at + STREAM_BYTES] !== SPACE) return undefined;
  const a = line[at + 3];
  const b = line[at + 4];
  const c = line[at + 5];
  if (a === O && b === U && c === LOWER_T) return 'stdout';
  if (a === E && b === R && c === R) return 'stderr';
  return undefined;
}

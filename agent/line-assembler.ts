/**
 * Turns the physical lines of one log file into complete log entries: parses each line (CRI or
 * docker json-file), merges the partial chunks a runtime writes for a long line (per stream, since
 * the other stream's lines may sit between them), caps every entry at `maxLineBytes`, repairs
 * invalid UTF-8, and ships lines that do not parse raw instead of dropping them.
 *
 * One instance per file. Memory stays bounded: at most `maxLineBytes` of message is held per stream,
 * whatever the runtime writes. Pending chunks are copied, so the caller may reuse its read buffers.
 */
import { isUtf8 } from 'node:buffer';
import { RecordFlag, type Stream } from '../shared/record.js';
import { scanCriLine, type CriLayout } from './cri-parser.js';
import { parseDockerLine } from './docker-parser.js';

/** One physical line without its `\n`; `[start, end)` is its byte range in the file, `\n` included. */
export interface RawLine {
  bytes: Buffer;
  start: number;
  end: number;
}

/** One complete log line, ready to be enriched and shipped. */
export interface LogEntry {
  /** As the runtime wrote it, for the first chunk; wall-clock ISO time for an unparsed line. */
  time: string;
  stream: Stream;
  /** Decoded message, invalid UTF-8 replaced with U+FFFD. */
  message: string;
  /** File offset of the first physical line of the entry. */
  start: number;
  /** File offset just after the last physical line of the entry. */
  end: number;
  /** Subset of truncated, unparsed, invalid_utf8 (multiline later). Shared when empty: never mutate. */
  flags: RecordFlag[];
}

export type LogFormat = 'cri' | 'docker' | 'auto';

export interface LineAssemblerOptions {
  /** `auto` decides on the first non-empty line: `{` means docker json-file, anything else CRI. */
  format: LogFormat;
  /** Most message bytes in one entry; the rest of a longer line is discarded and the entry flagged. */
  maxLineBytes: number;
  /** Wall clock in epoch milliseconds, for the time of unparsed lines; `Date.now` unless a test injects one. */
  now?: () => number;
}

/** Cumulative counts of degraded entries, read by the caller for metrics. */
export interface AssemblerCounters {
  unparsed: number;
  truncated: number;
  invalidUtf8: number;
}

/** The flags of almost every entry: one frozen array instead of an allocation per line. */
const NO_FLAGS = Object.freeze([]) as unknown as RecordFlag[];

const OPEN_BRACE = 0x7b;

/**
 * U+FFFD, what decoding puts in place of invalid UTF-8. Decoding first and running the exact
 * `isUtf8` check only when this shows up costs one scan of the text instead of a second pass over
 * the bytes; a line that really contains U+FFFD passes `isUtf8` and is not flagged.
 */
const REPLACEMENT_CHARACTER = '\uFFFD';

/** A line whose final chunk has not been read yet. */
interface PendingEntry {
  time: string;
  start: number;
  end: number;
  /** Copies of the chunks kept so far; `size` bytes in all, never more than `maxLineBytes`. */
  chunks: Buffer[];
  size: number;
  truncated: boolean;
  /** When its first chunk was read (ms), to bound how long it may wait for the rest. */
  openedAtMs: number;
}

export class LineAssembler {
  readonly counters: AssemblerCounters = { unparsed: 0, truncated: 0, invalidUtf8: 0 };

  readonly #maxLineBytes: number;
  readonly #now: () => number;
  #format: 'cri' | 'docker' | undefined;
  /** Scratch space for `scanCriLine`, reused for every line. */
  readonly #layout: CriLayout = { timeEnd: 0, stream: 'stdout', partial: false, messageStart: 0 };
  #stdout: PendingEntry | undefined;
  #stderr: PendingEntry | undefined;
  /** Streams whose split line was shipped before its end: the chunks that follow are its rest, flagged `partial` too. */
  #orphaned: { stdout: boolean; stderr: boolean } = { stdout: false, stderr: false };

  constructor(options: LineAssemblerOptions) {
    if (!Number.isSafeInteger(options.maxLineBytes) || options.maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${options.maxLineBytes}`);
    }
    this.#maxLineBytes = options.maxLineBytes;
    this.#now = options.now ?? Date.now;
    if (options.format !== 'auto') this.#useFormat(options.format);
  }

  /** The format in use; undefined while `auto` has not seen a non-empty line yet. */
  get format(): 'cri' | 'docker' | undefined {
    return this.#format;
  }

  /** Feeds one physical line; returns the entries it completed (0, 1, or more), in order of completion. */
  push(line: RawLine): LogEntry[] {
    const bytes = line.bytes;
    if (bytes.length === 0) return [];
    const format = this.#format ?? this.#useFormat(bytes[0] === OPEN_BRACE ? 'docker' : 'cri');
    if (format === 'docker') {
      const parsed = parseDockerLine(bytes);
      return parsed.kind === 'ok' ? this.#assemble(parsed.time, parsed.stream, parsed.partial, parsed.message, line) : [this.#unparsed(line)];
    }

    const layout = this.#layout;
    if (!scanCriLine(bytes, layout)) return [this.#unparsed(line)];
    const { timeEnd, stream, partial, messageStart } = layout;
    if (!partial && !this.hasPending(stream) && bytes.length - messageStart <= this.#maxLineBytes) {
      return [this.#wholeCriLine(line, timeEnd, stream, messageStart)];
    }
    const time = bytes.toString('latin1', 0, timeEnd);
    return this.#assemble(time, stream, partial, bytes.subarray(messageStart), line);
  }

  /** Whether a partial line of `stream` waits for its final chunk (a whole line of that stream cannot bypass the assembler). */
  hasPending(stream: Stream): boolean {
    return this.#pendingOf(stream) !== undefined || this.#orphaned[stream];
  }

  /** Smallest `start` of an entry still waiting for its final chunk, or undefined. Never checkpoint past it. */
  pendingStart(): number | undefined {
    const out = this.#stdout?.start;
    const err = this.#stderr?.start;
    if (out === undefined) return err;
    if (err === undefined) return out;
    return Math.min(out, err);
  }

  /**
   * The file ended for good (deleted or rotated, and drained): emits what is pending as entries
   * flagged `partial`, in file order. Not for shutdown, where pending chunks are read again after restart.
   */
  flush(): LogEntry[] {
    return this.flushStale(Number.POSITIVE_INFINITY);
  }

  /**
   * Emits, flagged `partial`, the split lines whose first chunk was read before `openedBeforeMs`:
   * their last chunk is overdue. The chunks that still come for them are shipped flagged `partial` too.
   */
  flushStale(openedBeforeMs: number): LogEntry[] {
    const pending: [PendingEntry, Stream][] = [];
    if (this.#stdout !== undefined && this.#stdout.openedAtMs < openedBeforeMs) pending.push([this.#stdout, 'stdout']);
    if (this.#stderr !== undefined && this.#stderr.openedAtMs < openedBeforeMs) pending.push([this.#stderr, 'stderr']);
    if (pending.length === 0) return [];
    pending.sort((a, b) => a[0].start - b[0].start);
    return pending.map(([entry, stream]) => {
      this.#setPending(stream, undefined);
      // After a file's end nothing follows; after a timeout the rest of the line may still come.
      if (openedBeforeMs !== Number.POSITIVE_INFINITY) this.#orphaned[stream] = true;
      return this.#complete(entry, stream, true);
    });
  }

  #useFormat(format: 'cri' | 'docker'): 'cri' | 'docker' {
    this.#format = format;
    return format;
  }

  #pendingOf(stream: Stream): PendingEntry | undefined {
    return stream === 'stdout' ? this.#stdout : this.#stderr;
  }

  #setPending(stream: Stream, entry: PendingEntry | undefined): void {
    if (stream === 'stdout') this.#stdout = entry;
    else this.#stderr = entry;
  }

  /**
   * The hot path: a whole CRI line that fits, with nothing pending on its stream. One decode of the
   * whole line, then slices: the prefix is ASCII, so its byte offsets are character offsets.
   */
  #wholeCriLine(line: RawLine, timeEnd: number, stream: Stream, messageStart: number): LogEntry {
    const text = line.bytes.toString('utf8');
    const message = text.slice(messageStart);
    const invalidUtf8 = message.includes(REPLACEMENT_CHARACTER) && !isUtf8(line.bytes.subarray(messageStart));
    if (invalidUtf8) this.counters.invalidUtf8++;
    return { time: text.slice(0, timeEnd), stream, message, start: line.start, end: line.end, flags: invalidUtf8 ? [RecordFlag.INVALID_UTF8] : NO_FLAGS };
  }

  /** Merges a parsed chunk with what is pending on its stream; emits the entry when the chunk is final. */
  #assemble(time: string, stream: Stream, partial: boolean, message: Buffer, line: RawLine): LogEntry[] {
    const pending = this.#pendingOf(stream);
    if (pending === undefined) {
      if (!partial) {
        const entry = this.#single(time, stream, message, line);
        if (!this.#orphaned[stream]) return [entry];
        this.#orphaned[stream] = false;
        return [withFlag(entry, RecordFlag.PARTIAL)];
      }
      this.#setPending(stream, this.#open(time, message, line));
      return [];
    }
    this.#append(pending, message, line.end);
    if (partial) return [];
    this.#setPending(stream, undefined);
    const orphaned = this.#orphaned[stream];
    this.#orphaned[stream] = false;
    return [this.#complete(pending, stream, orphaned)];
  }

  /** A whole line in one physical line, decoded straight from the caller's buffer. */
  #single(time: string, stream: Stream, message: Buffer, line: RawLine): LogEntry {
    const truncated = message.length > this.#maxLineBytes;
    const bytes = truncated ? cutAtCharBoundary(message, this.#maxLineBytes) : message;
    return this.#entry(time, stream, bytes, line.start, line.end, truncated, false);
  }

  /** A line that is neither CRI nor docker json: shipped whole (up to the cap), stamped with the wall clock. */
  #unparsed(line: RawLine): LogEntry {
    this.counters.unparsed++;
    const time = new Date(this.#now()).toISOString();
    const truncated = line.bytes.length > this.#maxLineBytes;
    const bytes = truncated ? cutAtCharBoundary(line.bytes, this.#maxLineBytes) : line.bytes;
    return this.#entry(time, 'stdout', bytes, line.start, line.end, truncated, true);
  }

  #open(time: string, message: Buffer, line: RawLine): PendingEntry {
    const entry: PendingEntry = { time, start: line.start, end: line.end, chunks: [], size: 0, truncated: false, openedAtMs: this.#now() };
    this.#append(entry, message, line.end);
    return entry;
  }

  /** Keeps a copy of as much of `message` as fits under the cap; the rest is discarded and the entry marked. */
  #append(entry: PendingEntry, message: Buffer, end: number): void {
    entry.end = end;
    const room = this.#maxLineBytes - entry.size;
    let kept = message;
    if (message.length > room) {
      entry.truncated = true;
      kept = message.subarray(0, room);
    }
    if (kept.length === 0) return;
    entry.chunks.push(Buffer.from(kept));
    entry.size += kept.length;
  }

  #complete(entry: PendingEntry, stream: Stream, partial = false): LogEntry {
    const joined = entry.chunks.length === 1 ? (entry.chunks[0] ?? Buffer.alloc(0)) : Buffer.concat(entry.chunks, entry.size);
    // The cap may have fallen inside a multi-byte character: drop its head rather than call it invalid.
    const bytes = entry.truncated ? cutAtCharBoundary(joined, joined.length) : joined;
    const complete = this.#entry(entry.time, stream, bytes, entry.start, entry.end, entry.truncated, false);
    return partial ? withFlag(complete, RecordFlag.PARTIAL) : complete;
  }

  #entry(time: string, stream: Stream, bytes: Buffer, start: number, end: number, truncated: boolean, unparsed: boolean): LogEntry {
    const message = bytes.toString('utf8');
    const invalidUtf8 = message.includes(REPLACEMENT_CHARACTER) && !isUtf8(bytes);
    if (truncated) this.counters.truncated++;
    if (invalidUtf8) this.counters.invalidUtf8++;
    return { time, stream, message, start, end, flags: flagsOf(truncated, unparsed, invalidUtf8) };
  }
}

function withFlag(entry: LogEntry, flag: RecordFlag): LogEntry {
  return { ...entry, flags: [...entry.flags, flag] };
}

function flagsOf(truncated: boolean, unparsed: boolean, invalidUtf8: boolean): RecordFlag[] {
  if (!truncated && !unparsed && !invalidUtf8) return NO_FLAGS;
  const flags: RecordFlag[] = [];
  if (truncated) flags.push(RecordFlag.TRUNCATED);
  if (unparsed) flags.push(RecordFlag.UNPARSED);
  if (invalidUtf8) flags.push(RecordFlag.INVALID_UTF8);
  return flags;
}

/**
 * `bytes[0, limit)`, backed off (by up to 3 bytes) so that it does not end inside a multi-byte UTF-8
 * character: a sequence whose lead byte is within the last 3 bytes but whose length runs past `limit`
 * is dropped. Bytes that were invalid anyway are left for the UTF-8 check to flag.
 */
function cutAtCharBoundary(bytes: Buffer, limit: number): Buffer {
  const end = Math.min(limit, bytes.length);
  for (let i = end - 1; i >= 0 && i >= end - 3; i--) {
    const byte = bytes[i] ?? 0;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return bytes.subarray(0, i + length > end ? i : end);
  }
  return bytes.subarray(0, end);
}

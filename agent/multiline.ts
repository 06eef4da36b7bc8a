/**
 * Optional joining of multi-line events (stack traces, tracebacks, panics) that a program wrote as
 * several lines. A line matching `startPattern` begins a new event; any other line continues the
 * current one. Events are capped in lines and bytes, and one that sees no new line for `timeoutMs`
 * is emitted by `flushExpired`, so the last event of a quiet container does not wait forever.
 *
 * Stateful per file and stream: the caller keeps one joiner per stream of each file.
 */
import { RecordFlag } from '../shared/record.js';
import type { LogEntry } from './line-assembler.js';

export interface MultilineOptions {
  /** A line matching this starts a new event; any other line continues the current one. */
  startPattern: RegExp;
  /** An event reaching this many lines is emitted. */
  maxLines: number;
  /** An event reaching this many message bytes (UTF-8 length of the joined message) is emitted. */
  maxBytes: number;
  /** An event with no new line for this long is emitted by `flushExpired`. */
  timeoutMs: number;
}

export type MultilinePreset = 'java' | 'python' | 'go' | 'default';

/**
 * Start patterns for common runtimes. Each is tested against one line's message.
 *
 * - `default`: a new event starts at every line that does not start with whitespace and is not a
 *   Java continuation (`Caused by:`, `... N more`, `at `). Indented lines join the line above.
 * - `java`: as `default`, and a line naming a fully qualified exception class
 *   (`java.lang.IllegalStateException: boom`) also joins the line above, so a logger's message line,
 *   the exception and its `\tat ...` frames make one event.
 * - `python`: `Traceback (most recent call last):` and every other unindented line start an event;
 *   indented lines (`  File "x.py", line 3, in f`, source lines, `^^^^` markers), the final
 *   exception line (`ValueError: x`, `mod.CustomError`, `KeyboardInterrupt`…), blank lines and the
 *   chained-exception separators (`During handling of the above exception…`, `The above exception
 *   was the direct cause…`) continue it. A chained traceback's own `Traceback` line starts a new event.
 * - `go`: `panic:` / `fatal error:` and every other unindented line start an event; the blank line
 *   after it, `goroutine N [running]:` headers, function frames (`main.main()`,
 *   `net/http.(*conn).serve(0xc0000a8000)`), indented file lines, `created by …` and
 *   `[signal SIGSEGV …]` continue it.
 */
export const MULTILINE_PRESETS: Record<MultilinePreset, Omit<MultilineOptions, 'maxLines' | 'maxBytes' | 'timeoutMs'>> = {
  default: { startPattern: /^(?!\s|Caused by:|\.\.\. \d+ more|at )/ },
  java: { startPattern: /^(?!\s|Caused by:|\.\.\. \d+ more|at |[\w$]+(?:\.[\w$]+)+(?:Exception|Error|Throwable)\b)/ },
  python: {
    startPattern:
      /^(?!\s|$|During handling of the above exception|The above exception was the direct cause|(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Warning|Exit|Interrupt|Iteration)(?::|$))/,
  },
  go: { startPattern: /^(?!\s|$|goroutine \d+ \[|created by |\[signal |[^\s(]+\(.*\)$)/ },
};

/** The event being joined. */
interface PendingEvent {
  first: LogEntry;
  lines: string[];
  /** UTF-8 length of `lines` joined with `\n`. */
  bytes: number;
  end: number;
  flags: RecordFlag[];
  lastLineAtMs: number;
}

const NEWLINE_BYTES = 1;

export class MultilineJoiner {
  readonly #startPattern: RegExp;
  readonly #maxLines: number;
  readonly #maxBytes: number;
  readonly #timeoutMs: number;
  readonly #now: () => number;
  #pending: PendingEvent | undefined;

  /** `now` is a monotonic clock in milliseconds; tests inject their own. */
  constructor(options: MultilineOptions, now: () => number = () => performance.now()) {
    if (!Number.isSafeInteger(options.maxLines) || options.maxLines < 1) throw new RangeError(`maxLines must be a positive integer, got ${options.maxLines}`);
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 1) throw new RangeError(`maxBytes must be a positive integer, got ${options.maxBytes}`);
    if (!(options.timeoutMs >= 0)) throw new RangeError(`timeoutMs must be >= 0, got ${options.timeoutMs}`);
    // A global or sticky pattern keeps state in lastIndex between tests; this one must not.
    const { source, flags } = options.startPattern;
    this.#startPattern = new RegExp(source, flags.replace(/[gy]/g, ''));
    this.#maxLines = options.maxLines;
    this.#maxBytes = options.maxBytes;
    this.#timeoutMs = options.timeoutMs;
    this.#now = now;
  }

  /**
   * Feeds one complete entry of this joiner's stream; returns the events it completed, in order.
   * A joined event has the messages joined with `\n`, the first entry's time and start, the last
   * entry's end, and the union of the flags plus `multiline`; a one-line event is the entry itself.
   * A continuation that would push an event past `maxBytes` ends that event and starts the next one,
   * so no event exceeds `maxBytes` unless one entry alone does.
   */
  push(entry: LogEntry): LogEntry[] {
    const bytes = Buffer.byteLength(entry.message, 'utf8');
    const pending = this.#pending;
    const completed: LogEntry[] = [];
    if (pending !== undefined) {
      const continues = !this.#startPattern.test(entry.message) && pending.bytes + NEWLINE_BYTES + bytes <= this.#maxBytes;
      if (continues) {
        this.#append(pending, entry, bytes);
        if (pending.lines.length >= this.#maxLines || pending.bytes >= this.#maxBytes) completed.push(this.#take(pending));
        return completed;
      }
      completed.push(this.#take(pending));
    }
    const started: PendingEvent = { first: entry, lines: [entry.message], bytes, end: entry.end, flags: entry.flags, lastLineAtMs: this.#now() };
    this.#pending = started;
    if (this.#maxLines <= 1 || bytes >= this.#maxBytes) completed.push(this.#take(started));
    return completed;
  }

  /** Start of the event being joined, or undefined. The caller must never checkpoint past it. */
  pendingStart(): number | undefined {
    return this.#pending?.first.start;
  }

  /** Emits the pending event if no line has joined it for `timeoutMs`. Call it on a timer. */
  flushExpired(): LogEntry[] {
    const pending = this.#pending;
    if (pending === undefined || this.#now() - pending.lastLineAtMs < this.#timeoutMs) return [];
    return [this.#take(pending)];
  }

  /** Emits whatever is pending (the file ended, or its stream is being closed). */
  flush(): LogEntry[] {
    return this.#pending === undefined ? [] : [this.#take(this.#pending)];
  }

  #append(pending: PendingEvent, entry: LogEntry, bytes: number): void {
    pending.lines.push(entry.message);
    pending.bytes += NEWLINE_BYTES + bytes;
    pending.end = entry.end;
    pending.lastLineAtMs = this.#now();
    for (const flag of entry.flags) {
      if (!pending.flags.includes(flag)) pending.flags = [...pending.flags, flag];
    }
  }

  #take(pending: PendingEvent): LogEntry {
    this.#pending = undefined;
    if (pending.lines.length === 1) return pending.first;
    const { time, stream, start } = pending.first;
    const flags = pending.flags.includes(RecordFlag.MULTILINE) ? pending.flags : [...pending.flags, RecordFlag.MULTILINE];
    return { time, stream, message: pending.lines.join('\n'), start, end: pending.end, flags };
  }
}

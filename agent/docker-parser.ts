/**
 * Parses one line of a docker json-file log:
 *
 *   `{"log":"message text\n","stream":"stdout","time":"2026-11-22T04:17:19.123456789Z"}`
 *
 * Docker splits long lines at 16 KiB: a `log` value that does not end in `\n` is a partial chunk,
 * and the chunk whose `log` ends in `\n` completes the line. Extra keys (`attrs`) are ignored.
 * docker json-file is the less common format on Kubernetes nodes, so plain `JSON.parse` is enough.
 */
import type { Stream } from '../shared/record.js';
import { MALFORMED, type ParsedLine } from './cri-parser.js';

const NEWLINE = '\n';

/**
 * Parses one docker json-file line (without its trailing `\n`). The message excludes the `\n` that
 * ends a final chunk; a `\r` before it is kept, as every other byte is.
 */
export function parseDockerLine(line: Buffer): ParsedLine {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line.toString('utf8'));
  } catch {
    // Not JSON: the caller ships the line raw and counts it; the exception carries nothing more.
    return MALFORMED;
  }
  if (typeof parsed !== 'object' || parsed === null) return MALFORMED;
  const { log, stream, time } = parsed as { log?: unknown; stream?: unknown; time?: unknown };
  if (typeof log !== 'string' || !isStream(stream) || typeof time !== 'string' || !isTimeShaped(time)) return MALFORMED;

  const partial = !log.endsWith(NEWLINE);
  const text = partial ? log : log.slice(0, -NEWLINE.length);
  return { kind: 'ok', time, stream, partial, message: Buffer.from(text, 'utf8') };
}

function isStream(value: unknown): value is Stream {
  return value === 'stdout' || value === 'stderr';
}

/** Same cheap shape check as for CRI: a digit first, `T` after the date, `Z` or an offset digit last. */
function isTimeShaped(time: string): boolean {
  return /^\d.{9}[Tt].*[\dZz]$/.test(time);
}

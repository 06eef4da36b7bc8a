/**
 * Structured JSON logs on stdout (pino), with credentials redacted wherever they appear by key, and a
 * rate limiter so that a flood of bad input logs once per interval with a count, not once per line.
 */
import { pino, stdSerializers, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export const REDACTED = '[redacted]';

/** Keys whose values are never logged. */
const SECRET_KEY = /(pass(word|phrase)?|secret|token|api[-_]?key|credentials?|authorization|private[-_]?key|session[-_]?key)$/i;

const SECRET_PATHS = [
  'password',
  'secret',
  'token',
  'apiKey',
  'authorization',
  'secretAccessKey',
  'sessionToken',
  '*.password',
  '*.secret',
  '*.token',
  '*.apiKey',
  '*.authorization',
  '*.secretAccessKey',
  '*.sessionToken',
  '*.*.password',
  '*.*.apiKey',
  '*.*.secretAccessKey',
  'headers.authorization',
  'req.headers.authorization',
];

export interface LoggerOptions {
  name: string;
  level?: LogLevel;
  /** Where lines go; defaults to stdout (fd 1). */
  destination?: NodeJS.WritableStream | number;
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions): Logger {
  const destination =
    typeof options.destination === 'object' ? options.destination : pino.destination({ dest: options.destination ?? 1, sync: false });
  return pino(
    {
      name: options.name,
      level: options.level ?? 'info',
      base: { pid: process.pid, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: SECRET_PATHS, censor: REDACTED },
      serializers: { err: (err: Error) => redactSecrets(stdSerializers.err(err)) },
    },
    destination,
  );
}

/** Deep copy with every value under a secret-looking key replaced, and credentials stripped from URLs. */
export function redactSecrets<T>(value: T): T {
  return redactValue(value, 0, false) as T;
}

/** Inside a secret setting (`password: { value, file }`), the value is hidden and the file path kept. */
function redactValue(value: unknown, depth: number, inSecret: boolean): unknown {
  if (depth > 12) return value;
  if (typeof value === 'string') return redactUrlCredentials(value);
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1, false));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const secret = SECRET_KEY.test(k) || (inSecret && k === 'value');
      if (!secret || v === undefined || v === null || v === '') out[k] = redactValue(v, depth + 1, false);
      else if (typeof v === 'object' && !Array.isArray(v)) out[k] = redactValue(v, depth + 1, true);
      else out[k] = REDACTED;
    }
    return out;
  }
  return value;
}

/** `https://user:pass@host/` → `https://user:[redacted]@host/` anywhere in a string. */
export function redactUrlCredentials(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]+):[^@/\s]+@/gi, `$1:${REDACTED}@`);
}

/**
 * Logs a given key at most once per interval; occurrences in between are counted and reported with
 * the next line (`suppressed`). Keys must come from a small fixed set (reasons), never from input.
 */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, fields: Record<string, unknown>, message: string): boolean {
    const now = this.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return false;
    }
    this.logger.warn({ ...fields, reason: key, ...(entry?.suppressed ? { suppressed: entry.suppressed } : {}) }, message);
    this.last.set(key, { at: now, suppressed: 0 });
    return true;
  }
}

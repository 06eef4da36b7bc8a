/**
 * One error base for the whole project: every error carries a stable `code`, whether retrying can
 * succeed (`retriable`), and the error that caused it. Codes are constants, never free text, so logs
 * and metrics can group by them.
 */
export const ErrorCode = {
  CONFIG_INVALID: 'LOGSHIP_CONFIG_INVALID',
  CONFIG_UNREADABLE: 'LOGSHIP_CONFIG_UNREADABLE',
  CHECKPOINT_IO: 'LOGSHIP_CHECKPOINT_IO',
  CHECKPOINT_CORRUPT: 'LOGSHIP_CHECKPOINT_CORRUPT',
  SINK_REJECTED: 'LOGSHIP_SINK_REJECTED',
  SINK_UNAVAILABLE: 'LOGSHIP_SINK_UNAVAILABLE',
  KAFKA: 'LOGSHIP_KAFKA',
  KUBERNETES: 'LOGSHIP_KUBERNETES',
  RETRY_EXHAUSTED: 'LOGSHIP_RETRY_EXHAUSTED',
  ABORTED: 'LOGSHIP_ABORTED',
  SHUTDOWN_TIMEOUT: 'LOGSHIP_SHUTDOWN_TIMEOUT',
  INTERNAL: 'LOGSHIP_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface LogshipErrorOptions {
  code: ErrorCode;
  retriable?: boolean;
  cause?: unknown;
}

export class LogshipError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;

  constructor(message: string, options: LogshipErrorOptions) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.retriable = options.retriable ?? false;
  }
}

/** One problem found in a configuration, located by its path (`sinks[1].flushIntervalMs`). */
export interface ConfigProblem {
  path: string;
  message: string;
  /** Where the offending value came from: the file, or the environment variable that set it. */
  source?: string;
}

export class ConfigError extends LogshipError {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[], options: { code?: ErrorCode; cause?: unknown } = {}) {
    super(formatProblems(problems), { code: options.code ?? ErrorCode.CONFIG_INVALID, cause: options.cause });
    this.problems = problems;
  }
}

function formatProblems(problems: readonly ConfigProblem[]): string {
  const lines = problems.map((p) => `  - ${p.path || '(root)'}: ${p.message}${p.source ? ` (from ${p.source})` : ''}`);
  return `invalid configuration, ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${lines.join('\n')}`;
}

export class CheckpointError extends LogshipError {}

export class SinkError extends LogshipError {}

export class AbortError extends LogshipError {
  constructor(message = 'operation aborted', cause?: unknown) {
    super(message, { code: ErrorCode.ABORTED, cause });
  }
}

/**
 * Whether an error is worth retrying. Our own errors say so; errors from the client libraries are
 * recognised by the flags they carry (kafkajs `retriable`, HTTP status codes) and by transient
 * network error codes. Everything else fails fast.
 */
export function isRetriable(error: unknown): boolean {
  if (error instanceof LogshipError) return error.retriable;
  if (typeof error !== 'object' || error === null) return false;
  const e = error as { retriable?: unknown; statusCode?: unknown; code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  if (typeof e.retriable === 'boolean') return e.retriable;
  const status = typeof e.statusCode === 'number' ? e.statusCode : e.$metadata?.httpStatusCode;
  if (typeof status === 'number') return status === 408 || status === 429 || status >= 500;
  return typeof e.code === 'string' && TRANSIENT_NETWORK_CODES.has(e.code);
}

const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** A short, single-line description of any thrown value, for logs. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

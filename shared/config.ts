/**
 * Configuration loading shared by both binaries: a YAML file, then `LOGSHIP_…` environment overrides,
 * validated by one zod schema that holds defaults, descriptions and cross-field rules. Any problem,
 * wherever it is, ends in one {@link ConfigError} that lists every problem by path.
 *
 * Environment overrides name a setting by its path: segments joined by `__`, each segment the
 * setting's name in SCREAMING_SNAKE_CASE, array items by index. So `kafka.clientId` is
 * `LOGSHIP_KAFKA__CLIENT_ID` and `sinks[1].flushIntervalMs` is `LOGSHIP_SINKS__1__FLUSH_INTERVAL_MS`.
 * Values are read as the schema expects: numbers, `true`/`false`, lists as `a,b,c` or YAML `[a, b]`,
 * objects as YAML `{k: v}`. An override that names no setting is an error, like an unknown key.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ConfigError, ErrorCode, type ConfigProblem } from './errors.js';

export const ENV_PREFIX = 'LOGSHIP_';

export interface LoadConfigOptions {
  /** YAML file to read; without one, the configuration is defaults plus environment. */
  file?: string;
  /** Environment to read overrides from; defaults to `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Prefix of override variables; defaults to `LOGSHIP_`. */
  envPrefix?: string;
}

export function loadConfig<S extends z.ZodType>(schema: S, options: LoadConfigOptions = {}): z.output<S> {
  const problems: ConfigProblem[] = [];
  let document: unknown = {};
  if (options.file !== undefined) {
    document = readYamlFile(options.file, problems);
  }
  if (document === null || document === undefined) document = {};
  if (!isPlainObject(document)) {
    problems.push({ path: '', message: `the file must hold a mapping of settings, not ${describeType(document)}`, source: options.file });
    document = {};
  }
  const envSources = applyEnvOverrides(schema, document as Record<string, unknown>, options.env ?? process.env, options.envPrefix ?? ENV_PREFIX, problems);
  const parsed = schema.safeParse(document);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(...problemsFromIssue(issue, envSources, options.file));
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return parsed.data as z.output<S>;
}

function readYamlFile(file: string, problems: ConfigProblem[]): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `cannot read file (${(error as Error).message})`;
    throw new ConfigError([{ path: '', message: reason, source: file }], { code: ErrorCode.CONFIG_UNREADABLE, cause: error });
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const where = e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : 'YAML';
      problems.push({ path: '', message: `${where}: ${e.message.split('\n')[0] ?? e.message}`, source: file });
    }
    return {};
  }
  return doc.toJS() as unknown;
}

/** Path segment list to display form: `sinks[1].flushIntervalMs`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

function problemsFromIssue(issue: z.core.$ZodIssue, envSources: Map<string, string>, file: string | undefined): ConfigProblem[] {
  const sourceOf = (path: string): string | undefined => envSources.get(path) ?? file;
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const path = formatPath([...issue.path, key]);
      return { path, message: 'unknown setting', source: sourceOf(path) };
    });
  }
  const path = formatPath(issue.path);
  const message =
    issue.code === 'invalid_type' && issue.message.endsWith('received undefined') ? `required (${issue.expected})` : issue.message;
  return [{ path, message, source: sourceOf(path) }];
}

// ---- environment overrides -------------------------------------------------------------------

type Def = { type: string; innerType?: z.ZodType; in?: z.ZodType; out?: z.ZodType; shape?: Record<string, z.ZodType>; element?: z.ZodType; valueType?: z.ZodType; options?: z.ZodType[] };

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** Strips wrappers (optional, default, pipe…) down to the schema that decides the value's shape. */
function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (let i = 0; i < 32; i++) {
    const def = defOf(current);
    if (def.innerType) current = def.innerType;
    else if (def.type === 'pipe' && def.in && def.out) {
      // A preprocess step is a pipe from a transform into the schema that validates.
      current = defOf(def.in).type === 'transform' ? def.out : def.in;
    } else return current;
  }
  return current;
}

function normalizeName(name: string): string {
  return name.replace(/_/g, '').toLowerCase();
}

function applyEnvOverrides(
  schema: z.ZodType,
  target: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  prefix: string,
  problems: ConfigProblem[],
): Map<string, string> {
  const sources = new Map<string, string>();
  const names = Object.keys(env).filter((name) => name.startsWith(prefix)).sort();
  for (const name of names) {
    const raw = env[name];
    if (raw === undefined) continue;
    const segments = name.slice(prefix.length).split('__');
    const resolved = resolveEnvPath(schema, segments);
    if ('error' in resolved) {
      problems.push({ path: resolved.path, message: resolved.error, source: name });
      continue;
    }
    const path = formatPath(resolved.path);
    const value = coerceEnvValue(raw, resolved.leaf);
    if ('error' in value) {
      problems.push({ path, message: value.error, source: name });
      continue;
    }
    setPath(target, resolved.path, value.value);
    sources.set(path, name);
  }
  return sources;
}

type Resolved = { path: (string | number)[]; leaf: z.ZodType } | { path: string; error: string };

function resolveEnvPath(schema: z.ZodType, segments: string[]): Resolved {
  const path: (string | number)[] = [];
  let current = schema;
  for (const segment of segments) {
    const node = unwrap(current);
    const def = defOf(node);
    if (def.type === 'object' && def.shape) {
      const wanted = normalizeName(segment);
      const key = Object.keys(def.shape).find((k) => normalizeName(k) === wanted);
      if (key === undefined || !segment) return { path: formatPath([...path, segment.toLowerCase()]), error: 'unknown setting' };
      path.push(key);
      current = def.shape[key] as z.ZodType;
    } else if (def.type === 'array' && def.element) {
      if (!/^\d+$/.test(segment)) return { path: formatPath(path), error: `expected an array index, got "${segment}"` };
      path.push(Number(segment));
      current = def.element;
    } else if (def.type === 'record' && def.valueType) {
      path.push(segment);
      current = def.valueType;
    } else {
      return { path: formatPath(path), error: `"${formatPath(path)}" has no sub-settings` };
    }
  }
  return { path, leaf: current };
}

function coerceEnvValue(raw: string, leaf: z.ZodType): { value: unknown } | { error: string } {
  const kind = defOf(unwrap(leaf)).type;
  const trimmed = raw.trim();
  switch (kind) {
    case 'number':
    case 'int':
    case 'bigint': {
      const n = Number(trimmed);
      return trimmed === '' || Number.isNaN(n) ? { error: `expected a number, got "${raw}"` } : { value: n };
    }
    case 'boolean':
      if (/^(true|1|yes)$/i.test(trimmed)) return { value: true };
      if (/^(false|0|no)$/i.test(trimmed)) return { value: false };
      return { error: `expected true or false, got "${raw}"` };
    case 'array':
      if (trimmed.startsWith('[')) return parseYamlValue(trimmed);
      return { value: trimmed === '' ? [] : trimmed.split(',').map((s) => s.trim()) };
    case 'object':
    case 'record':
      return parseYamlValue(trimmed);
    default:
      // Strings (secrets included) are taken verbatim, never re-parsed.
      return { value: raw };
  }
}

function parseYamlValue(text: string): { value: unknown } | { error: string } {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return { error: `not valid YAML: ${doc.errors[0]?.message.split('\n')[0] ?? 'parse error'}` };
  return { value: doc.toJS() as unknown };
}

function setPath(target: Record<string, unknown>, path: (string | number)[], value: unknown): void {
  let node: Record<string | number, unknown> = target;
  path.forEach((segment, i) => {
    if (i === path.length - 1) {
      node[segment] = value;
      return;
    }
    const next = node[segment];
    if (next !== null && typeof next === 'object') {
      node = next as Record<string | number, unknown>;
    } else {
      const created: Record<string | number, unknown> = typeof path[i + 1] === 'number' ? ([] as unknown as Record<number, unknown>) : {};
      node[segment] = created;
      node = created;
    }
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeType(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  return `a ${typeof value}`;
}

// ---- schema helpers --------------------------------------------------------------------------

/** A list of strings that also accepts one comma-separated string (handy in env and CLI flags). */
export function csvList<T extends z.ZodType<string>>(item: T) {
  return z.preprocess((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v), z.array(item));
}

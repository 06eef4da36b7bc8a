/**
 * Which settings are secrets, derived from the schema itself: every setting built from `secretSchema`
 * (shared/secrets.ts) carries the `secret` mark, and the JSON Schema zod renders keeps it. So a new
 * secret setting is redacted in `--print-config` and error messages without a list to keep in step.
 */
import { z } from 'zod';
import { REDACTED } from './logger.js';
import { SECRET_MARK } from './secrets.js';

interface JsonSchema {
  [SECRET_MARK]?: boolean;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
}

/** Path of a secret setting: object keys, `[]` for any list item, `*` for any map key. */
export type SecretPath = readonly string[];

/** Every secret setting of a schema, e.g. `['sinks', '[]', 's3', 'connection', 'secretAccessKey']`. */
export function secretPaths(schema: z.ZodType): SecretPath[] {
  const paths: SecretPath[] = [];
  walk(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema, [], paths, 0);
  return paths;
}

function walk(node: JsonSchema, path: string[], out: SecretPath[], depth: number): void {
  if (depth > 32) return;
  if (node[SECRET_MARK] === true) {
    out.push(path);
    return;
  }
  for (const variant of [...(node.anyOf ?? []), ...(node.oneOf ?? []), ...(node.allOf ?? [])]) walk(variant, path, out, depth + 1);
  for (const [key, child] of Object.entries(node.properties ?? {})) walk(child, [...path, key], out, depth + 1);
  if (node.items) walk(node.items, [...path, '[]'], out, depth + 1);
  if (typeof node.additionalProperties === 'object') walk(node.additionalProperties, [...path, '*'], out, depth + 1);
}

/** A deep copy of `config` with the value of every secret setting of `schema` replaced (file paths kept). */
export function redactConfig<T>(schema: z.ZodType, config: T): T {
  const copy = structuredClone(config);
  for (const path of secretPaths(schema)) redactAt(copy, path);
  return copy;
}

function redactAt(node: unknown, path: SecretPath): void {
  if (node === null || typeof node !== 'object') return;
  const [head, ...rest] = path;
  if (head === undefined) {
    const secret = node as Record<string, unknown>;
    if (typeof secret.value === 'string') secret.value = REDACTED;
    return;
  }
  if (head === '[]') {
    if (Array.isArray(node)) for (const item of node) redactAt(item, rest);
    return;
  }
  if (head === '*') {
    for (const value of Object.values(node)) redactAt(value, rest);
    return;
  }
  redactAt((node as Record<string, unknown>)[head], rest);
}

/** The secret values present in `config` (to scrub them from text such as error messages). */
export function secretValues(schema: z.ZodType, config: unknown): string[] {
  const values: string[] = [];
  const collect = (node: unknown, path: SecretPath): void => {
    if (node === null || typeof node !== 'object') return;
    const [head, ...rest] = path;
    if (head === undefined) {
      const value = (node as Record<string, unknown>).value;
      if (typeof value === 'string' && value !== '') values.push(value);
      return;
    }
    if (head === '[]') {
      if (Array.isArray(node)) for (const item of node) collect(item, rest);
    } else if (head === '*') {
      for (const value of Object.values(node)) collect(value, rest);
    } else collect((node as Record<string, unknown>)[head], rest);
  };
  for (const path of secretPaths(schema)) collect(config, path);
  return values;
}

const normalize = (segment: string): string => segment.replace(/_/g, '').toLowerCase();

/**
 * The secret values a configuration's sources hold, read without validating them (for a config that
 * failed validation): environment overrides that name a secret setting (`…__VALUE`, or the whole
 * setting), and secret settings of the file's document.
 */
export function secretValuesInSources(schema: z.ZodType, env: NodeJS.ProcessEnv, prefix: string, document: unknown): string[] {
  const paths = secretPaths(schema);
  const values = document === undefined ? [] : secretValues(schema, document);
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined || raw === '' || !name.startsWith(prefix)) continue;
    const segments = name.slice(prefix.length).split('__').map(normalize);
    const named = paths.some((path) => {
      const tail = segments.slice(path.length);
      if (tail.length > 1 || (tail.length === 1 && tail[0] !== 'value')) return false;
      return path.every((part, i) => {
        const segment = segments[i];
        if (segment === undefined) return false;
        return part === '[]' ? /^\d+$/.test(segment) : part === '*' || normalize(part) === segment;
      });
    });
    if (named) values.push(raw);
  }
  return values;
}

/** `text` with every occurrence of the given secret values replaced. */
export function scrubSecrets(text: string, values: readonly string[]): string {
  let out = text;
  for (const value of [...values].sort((a, b) => b.length - a.length)) if (value.length > 0) out = out.split(value).join(REDACTED);
  return out;
}

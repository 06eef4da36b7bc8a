/**
 * The Elasticsearch sink's settings as a config schema, and its index name templates, apart from the
 * sink: checking a config does not load the Elasticsearch client, and an aggregator without an
 * Elasticsearch sink never does (aggregator/pipeline.ts).
 */
import { z } from 'zod';
import { elasticsearchConnectionSchema } from '../../shared/elasticsearch-connection.js';
import { ConfigError } from '../../shared/errors.js';
import { DEFAULT_TEMPLATE_PRIORITY } from '../elasticsearch-template.js';
import type { RecordFields } from '../sink.js';

const MIB = 1024 * 1024;

export const DEFAULT_INDEX = 'logship-{namespace}-{yyyy.MM.dd}';

/** Elasticsearch's limit on an index name. */
const MAX_INDEX_NAME_BYTES = 255;
/** A substituted value (namespace, cluster) is cut to this many characters. */
const MAX_INDEX_VALUE_CHARS = 100;

// ---- index names ----------------------------------------------------------------------------------

const DATE_TOKEN = /yyyy|MM|dd|HH|[._-]/gy;
const PLACEHOLDER = /\{([^{}]*)\}/g;
/** What Elasticsearch accepts in an index name, restricted to the unsurprising part. */
const LITERAL = /^[a-z0-9._-]*$/;

type IndexNamePart =
  | { readonly kind: 'literal'; readonly text: string }
  | { readonly kind: 'namespace' | 'cluster' }
  | { readonly kind: 'date'; readonly tokens: readonly string[] };

export interface IndexName {
  readonly template: string;
  /** The template with every placeholder as `*`: the index template's pattern. */
  readonly pattern: string;
  readonly usesDate: boolean;
  render(fields: Pick<RecordFields, 'namespace' | 'cluster' | 'timeMs'>): string;
}

/** Problems of an index name template, for the config schema; empty when it is valid. */
export function indexNameProblems(template: string): string[] {
  const problems: string[] = [];
  if (!/^[a-z0-9]/.test(template)) problems.push('must start with a lower-case letter or digit (not a placeholder, "-", "_", "+" or ".")');
  for (const part of parseParts(template)) {
    if (part.kind === 'invalid') problems.push(part.problem);
  }
  if (Buffer.byteLength(template) > MAX_INDEX_NAME_BYTES) problems.push(`must be at most ${MAX_INDEX_NAME_BYTES} bytes`);
  return problems;
}

/**
 * Compiles an index name template: `{namespace}` and `{cluster}` are the record's, lower-cased with
 * any character other than `a-z 0-9 . _ -` replaced by `_` and cut to 100 characters; a date
 * placeholder such as `{yyyy.MM.dd}` (tokens `yyyy`, `MM`, `dd`, `HH`; separators `.`, `-`, `_`) is
 * the record's own `@timestamp` in UTC. The result is cut to 255 bytes.
 */
export function compileIndexName(template: string): IndexName {
  const problems = indexNameProblems(template);
  if (problems.length > 0) throw new ConfigError(problems.map((message) => ({ path: 'index', message })));
  const parts = parseParts(template) as IndexNamePart[];
  const pattern = parts.map((p) => (p.kind === 'literal' ? p.text : '*')).join('').replace(/\*+/g, '*');
  return {
    template,
    pattern,
    usesDate: parts.some((p) => p.kind === 'date'),
    render(fields) {
      let name = '';
      for (const part of parts) {
        if (part.kind === 'literal') name += part.text;
        else if (part.kind === 'date') name += formatDate(fields.timeMs, part.tokens);
        else name += sanitizeIndexValue(fields[part.kind]);
      }
      return name.length > MAX_INDEX_NAME_BYTES ? name.slice(0, MAX_INDEX_NAME_BYTES) : name;
    },
  };
}

function parseParts(template: string): (IndexNamePart | { kind: 'invalid'; problem: string })[] {
  const parts: (IndexNamePart | { kind: 'invalid'; problem: string })[] = [];
  const literal = (text: string): void => {
    if (text === '') return;
    if (LITERAL.test(text)) parts.push({ kind: 'literal', text });
    else parts.push({ kind: 'invalid', problem: `"${text}": only lower-case letters, digits, ".", "_" and "-" outside placeholders` });
  };
  let last = 0;
  for (const match of template.matchAll(PLACEHOLDER)) {
    literal(template.slice(last, match.index));
    last = match.index + match[0].length;
    const body = match[1] ?? '';
    if (body === 'namespace' || body === 'cluster') parts.push({ kind: body });
    else {
      const tokens = dateTokens(body);
      parts.push(tokens ? { kind: 'date', tokens } : { kind: 'invalid', problem: `unknown placeholder {${body}} (use {namespace}, {cluster} or a date such as {yyyy.MM.dd})` });
    }
  }
  literal(template.slice(last));
  return parts;
}

function dateTokens(format: string): string[] | undefined {
  DATE_TOKEN.lastIndex = 0;
  const tokens: string[] = [];
  while (DATE_TOKEN.lastIndex < format.length) {
    const match = DATE_TOKEN.exec(format);
    if (match === null) return undefined;
    tokens.push(match[0]);
  }
  return tokens.some((t) => t.length > 1) ? tokens : undefined;
}

function formatDate(timeMs: number, tokens: readonly string[]): string {
  const date = new Date(timeMs);
  let out = '';
  for (const token of tokens) {
    if (token === 'yyyy') out += String(date.getUTCFullYear()).padStart(4, '0');
    else if (token === 'MM') out += String(date.getUTCMonth() + 1).padStart(2, '0');
    else if (token === 'dd') out += String(date.getUTCDate()).padStart(2, '0');
    else if (token === 'HH') out += String(date.getUTCHours()).padStart(2, '0');
    else out += token;
  }
  return out;
}

export function sanitizeIndexValue(value: string): string {
  const cleaned = value.toLowerCase().replace(/[^a-z0-9._-]/g, '_');
  return cleaned === '' ? '_' : cleaned.slice(0, MAX_INDEX_VALUE_CHARS);
}

// ---- options --------------------------------------------------------------------------------------

export const elasticsearchSinkOptionsSchema = z.strictObject({
  connection: elasticsearchConnectionSchema.describe('Where Elasticsearch is and how to authenticate.'),
  index: z
    .string()
    .default(DEFAULT_INDEX)
    .superRefine((template, ctx) => {
      for (const message of indexNameProblems(template)) ctx.addIssue({ code: 'custom', message });
    })
    .describe(
      'Index name template. `{namespace}` and `{cluster}` are the record\'s (lower-cased; characters other than `a-z 0-9 . _ -` become `_`); `{yyyy.MM.dd}` (tokens `yyyy`, `MM`, `dd`, `HH`) is the record\'s own `@timestamp`, UTC. Daily indices, not data streams (a replay must overwrite).',
    ),
  installTemplate: z.boolean().default(true).describe('Install (or update) the index template at start. Turn off when operators manage templates themselves.'),
  templateName: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case letters, digits, ".", "_" and "-"')
    .default('logship')
    .describe('Name of the composable index template; its pattern is the index template with placeholders as `*`.'),
  templatePriority: z
    .number()
    .int()
    .min(0)
    .default(DEFAULT_TEMPLATE_PRIORITY)
    .describe('Priority of the index template. Composable templates with overlapping patterns must differ in priority; the highest wins.'),
  numberOfShards: z.number().int().min(1).max(1024).default(1).describe('Primary shards of each new index.'),
  numberOfReplicas: z.number().int().min(0).max(16).default(1).describe('Replicas of each new index (0 on a single-node cluster).'),
  refreshIntervalMs: z.number().int().min(100).default(5_000).describe('How often new documents become searchable (`index.refresh_interval`).'),
  messageFieldType: z
    .enum(['text', 'match_only_text'])
    .default('text')
    .describe('Mapping of `message`. `match_only_text` saves disk but scores nothing and runs phrase queries slower; it needs the mapper-extras module.'),
  maxRequestBytes: z
    .number()
    .int()
    .min(64 * 1024)
    .max(100 * MIB)
    .default(5 * MIB)
    .describe('Largest bulk request body; a batch is split into requests up to this size (a single larger record goes alone). Keep it below the cluster\'s `http.max_content_length`.'),
  concurrency: z.number().int().min(1).max(32).default(2).describe('Bulk requests of one batch in flight at once.'),
});

export type ElasticsearchSinkOptions = z.output<typeof elasticsearchSinkOptionsSchema>;


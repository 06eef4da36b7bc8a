/**
 * Renders a configuration schema as a Markdown reference: one row per setting with its path, type,
 * default and description, all taken from the schema so the doc cannot drift from the code.
 */
import { z } from 'zod';

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  required?: string[];
}

export interface SettingRow {
  path: string;
  type: string;
  required: boolean;
  defaultValue?: string;
  description: string;
}

export function settingRows(schema: z.ZodType): SettingRow[] {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const rows: SettingRow[] = [];
  walk(json, [], true, rows);
  return rows;
}

function walk(node: JsonSchema, path: string[], required: boolean, rows: SettingRow[]): void {
  const variants = node.anyOf ?? node.oneOf;
  const objectVariant = variants?.find((v) => v.properties);
  const target = node.properties ? node : objectVariant;
  if (target?.properties && path.length > 0 && !variants) {
    // A section: list it only when it carries a description of its own.
    if (node.description) rows.push({ path: path.join('.'), type: 'section', required, description: node.description });
  }
  if (target?.properties) {
    for (const [key, child] of Object.entries(target.properties)) {
      walk(child, [...path, key], (target.required ?? []).includes(key) && child.default === undefined, rows);
    }
    return;
  }
  if (node.type === 'array' && node.items?.properties) {
    rows.push({ path: path.join('.'), type: 'list', required, defaultValue: fmt(node.default), description: node.description ?? '' });
    walk(node.items, [...path.slice(0, -1), `${path.at(-1) ?? ''}[]`], true, rows);
    return;
  }
  rows.push({ path: path.join('.'), type: typeOf(node), required, defaultValue: fmt(node.default), description: node.description ?? '' });
}

function typeOf(node: JsonSchema): string {
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (node.const !== undefined) return JSON.stringify(node.const);
  const variants = node.anyOf ?? node.oneOf;
  if (variants) return variants.map(typeOf).join(' \\| ');
  if (node.type === 'array') return `list of ${node.items ? typeOf(node.items) : 'any'}`;
  if (node.type === 'object' && node.additionalProperties && typeof node.additionalProperties === 'object') {
    return `map of ${typeOf(node.additionalProperties)}`;
  }
  const base = Array.isArray(node.type) ? node.type.join(' \\| ') : (node.type ?? 'any');
  const bounds: string[] = [];
  if (node.minimum !== undefined) bounds.push(`>= ${node.minimum}`);
  if (node.exclusiveMinimum !== undefined) bounds.push(`> ${node.exclusiveMinimum}`);
  if (node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER) bounds.push(`<= ${node.maximum}`);
  return bounds.length > 0 ? `${base} (${bounds.join(', ')})` : base;
}

function fmt(value: unknown): string | undefined {
  return value === undefined ? undefined : `\`${JSON.stringify(value)}\``;
}

/** Environment variable that overrides a setting path (`kafka.clientId` → `LOGSHIP_KAFKA__CLIENT_ID`). */
export function envNameFor(path: string, envPrefix = 'LOGSHIP_'): string {
  const segments = path.split('.').map((s) => s.replace(/\[\]$/, '__<n>').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase());
  return envPrefix + segments.join('__');
}

export function renderConfigReference(title: string, schema: z.ZodType, envPrefix = 'LOGSHIP_'): string {
  const rows = settingRows(schema);
  const lines = [
    `## ${title}`,
    '',
    '| setting | type | default | environment | description |',
    '|---|---|---|---|---|',
    ...rows.map((r) =>
      r.type === 'section'
        ? `| **${r.path}** | | | | ${escapeCell(r.description)} |`
        : `| \`${r.path}\` | ${r.type}${r.required ? ' (required)' : ''} | ${r.defaultValue ?? ''} | \`${envNameFor(r.path, envPrefix)}\` | ${escapeCell(r.description)} |`,
    ),
    '',
  ];
  return lines.join('\n');
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

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
  exclusiveMaximum?: number;
  minLength?: number;
  minItems?: number;
  pattern?: string;
  required?: string[];
}

export interface SettingRow {
  path: string;
  /** `section` for a group of settings, else the value's type with its bounds. */
  type: string;
  required: boolean;
  defaultValue?: string;
  description: string;
}

/** Path segment standing for any key of a map (`parse.multiline.containers.<key>.preset`). */
export const MAP_KEY_PLACEHOLDER = '<key>';

/**
 * One row per setting, in schema order: every nested object is a `section` row followed by its
 * settings; a list of objects or a map of objects is a row followed by the settings of one item
 * (`sinks[].name`, `containers.<key>.preset`).
 */
export function settingRows(schema: z.ZodType): SettingRow[] {
  const input = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  // A setting is required when the input needs it; the output schema also knows fields whose input
  // side is a preprocess step (which accepts anything, `undefined` included) but which must be set.
  const output = z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }) as JsonSchema;
  const rows: SettingRow[] = [];
  walk(input, output, [], true, rows);
  return rows;
}

function objectOf(node: JsonSchema | undefined): JsonSchema | undefined {
  if (node?.properties) return node;
  return (node?.anyOf ?? node?.oneOf)?.find((v) => v.properties);
}

function mapValueOf(node: JsonSchema | undefined): JsonSchema | undefined {
  return node?.type === 'object' && typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined;
}

function walk(node: JsonSchema, out: JsonSchema | undefined, path: string[], required: boolean, rows: SettingRow[]): void {
  const target = objectOf(node);
  if (target) {
    if (path.length > 0) rows.push({ path: path.join('.'), type: 'section', required, description: node.description ?? '' });
    walkProperties(target, objectOf(out), path, rows);
    return;
  }
  const name = path.at(-1) ?? '';
  const listItem = node.type === 'array' ? objectOf(node.items) : undefined;
  if (listItem) {
    rows.push({ path: path.join('.'), type: 'list', required, defaultValue: fmt(node.default, name), description: node.description ?? '' });
    walkProperties(listItem, objectOf(out?.items), [...path.slice(0, -1), `${name}[]`], rows);
    return;
  }
  const mapItem = objectOf(mapValueOf(node));
  if (mapItem) {
    rows.push({ path: path.join('.'), type: `map, \`${MAP_KEY_PLACEHOLDER}\` → the settings below`, required, defaultValue: fmt(node.default, name), description: node.description ?? '' });
    walkProperties(mapItem, objectOf(mapValueOf(out)), [...path, MAP_KEY_PLACEHOLDER], rows);
    return;
  }
  rows.push({ path: path.join('.'), type: typeOf(withOutputBounds(node, out), name), required, defaultValue: fmt(node.default, name), description: node.description ?? '' });
}

/** The settings of one object (a section, a list item, a map value), without a row of its own. */
function walkProperties(target: JsonSchema, out: JsonSchema | undefined, path: string[], rows: SettingRow[]): void {
  for (const [key, child] of Object.entries(target.properties ?? {})) {
    const needed = (target.required ?? []).includes(key) || (out?.required ?? []).includes(key);
    walk(child, out?.properties?.[key], [...path, key], needed && child.default === undefined, rows);
  }
}

/** Bounds a preprocess step hides from the input schema (e.g. a list's minimum length) come from the output. */
function withOutputBounds(node: JsonSchema, out: JsonSchema | undefined): JsonSchema {
  if (node.type === 'array' && out?.type === 'array' && node.minItems === undefined && out.minItems !== undefined) return { ...node, minItems: out.minItems };
  return node;
}

function typeOf(node: JsonSchema, name = ''): string {
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (node.const !== undefined) return JSON.stringify(node.const);
  const variants = node.anyOf ?? node.oneOf;
  if (variants) return variants.map((v) => typeOf(v, name)).join(' \\| ');
  if (node.type === 'array') {
    const item = `list of ${node.items ? typeOf(node.items) : 'any'}`;
    return node.minItems !== undefined && node.minItems > 0 ? `${item}, at least ${node.minItems}` : item;
  }
  const mapValue = mapValueOf(node);
  if (mapValue) return `map of ${typeOf(mapValue)}`;
  const base = Array.isArray(node.type) ? node.type.join(' \\| ') : (node.type ?? 'any');
  const bounds: string[] = [];
  const unit = unitOf(name);
  const num = (n: number): string => {
    const human = unit ? humanize(n, unit) : undefined;
    return human === undefined ? String(n) : `${n} = ${human}`;
  };
  if (node.minimum !== undefined && node.minimum > Number.MIN_SAFE_INTEGER) bounds.push(`>= ${num(node.minimum)}`);
  if (node.exclusiveMinimum !== undefined) bounds.push(`> ${num(node.exclusiveMinimum)}`);
  if (node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER) bounds.push(`<= ${num(node.maximum)}`);
  if (node.exclusiveMaximum !== undefined && node.exclusiveMaximum < Number.MAX_SAFE_INTEGER) bounds.push(`< ${num(node.exclusiveMaximum)}`);
  if (node.minLength === 1) bounds.push('non-empty');
  else if (node.minLength !== undefined && node.minLength > 1) bounds.push(`at least ${node.minLength} characters`);
  if (node.pattern !== undefined) bounds.push(`matching \`${node.pattern.replace(/\|/g, '\\|')}\``);
  return bounds.length > 0 ? `${base} (${bounds.join(', ')})` : base;
}

type Unit = 'bytes' | 'ms';

/** Units are in setting names (`maxBatchBytes`, `flushIntervalMs`), so the doc can spell values out. */
function unitOf(name: string): Unit | undefined {
  if (/Bytes$/.test(name)) return 'bytes';
  if (/Ms$/.test(name)) return 'ms';
  return undefined;
}

const BYTE_UNITS: [number, string][] = [
  [1024 ** 3, 'GiB'],
  [1024 ** 2, 'MiB'],
  [1024, 'KiB'],
];
const TIME_UNITS: [number, string][] = [
  [3_600_000, 'h'],
  [60_000, 'min'],
  [1_000, 's'],
];

/** `262144` bytes → `256 KiB`, `300000` ms → `5 min`; undefined when no unit divides the value. */
function humanize(value: number, unit: Unit): string | undefined {
  for (const [size, label] of unit === 'bytes' ? BYTE_UNITS : TIME_UNITS) {
    if (value >= size && value % size === 0) return `${value / size} ${label}`;
  }
  return undefined;
}

function fmt(value: unknown, name = ''): string | undefined {
  if (value === undefined) return undefined;
  const unit = unitOf(name);
  const human = unit && typeof value === 'number' ? humanize(value, unit) : undefined;
  return `\`${JSON.stringify(value)}\`${human === undefined ? '' : ` (${human})`}`;
}

/**
 * Environment variable that overrides a setting path (`kafka.clientId` → `LOGSHIP_KAFKA__CLIENT_ID`).
 * A list item is `__<n>`; a map key is written as it is (`<key>` here).
 */
export function envNameFor(path: string, envPrefix = 'LOGSHIP_'): string {
  const segments = path
    .split('.')
    .map((s) => {
      if (s === MAP_KEY_PLACEHOLDER) return s;
      const item = s.endsWith('[]');
      const name = (item ? s.slice(0, -2) : s).replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
      return item ? `${name}__<n>` : name;
    });
  return envPrefix + segments.join('__');
}

/**
 * A `## <title>` section with one table row per setting. Sections are bold rows. A setting without a
 * default says **required** in the default column; inside an optional section, that means required
 * whenever the section is given.
 */
export function renderConfigReference(title: string, schema: z.ZodType, envPrefix = 'LOGSHIP_'): string {
  const rows = settingRows(schema);
  const defaultCell = (r: SettingRow): string => r.defaultValue ?? (r.required ? '**required**' : '');
  const lines = [
    `## ${title}`,
    '',
    '| setting | type | default | environment | description |',
    '|---|---|---|---|---|',
    ...rows.map((r) =>
      r.type === 'section'
        ? `| **${r.path}** | section | ${defaultCell(r)} | | ${escapeCell(r.description)} |`
        : `| \`${r.path}\` | ${r.type} | ${defaultCell(r)} | \`${envNameFor(r.path, envPrefix)}\` | ${escapeCell(r.description)} |`,
    ),
    '',
  ];
  return lines.join('\n');
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/**
 * The Athena table over what the S3 sink writes: the record's columns (from shared/record.ts), the
 * Hive partitions and the partition-projection template (from s3-layout.ts), read with the OpenX JSON
 * SerDe. docs/athena.md shows this function's output for bucket `logship`, prefix `logs`; a unit test
 * keeps the two identical.
 */
import { ErrorCode, LogshipError } from '../shared/errors.js';
import { Field, KubernetesField, LogField } from '../shared/record.js';
import { BUCKET_NAME_PATTERN, KEY_PREFIX_PATTERN, locationTemplate, PARTITION_COLUMNS, tableLocation, type PartitionColumn } from './s3-layout.js';

/** A column type, kept structured so tests can map it onto another engine's types. */
export type ColumnType =
  | 'string'
  | 'bigint'
  | { readonly array: ColumnType }
  /** A map with string keys. */
  | { readonly map: ColumnType }
  | { readonly struct: readonly ColumnDef[] };

export interface ColumnDef {
  /** Column (or struct field) name in the table. */
  readonly name: string;
  readonly type: ColumnType;
  /** The record's JSON key, when it differs from the name (mapped with `mapping.<name>`). */
  readonly jsonKey?: string;
}

const STRING_MAP: ColumnType = { map: 'string' };

/** The record of DESIGN.md as table columns, in the record's key order. */
export const RECORD_COLUMNS: readonly ColumnDef[] = [
  // `@timestamp` is not a valid column name; kept as a string (RFC 3339 with nanoseconds, as written).
  { name: 'timestamp', jsonKey: Field.TIMESTAMP, type: 'string' },
  { name: Field.MESSAGE, type: 'string' },
  { name: Field.STREAM, type: 'string' },
  { name: Field.EVENT_ID, type: 'string' },
  {
    name: Field.KUBERNETES,
    type: {
      struct: [
        { name: KubernetesField.CLUSTER, type: 'string' },
        { name: KubernetesField.NODE, type: 'string' },
        { name: KubernetesField.NAMESPACE, type: 'string' },
        { name: KubernetesField.POD, type: 'string' },
        { name: KubernetesField.POD_UID, type: 'string' },
        { name: KubernetesField.CONTAINER, type: 'string' },
        { name: KubernetesField.CONTAINER_ID, type: 'string' },
        { name: KubernetesField.IMAGE, type: 'string' },
        { name: KubernetesField.LABELS, type: STRING_MAP },
        { name: KubernetesField.ANNOTATIONS, type: STRING_MAP },
        { name: KubernetesField.NAMESPACE_LABELS, type: STRING_MAP },
      ],
    },
  },
  {
    name: Field.LOG,
    type: {
      struct: [
        { name: LogField.FILE, type: 'string' },
        { name: LogField.OFFSET, type: 'bigint' },
        { name: LogField.FLAGS, type: { array: 'string' } },
      ],
    },
  },
];

/** Partition projection per partition column; the Record type makes a new layout column fail to compile here. */
function projectionProperties(startDate: string): Record<PartitionColumn, readonly (readonly [string, string])[]> {
  return {
    // Any value a query names: clusters and namespaces come and go without a table change. A query
    // must give them with `=` or `IN` (Athena's rule for injected columns).
    cluster: [['type', 'injected']],
    namespace: [['type', 'injected']],
    dt: [
      ['type', 'date'],
      ['format', 'yyyy-MM-dd'],
      ['range', `${startDate},NOW`],
      ['interval', '1'],
      ['interval.unit', 'DAYS'],
    ],
    hour: [
      ['type', 'integer'],
      ['range', '0,23'],
      ['digits', '2'],
    ],
  };
}

export function hiveType(type: ColumnType): string {
  if (typeof type === 'string') return type;
  if ('array' in type) return `array<${hiveType(type.array)}>`;
  if ('map' in type) return `map<string,${hiveType(type.map)}>`;
  return `struct<${type.struct.map((f) => `${f.name}:${hiveType(f.type)}`).join(',')}>`;
}

export interface AthenaTableOptions {
  /** Database (Glue catalog) holding the table; without it the table name stands alone. */
  database?: string;
  table: string;
  bucket: string;
  /** The sink's `prefix` (no leading or trailing `/`; may be empty). */
  prefix: string;
  /**
   * First `dt` Athena projects: `yyyy-MM-dd` or relative to today, like `NOW-90DAYS`. Match it to the
   * bucket's retention; data before it is not queried. Default `NOW-1YEARS`.
   */
  projectionStartDate?: string;
}

export const DEFAULT_PROJECTION_START_DATE = 'NOW-1YEARS';

const IDENTIFIER = /^[a-z0-9_]{1,255}$/;
const START_DATE = /^(?:\d{4}-\d{2}-\d{2}|NOW-\d+(?:YEARS?|MONTHS?|WEEKS?|DAYS?))$/;

function check(ok: boolean, what: string, value: string): void {
  if (!ok) throw new LogshipError(`invalid ${what} for the Athena table: ${JSON.stringify(value)}`, { code: ErrorCode.CONFIG_INVALID });
}

const quote = (text: string): string => `'${text.replace(/'/g, "''")}'`;

/** `CREATE EXTERNAL TABLE` for the S3 sink's layout: OpenX JSON SerDe, Hive partitions, partition projection. */
export function athenaTableDdl(options: AthenaTableOptions): string {
  const startDate = options.projectionStartDate ?? DEFAULT_PROJECTION_START_DATE;
  if (options.database !== undefined) check(IDENTIFIER.test(options.database), 'database name', options.database);
  check(IDENTIFIER.test(options.table), 'table name', options.table);
  check(BUCKET_NAME_PATTERN.test(options.bucket), 'bucket name', options.bucket);
  check(KEY_PREFIX_PATTERN.test(options.prefix), 'prefix', options.prefix);
  check(START_DATE.test(startDate), 'projection start date (yyyy-MM-dd or NOW-<n>DAYS|WEEKS|MONTHS|YEARS)', startDate);

  const name = options.database === undefined ? `\`${options.table}\`` : `\`${options.database}\`.\`${options.table}\``;
  const columns = RECORD_COLUMNS.map((c) => `  \`${c.name}\` ${hiveType(c.type)}`).join(',\n');
  const partitions = PARTITION_COLUMNS.map((c) => `  \`${c}\` string`).join(',\n');
  // Keys are matched exactly (`case.insensitive` false): Kubernetes label keys are case-sensitive,
  // and folding them would merge `App` and `app` or fail on them as duplicate keys.
  const serdeProperties: [string, string][] = [['case.insensitive', 'false']];
  for (const c of RECORD_COLUMNS) if (c.jsonKey !== undefined) serdeProperties.push([`mapping.${c.name}`, c.jsonKey]);
  const projection = projectionProperties(startDate);
  const tableProperties: [string, string][] = [['projection.enabled', 'true']];
  for (const column of PARTITION_COLUMNS) {
    for (const [key, value] of projection[column]) tableProperties.push([`projection.${column}.${key}`, value]);
  }
  tableProperties.push(['storage.location.template', locationTemplate(options.bucket, options.prefix)]);
  const properties = (list: [string, string][]): string => list.map(([k, v]) => `  ${quote(k)} = ${quote(v)}`).join(',\n');

  return [
    `CREATE EXTERNAL TABLE IF NOT EXISTS ${name} (`,
    columns,
    ')',
    'PARTITIONED BY (',
    partitions,
    ')',
    "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'",
    'WITH SERDEPROPERTIES (',
    properties(serdeProperties),
    ')',
    "STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'",
    "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'",
    `LOCATION ${quote(tableLocation(options.bucket, options.prefix))}`,
    'TBLPROPERTIES (',
    properties(tableProperties),
    ');',
  ].join('\n');
}

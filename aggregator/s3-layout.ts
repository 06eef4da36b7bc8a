/**
 * Where the S3 sink puts things, as pure functions: the Hive partition of a record (from its own
 * timestamp, in UTC), the object key of a group of records, the key of a partition's state object,
 * and the Athena `storage.location.template` — derived from the same column list as the keys, so
 * the table definition and the writer cannot drift apart.
 *
 *   <prefix>/cluster=<c>/namespace=<ns>/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<firstOffset>.ndjson.gz
 *
 * Partition values are escaped for S3 keys and Hive paths: bytes outside `[A-Za-z0-9._-]` are
 * percent-encoded as UTF-8 (`%2F` for `/`, `%25` for `%`), an empty value becomes Hive's
 * `__HIVE_DEFAULT_PARTITION__`. Kubernetes namespaces and logship cluster names never need it, but
 * a key must not be steerable by its input (a `/` would add a path level, `=` would fake a column).
 * In Athena, an escaped value is queried in its escaped form.
 */
import { KubernetesField } from '../shared/record.js';

/** The partition columns in path order: the table's `PARTITIONED BY` and the key layout. */
export const PARTITION_COLUMNS = [KubernetesField.CLUSTER, KubernetesField.NAMESPACE, 'dt', 'hour'] as const;

export type PartitionColumn = (typeof PARTITION_COLUMNS)[number];
export type PartitionValues = Readonly<Record<PartitionColumn, string>>;

export const OBJECT_SUFFIX = '.ndjson.gz';
/** Folder of the per-partition state objects under the data prefix; `_` keeps Hive and Athena out of it. */
export const STATE_FOLDER = '_state';
/** Hive's name for a partition whose value is empty. */
export const EMPTY_PARTITION_VALUE = '__HIVE_DEFAULT_PARTITION__';

export const HOUR_MS = 3_600_000;
/** `Date` can format years 0…9999 as four digits; records outside that have no `dt`. */
const MIN_TIME_MS = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

const SAFE_CHAR = /^[A-Za-z0-9._-]$/;
const ALL_SAFE = /^[A-Za-z0-9._-]+$/;

/** S3 bucket naming rules (3 to 63 lower-case letters, digits, `.` and `-`). */
export const BUCKET_NAME_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * What a configured key prefix may look like: `/`-separated segments of characters S3 and Athena
 * both take as they are (no quotes, spaces or `$`), no leading, trailing or doubled `/`; empty means
 * the bucket's root.
 */
export const KEY_PREFIX_PATTERN = /^(?:[A-Za-z0-9!_.*()-]+(?:\/[A-Za-z0-9!_.*()-]+)*)?$/;

/** Percent-encodes every byte outside `[A-Za-z0-9._-]` (UTF-8); empty becomes {@link EMPTY_PARTITION_VALUE}. */
export function escapePartitionValue(value: string): string {
  if (value === '') return EMPTY_PARTITION_VALUE;
  if (ALL_SAFE.test(value)) return value;
  let out = '';
  for (const char of value) {
    if (SAFE_CHAR.test(char)) {
      out += char;
      continue;
    }
    for (const byte of Buffer.from(char, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The hour a time falls in, counted from the epoch: records of one hour share a partition. */
export function hourIndex(timeMs: number): number {
  return Math.floor(timeMs / HOUR_MS);
}

/** `dt` (`YYYY-MM-DD`) and `hour` (`HH`) of a time, in UTC; undefined when the time has no 4-digit year. */
export function timePartition(timeMs: number): { dt: string; hour: string } | undefined {
  if (!Number.isFinite(timeMs) || timeMs < MIN_TIME_MS || timeMs > MAX_TIME_MS) return undefined;
  const iso = new Date(timeMs).toISOString();
  return { dt: iso.slice(0, 10), hour: iso.slice(11, 13) };
}

/** The partition of a record from its cluster, namespace and time (unescaped values). */
export function partitionValues(fields: { readonly cluster: string; readonly namespace: string; readonly timeMs: number }): PartitionValues | undefined {
  const time = timePartition(fields.timeMs);
  if (time === undefined) return undefined;
  return { [KubernetesField.CLUSTER]: fields.cluster, [KubernetesField.NAMESPACE]: fields.namespace, dt: time.dt, hour: time.hour };
}

/** `cluster=<c>/namespace=<ns>/dt=<d>/hour=<h>`; `render` turns each value into its path form. */
function partitionPathWith(render: (column: PartitionColumn) => string): string {
  return PARTITION_COLUMNS.map((column) => `${column}=${render(column)}`).join('/');
}

/** The escaped Hive path of a partition. */
export function partitionPath(values: PartitionValues): string {
  return partitionPathWith((column) => escapePartitionValue(values[column]));
}

/** Joins a prefix (no leading or trailing `/`; may be empty) and a relative key. */
function underPrefix(prefix: string, key: string): string {
  return prefix === '' ? key : `${prefix}/${key}`;
}

/**
 * Key of the object holding a group of records of one topic-partition: deterministic, from the offset
 * of the group's first record, so a replay of the same records finds the same object.
 */
export function objectKey(prefix: string, values: PartitionValues, topic: string, partition: number, firstOffset: number): string {
  return underPrefix(prefix, `${partitionPath(values)}/${escapePartitionValue(topic)}+${partition}+${firstOffset}${OBJECT_SUFFIX}`);
}

/**
 * The alternate key of {@link objectKey} for one incarnation of the topic (its Kafka topic ID), used
 * when the plain key holds an object of an earlier incarnation (a topic deleted and created again
 * restarts its offsets at 0): `<topic>+<partition>+<firstOffset>+<topicId>.ndjson.gz`.
 */
export function incarnationObjectKey(objectKeyText: string, topicId: string): string {
  return `${objectKeyText.slice(0, -OBJECT_SUFFIX.length)}+${escapePartitionValue(topicId)}${OBJECT_SUFFIX}`;
}

/** The default home of the state objects: beside the partition folders, never inside them. */
export function defaultStatePrefix(prefix: string): string {
  return underPrefix(prefix, STATE_FOLDER);
}

/** Key of one sink's state object of one topic-partition: two sinks never share one. */
export function stateKey(statePrefix: string, sink: string, topic: string, partition: number): string {
  return underPrefix(statePrefix, `${escapePartitionValue(sink)}/${escapePartitionValue(topic)}+${partition}.json`);
}

/** Key of a topic-partition's state object as version 1 wrote it (one per prefix, not per sink). */
export function legacyStateKey(statePrefix: string, topic: string, partition: number): string {
  return underPrefix(statePrefix, `${escapePartitionValue(topic)}+${partition}.json`);
}

/** Athena's `storage.location.template`: the same path, with `${column}` where values go. */
export function locationTemplate(bucket: string, prefix: string): string {
  return `s3://${bucket}/${underPrefix(prefix, partitionPathWith((column) => `\${${column}}`))}`;
}

/** The table's `LOCATION`: the folder holding the partition folders. */
export function tableLocation(bucket: string, prefix: string): string {
  return `s3://${bucket}/${underPrefix(prefix, '')}`;
}

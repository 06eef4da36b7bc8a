/**
 * The record logship ships: one NDJSON line in S3, one document in Elasticsearch, one Kafka message
 * value. Field names are constants here; nothing else spells them out.
 */
export const Field = {
  TIMESTAMP: '@timestamp',
  MESSAGE: 'message',
  STREAM: 'stream',
  EVENT_ID: 'event_id',
  KUBERNETES: 'kubernetes',
  LOG: 'log',
} as const;

export const KubernetesField = {
  CLUSTER: 'cluster',
  NODE: 'node',
  NAMESPACE: 'namespace',
  POD: 'pod',
  POD_UID: 'pod_uid',
  CONTAINER: 'container',
  CONTAINER_ID: 'container_id',
  IMAGE: 'image',
  LABELS: 'labels',
  ANNOTATIONS: 'annotations',
  NAMESPACE_LABELS: 'namespace_labels',
} as const;

export const LogField = {
  FILE: 'file',
  OFFSET: 'offset',
  FLAGS: 'flags',
} as const;

/** Marks on a record saying it was altered or degraded on the way; a fixed set, also used as metric labels. */
export const RecordFlag = {
  /** The line exceeded the maximum size and was cut. */
  TRUNCATED: 'truncated',
  /** The line did not parse as CRI or docker json and is shipped raw. */
  UNPARSED: 'unparsed',
  /** Invalid UTF-8 was replaced with U+FFFD. */
  INVALID_UTF8: 'invalid_utf8',
  /** Kubernetes metadata came from the file path only (API unreachable or pod unknown). */
  METADATA_FALLBACK: 'metadata_fallback',
  /** Several physical lines joined into one (stack traces). */
  MULTILINE: 'multiline',
  /**
   * Part of a line the runtime split into chunks whose last chunk was never read: the file ended
   * (rotated, deleted, container gone) or the rest did not come within `parse.partialTimeoutMs`.
   */
  PARTIAL: 'partial',
} as const;

export type RecordFlag = (typeof RecordFlag)[keyof typeof RecordFlag];

export type Stream = 'stdout' | 'stderr';

export interface KubernetesMetadata {
  [KubernetesField.CLUSTER]: string;
  [KubernetesField.NODE]: string;
  [KubernetesField.NAMESPACE]: string;
  [KubernetesField.POD]: string;
  [KubernetesField.POD_UID]: string;
  [KubernetesField.CONTAINER]: string;
  [KubernetesField.CONTAINER_ID]?: string;
  [KubernetesField.IMAGE]?: string;
  [KubernetesField.LABELS]: Record<string, string>;
  [KubernetesField.ANNOTATIONS]: Record<string, string>;
  [KubernetesField.NAMESPACE_LABELS]: Record<string, string>;
}

export interface LogOrigin {
  [LogField.FILE]: string;
  [LogField.OFFSET]: number;
  [LogField.FLAGS]?: RecordFlag[];
}

export interface LogRecord {
  /** RFC 3339 with nanoseconds, as the runtime wrote it. */
  [Field.TIMESTAMP]: string;
  [Field.MESSAGE]: string;
  [Field.STREAM]: Stream;
  /** Stable across replays: derived from cluster, node, file identity and byte offset. */
  [Field.EVENT_ID]: string;
  [Field.KUBERNETES]: KubernetesMetadata;
  [Field.LOG]: LogOrigin;
}

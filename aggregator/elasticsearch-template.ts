/**
 * The composable index template for logship records in Elasticsearch: the record's mapping, fixed so
 * that no document can grow it, and the settings an operator tunes (shards, replicas, refresh).
 *
 * Choices:
 * - `dynamic: false`: a field the mapping does not know is kept in `_source` but not indexed. The
 *   mapping never grows from input, yet a record carrying an extra field still indexes (`strict`
 *   would reject, i.e. dead-letter, every such record; `true`/`runtime` would let input grow it).
 * - `kubernetes.labels`, `annotations` and `namespace_labels` are `flattened`: one field each,
 *   whatever keys pods carry; leaf values are searchable as keywords (`kubernetes.labels.app: api`).
 * - Keywords and flattened leaves longer than {@link KEYWORD_IGNORE_ABOVE} are kept in `_source` but
 *   not indexed: a term over 32 KiB would otherwise reject the whole document (a kubectl
 *   `last-applied-configuration` annotation easily is).
 * - `message` is `text` by default: it exists on every 8.x distribution, keeps positions (fast phrase
 *   queries) and scores. `match_only_text` (from the mapper-extras module, which minimal
 *   distributions lack) saves roughly a tenth of the disk at the price of slower phrase queries and
 *   no scoring; operators can choose it.
 */
import type { estypes } from '@elastic/elasticsearch';
import { Field, KubernetesField, LogField } from '../shared/record.js';

/** Bumped whenever the mapping or settings below change; shown as the template's `version`. */
export const TEMPLATE_VERSION = 1;

/** Above the built-in templates of the default distribution (priority 100), should an operator's index name overlap them. */
export const DEFAULT_TEMPLATE_PRIORITY = 200;

/** Longest keyword (or flattened leaf) value that is indexed; longer ones stay in `_source` only. */
export const KEYWORD_IGNORE_ABOVE = 1024;

/** The mapping holds about 25 fields and cannot grow from input; this leaves room for operators' additions. */
export const TOTAL_FIELDS_LIMIT = 500;

export type MessageFieldType = 'text' | 'match_only_text';

export interface IndexTemplateOptions {
  /** Patterns of the indices the template applies to, e.g. `logship-*-*`. */
  readonly indexPatterns: readonly string[];
  readonly priority: number;
  readonly numberOfShards: number;
  readonly numberOfReplicas: number;
  readonly refreshIntervalMs: number;
  readonly messageFieldType: MessageFieldType;
}

const keyword: estypes.MappingProperty = { type: 'keyword', ignore_above: KEYWORD_IGNORE_ABOVE };
const flattened: estypes.MappingProperty = { type: 'flattened', ignore_above: KEYWORD_IGNORE_ABOVE };

export function recordMappings(messageFieldType: MessageFieldType): estypes.MappingTypeMapping {
  return {
    dynamic: false,
    properties: {
      [Field.TIMESTAMP]: { type: 'date_nanos' },
      [Field.MESSAGE]: { type: messageFieldType },
      [Field.STREAM]: keyword,
      [Field.EVENT_ID]: keyword,
      [Field.KUBERNETES]: {
        properties: {
          [KubernetesField.CLUSTER]: keyword,
          [KubernetesField.NODE]: keyword,
          [KubernetesField.NAMESPACE]: keyword,
          [KubernetesField.POD]: keyword,
          [KubernetesField.POD_UID]: keyword,
          [KubernetesField.CONTAINER]: keyword,
          [KubernetesField.CONTAINER_ID]: keyword,
          [KubernetesField.IMAGE]: keyword,
          [KubernetesField.LABELS]: flattened,
          [KubernetesField.ANNOTATIONS]: flattened,
          [KubernetesField.NAMESPACE_LABELS]: flattened,
        },
      },
      [Field.LOG]: {
        properties: {
          [LogField.FILE]: keyword,
          [LogField.OFFSET]: { type: 'long' },
          [LogField.FLAGS]: keyword,
        },
      },
    },
  };
}

/** The body of `PUT _index_template/<name>`; putting it again is a no-op, so installing is idempotent. */
export function indexTemplateBody(options: IndexTemplateOptions): Omit<estypes.IndicesPutIndexTemplateRequest, 'name'> {
  return {
    index_patterns: [...options.indexPatterns],
    priority: options.priority,
    version: TEMPLATE_VERSION,
    _meta: { managed_by: 'logship', description: 'Kubernetes container log records shipped by the logship aggregator' },
    template: {
      settings: {
        index: {
          number_of_shards: options.numberOfShards,
          number_of_replicas: options.numberOfReplicas,
          refresh_interval: `${options.refreshIntervalMs}ms`,
          mapping: { total_fields: { limit: TOTAL_FIELDS_LIMIT } },
        },
      },
      mappings: recordMappings(options.messageFieldType),
    },
  };
}

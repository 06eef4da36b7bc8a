/**
 * Per-sink routing: which records a sink receives, by namespace and cluster globs. Records a sink
 * does not take still count as written by it (their offsets are acknowledged with the batch).
 */
import picomatch from 'picomatch';
import { z } from 'zod';
import type { RecordFields } from './sink.js';

const globListSchema = z
  .strictObject({
    include: z.array(z.string().min(1)).default([]).describe('Globs to take; empty means all.'),
    exclude: z.array(z.string().min(1)).default([]).describe('Globs never to take; wins over include.'),
  })
  .prefault({});

export const routingSchema = z
  .strictObject({
    namespaces: globListSchema.describe('Namespaces this sink receives (`kubernetes.namespace`).'),
    clusters: globListSchema.describe('Clusters this sink receives (`kubernetes.cluster`).'),
  })
  .prefault({})
  .describe('Which records this sink receives; by default all.');

export type RoutingConfig = z.output<typeof routingSchema>;

export type RecordFilter = (fields: RecordFields) => boolean;

/** Memoised per value: namespaces and clusters are few, records are many. */
export function recordFilter(routing: RoutingConfig): RecordFilter | undefined {
  const byNamespace = globMatcher(routing.namespaces.include, routing.namespaces.exclude);
  const byCluster = globMatcher(routing.clusters.include, routing.clusters.exclude);
  if (byNamespace === undefined && byCluster === undefined) return undefined;
  return (fields) => (byNamespace?.(fields.namespace) ?? true) && (byCluster?.(fields.cluster) ?? true);
}

const MEMO_LIMIT = 10_000;

function globMatcher(include: readonly string[], exclude: readonly string[]): ((value: string) => boolean) | undefined {
  if (include.length === 0 && exclude.length === 0) return undefined;
  const included = include.length === 0 ? () => true : picomatch([...include]);
  const excluded = exclude.length === 0 ? () => false : picomatch([...exclude]);
  const memo = new Map<string, boolean>();
  return (value) => {
    let answer = memo.get(value);
    if (answer === undefined) {
      answer = included(value) && !excluded(value);
      if (memo.size >= MEMO_LIMIT) memo.clear();
      memo.set(value, answer);
    }
    return answer;
  };
}

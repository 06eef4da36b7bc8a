/**
 * event_id: stable across restarts and replays, derived from where the line came from — cluster, node,
 * the file (its canonical path `…/<pod uid>/<container>/<n>.log` and its head fingerprint) and the line's
 * byte offset. Not the inode: a file the kubelet compressed (`.gz`) is a new inode holding the same
 * lines, and a line read again from it after a crash must keep its id. Re-reading the same line yields
 * the same id, which Elasticsearch uses as `_id` so a replay overwrites, and the aggregator drops.
 *
 * The per-file part is hashed once per file; per line only the offset is appended, in fixed-width hex
 * so ids sort by offset within a file.
 */
import { createHash } from 'node:crypto';

export function fileEventIdPrefix(cluster: string, node: string, path: string, fingerprint: string): string {
  return createHash('sha256').update(`${cluster}\u0000${node}\u0000${path}\u0000${fingerprint}`).digest('hex').slice(0, 20);
}

export function eventId(prefix: string, offset: number): string {
  return prefix + offset.toString(16).padStart(12, '0');
}

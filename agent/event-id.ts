/**
 * event_id: stable across restarts and replays, derived from where the line came from — cluster, node,
 * the file's identity (device, inode, head fingerprint) and the line's byte offset. Re-reading the same
 * line after a crash yields the same id, which Elasticsearch uses as `_id` so a replay overwrites.
 *
 * The per-file part is hashed once per file; per line only the offset is appended, in fixed-width hex
 * so ids sort by offset within a file.
 */
import { createHash } from 'node:crypto';

export function fileEventIdPrefix(cluster: string, node: string, identityKey: string): string {
  return createHash('sha256').update(`${cluster}\u0000${node}\u0000${identityKey}`).digest('hex').slice(0, 20);
}

export function eventId(prefix: string, offset: number): string {
  return prefix + offset.toString(16).padStart(12, '0');
}

/**
 * Writes pod log files the way a Kubernetes node does, for the demo: the container runtime's CRI
 * lines (`<RFC3339Nano> <stream> <P|F> <message>`), a long line split into `P` chunks ending with one
 * `F` chunk, the folder layout `<root>/<namespace>_<pod>_<uid>/<container>/<restart>.log`, and the
 * kubelet's rename rotation (`0.log` → `0.log.<yyyyMMdd-HHmmss>`, then a fresh `0.log`).
 *
 * test/helpers/agent.ts has its own `cri`/`podDir` for the tests; they could become re-exports of
 * this module.
 */
import { appendFileSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';

/** containerd and CRI-O split a line longer than this (their default buffer) into `P` chunks. */
export const CRI_CHUNK_BYTES = 16 * 1024;

export type CriStream = 'stdout' | 'stderr';

export interface ContainerLogTarget {
  namespace: string;
  pod: string;
  uid: string;
  container: string;
}

/** `<root>/<namespace>_<pod>_<uid>/<container>`, created; the runtime writes `<restart>.log` in it. */
export function containerLogDir(root: string, target: ContainerLogTarget): string {
  const dir = join(root, `${target.namespace}_${target.pod}_${target.uid}`, target.container);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** RFC 3339 with nanoseconds in UTC, as the runtime stamps every chunk: `2026-11-22T04:17:19.123456789Z`. */
export function criTime(epochMs: number, subMillisecondNanos = 0): string {
  const iso = new Date(epochMs).toISOString(); // …T04:17:19.123Z
  return `${iso.slice(0, -1)}${String(subMillisecondNanos % 1_000_000).padStart(6, '0')}Z`;
}

/**
 * The physical lines the runtime writes for one log line: a single `F` line, or for a message longer
 * than `chunkBytes`, `P` chunks of `chunkBytes` bytes and a final `F` chunk, all with the same time.
 */
export function criChunks(time: string, stream: CriStream, message: string, chunkBytes = CRI_CHUNK_BYTES): Buffer[] {
  const bytes = Buffer.from(message, 'utf8');
  const chunks: Buffer[] = [];
  for (let start = 0; ; start += chunkBytes) {
    const end = Math.min(start + chunkBytes, bytes.length);
    const last = end >= bytes.length;
    chunks.push(Buffer.concat([Buffer.from(`${time} ${stream} ${last ? 'F' : 'P'} `), bytes.subarray(start, end), Buffer.from('\n')]));
    if (last) return chunks;
  }
}

export function appendChunks(file: string, chunks: readonly Buffer[]): void {
  if (chunks.length > 0) appendFileSync(file, Buffer.concat(chunks));
}

/**
 * The kubelet's rotation: renames `file` to `<file>.<yyyyMMdd-HHmmss>` (UTC) and returns the new
 * name. The runtime keeps writing to the renamed file until it reopens `file`, which the next append
 * to `file` creates.
 */
export function rotateLog(file: string, atMs = Date.now()): string {
  const stamp = new Date(atMs).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const rotated = `${file}.${stamp}`;
  renameSync(file, rotated);
  return rotated;
}

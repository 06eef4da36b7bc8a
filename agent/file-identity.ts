/**
 * Which file is this, really? Paths lie (rotation renames, copytruncate rewrites in place, inodes are
 * reused), so a file is known by device + inode plus a fingerprint of its first line. A file too
 * young to have a complete first line (and shorter than the fingerprint length) has no identity yet
 * and is not read until it does, so its identity never changes under it.
 */
import { createHash } from 'node:crypto';
import { read, type Stats } from 'node:fs';
import { promisify } from 'node:util';

const readAsync = promisify(read);

/** Bytes of the head that make the fingerprint: the first line, or this many bytes if it is longer. */
export const FINGERPRINT_BYTES = 256;

export interface FileIdentity {
  dev: number;
  ino: number;
  /** Hex digest of the head (first line or first FINGERPRINT_BYTES bytes). */
  fingerprint: string;
  /** `dev:ino:fingerprint`: the key checkpoints and event ids are derived from. */
  key: string;
}

/**
 * Reads the head of an open file and returns its identity, or undefined while the file has neither a
 * complete first line nor FINGERPRINT_BYTES bytes.
 */
export async function identifyFile(fd: number, stats: Pick<Stats, 'dev' | 'ino'>): Promise<FileIdentity | undefined> {
  const head = Buffer.allocUnsafe(FINGERPRINT_BYTES);
  const { bytesRead } = await readAsync(fd, head, 0, FINGERPRINT_BYTES, 0);
  return identityFromHead(stats.dev, stats.ino, head.subarray(0, bytesRead));
}

/**
 * The identity of a file whose first bytes (up to FINGERPRINT_BYTES) are `head`, or undefined while
 * they hold neither a complete first line nor FINGERPRINT_BYTES bytes. The same rule for a plain file
 * and for the decompressed head of a `.gz`, so a file keeps its fingerprint once the kubelet compressed it.
 */
export function identityFromHead(dev: number, ino: number, head: Buffer): FileIdentity | undefined {
  const newline = head.subarray(0, FINGERPRINT_BYTES).indexOf(10);
  let length: number;
  if (newline >= 0) length = newline + 1;
  else if (head.length >= FINGERPRINT_BYTES) length = FINGERPRINT_BYTES;
  else return undefined;
  return identityOf(dev, ino, head.subarray(0, length));
}

function identityOf(dev: number, ino: number, head: Buffer): FileIdentity {
  const fingerprint = createHash('sha256').update(head).digest('hex').slice(0, 16);
  return { dev, ino, fingerprint, key: `${dev}:${ino}:${fingerprint}` };
}

/**
 * A rotated log file the kubelet compressed (`<n>.log.<timestamp>.gz`), read as the plain text it
 * holds: a forward-only stream of decompressed bytes, so a file of any size costs a fixed amount of
 * memory. The descriptor is opened once and held, so the kubelet pruning the file while it is read
 * takes nothing away.
 */
import { close, createReadStream, fstat, open, read, constants as fsConstants } from 'node:fs';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);
const readAsync = promisify(read);
const closeAsync = promisify(close);

/** The kubelet names compressed rotated logs `<n>.log.<timestamp>.gz`. */
export const GZIP_SUFFIX = '.gz';

export function isGzipPath(path: string): boolean {
  return path.endsWith(GZIP_SUFFIX);
}

export class GzipReader {
  /** Decompressed bytes handed out (or skipped) so far. */
  position = 0;
  private leftover: Buffer | undefined;
  private ended = false;
  /** Created at the first read: an open but unread file holds a descriptor and no buffers. */
  private decompressing: { stream: ReturnType<typeof createGunzip>; chunks: AsyncIterator<Buffer> } | undefined;

  private constructor(
    readonly fd: number,
    /** Size of the compressed file (bytes on disk). */
    readonly compressedBytes: number,
    /** Decompressed size from the gzip trailer (ISIZE, modulo 2^32), or undefined when unreadable. */
    readonly declaredBytes: number | undefined,
    readonly dev: number,
    readonly ino: number,
    readonly nlink: number,
  ) {}

  /** Whether decompression started (and holds its stream buffers, some 100 KiB). */
  get started(): boolean {
    return this.decompressing !== undefined;
  }

  /** Opens `path` (never following a symlink). Throws the fs error on failure. */
  static async open(path: string): Promise<GzipReader> {
    const fd = await openAsync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const stats = await fstatAsync(fd);
      if (!stats.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'ENOTREG' });
      return new GzipReader(fd, stats.size, await declaredSize(fd, stats.size), stats.dev, stats.ino, stats.nlink);
    } catch (error) {
      await closeAsync(fd);
      throw error;
    }
  }

  /** Whether every decompressed byte was handed out. */
  get atEnd(): boolean {
    return this.ended && (this.leftover === undefined || this.leftover.length === 0);
  }

  /** Copies the next decompressed bytes into `buffer`; 0 at the end of the stream. */
  async read(buffer: Buffer): Promise<number> {
    let filled = 0;
    while (filled < buffer.length) {
      const chunk = await this.next();
      if (chunk === undefined) break;
      const take = Math.min(chunk.length, buffer.length - filled);
      chunk.copy(buffer, filled, 0, take);
      this.leftover = take < chunk.length ? chunk.subarray(take) : undefined;
      filled += take;
    }
    this.position += filled;
    return filled;
  }

  /** Discards decompressed bytes up to `offset` (a checkpoint); returns the position reached. */
  async skipTo(offset: number): Promise<number> {
    while (this.position < offset) {
      const chunk = await this.next();
      if (chunk === undefined) break;
      const take = Math.min(chunk.length, offset - this.position);
      this.leftover = take < chunk.length ? chunk.subarray(take) : undefined;
      this.position += take;
    }
    return this.position;
  }

  async close(): Promise<void> {
    this.decompressing?.stream.destroy();
    await closeAsync(this.fd);
  }

  private async next(): Promise<Buffer | undefined> {
    if (this.leftover !== undefined && this.leftover.length > 0) {
      const chunk = this.leftover;
      this.leftover = undefined;
      return chunk;
    }
    if (this.ended) return undefined;
    if (this.decompressing === undefined) {
      const stream = createGunzip();
      createReadStream('', { fd: this.fd, autoClose: false, start: 0 })
        .on('error', (error) => stream.destroy(error))
        .pipe(stream);
      this.decompressing = { stream, chunks: stream[Symbol.asyncIterator]() as AsyncIterator<Buffer> };
    }
    const next: IteratorResult<Buffer, unknown> = await this.decompressing.chunks.next();
    if (next.done === true) {
      this.ended = true;
      return undefined;
    }
    return next.value;
  }
}

/** The gzip trailer's ISIZE: the decompressed length modulo 2^32 (exact for files under 4 GiB). */
async function declaredSize(fd: number, size: number): Promise<number | undefined> {
  if (size < 18) return undefined; // smaller than a gzip header plus trailer
  const trailer = Buffer.alloc(4);
  const { bytesRead } = await readAsync(fd, trailer, 0, 4, size - 4);
  return bytesRead === 4 ? trailer.readUInt32LE(0) : undefined;
}

/** The first `length` decompressed bytes of a gzip file (fewer if it is shorter), for its fingerprint. */
export async function gzipHead(path: string, length: number): Promise<{ head: Buffer; dev: number; ino: number; declaredBytes: number | undefined }> {
  const reader = await GzipReader.open(path);
  try {
    const head = Buffer.alloc(length);
    const bytes = await reader.read(head);
    return { head: head.subarray(0, bytes), dev: reader.dev, ino: reader.ino, declaredBytes: reader.declaredBytes };
  } finally {
    await reader.close();
  }
}

/**
 * Gives back the resident memory an idle Node.js process holds outside V8's heap: the pages of node's
 * own binary and of the shared libraries it mapped, and glibc's free heap.
 *
 * Why: an agent that shipped a burst and went quiet keeps ~48 MiB of node's binary resident (code it
 * ran once: V8's optimizing compilers, TLS, config parsing; read-only data such as the built-in modules'
 * sources), more than half of its RSS. Those pages are clean copies of a file, and nothing but memory
 * pressure makes the kernel take them back. `madvise(MADV_PAGEOUT)` (Linux >= 5.4) asks it to reclaim
 * them now; the ones work needs again are read back on demand (page faults) when it resumes. Android
 * compacts its background apps the same way. Pages the process wrote (relocated data, V8's heap) are
 * anonymous memory and are left alone: without swap the kernel skips them.
 *
 * Only read-only mappings of files are advised (`r--p` and `r-xp` in /proc/self/maps): their pages can
 * only be the file's content or, for relocated read-only data, anonymous copies that MADV_PAGEOUT keeps.
 * The kernel also leaves alone pages that another process maps (another node of the same image layer).
 * Until work resumes they are also advised MADV_RANDOM, and the pages of node's binary that the page
 * cache still holds unmapped are dropped (POSIX_FADV_DONTNEED): a fault while idle then reads its page
 * alone, neither readahead nor the kernel's fault-around maps its neighbours, and the little code idle
 * work runs (timers, polling files) brings back little.
 *
 * Node offers no system call for this; koffi (a foreign-function library with prebuilt binaries)
 * calls libc's `madvise`, `posix_fadvise` and `malloc_trim`. It is loaded on the first page-out.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';

/** Linux's advice values (include/uapi/asm-generic/mman-common.h). */
const MADV_NORMAL = 0;
const MADV_RANDOM = 1;
const MADV_PAGEOUT = 21;

/** A range of /proc/self/maps. */
export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
}

/** The mappings of /proc/<pid>/maps text (lines `start-end perms offset dev inode [path]`). */
export function parseMaps(text: string): Mapping[] {
  const mappings: Mapping[] = [];
  for (const line of text.split('\n')) {
    const match = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (!match) continue;
    mappings.push({ start: BigInt(`0x${match[1]}`), end: BigInt(`0x${match[2]}`), perms: match[3] ?? '', path: match[4] ?? '' });
  }
  return mappings;
}

/**
 * The mappings worth paging out: private, read-only mappings of a file (code and read-only data of
 * node and its libraries). Never a writable one, nor anonymous memory or the kernel's own ([vdso]…).
 */
export function pageOutCandidates(mappings: readonly Mapping[]): Mapping[] {
  return mappings.filter((m) => m.path.startsWith('/') && m.perms[1] === '-' && m.perms[3] === 'p');
}

/** RSS by kind from /proc/self/status, in bytes. */
export interface ResidentBytes {
  total: number;
  anon: number;
  file: number;
}

export function parseResident(status: string): ResidentBytes {
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  return { total: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile') };
}

/** RSS of this process, or of another one by pid. */
export function residentBytes(pid: number | 'self' = 'self'): ResidentBytes {
  return parseResident(readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
}

export interface PageOutResult {
  /** Mappings advised. */
  mappings: number;
  /** RSS before and after. */
  before: ResidentBytes;
  after: ResidentBytes;
  durationMs: number;
}

type Madvise = (addr: bigint, length: bigint, advice: number) => number;
type Fadvise = (fd: number, offset: number, length: number, advice: number) => number;

/** posix_fadvise's POSIX_FADV_DONTNEED on Linux. */
const POSIX_FADV_DONTNEED = 4;

/** libc's calls, through koffi. */
export class ResidentMemory {
  /** The ranges advised MADV_RANDOM by the last page-out, until `resume`. */
  private advised: Mapping[] = [];

  private constructor(
    private readonly madvise: Madvise,
    private readonly fadvise: Fadvise,
    private readonly mallocTrim: ((pad: number) => number) | undefined,
    private readonly errno: () => number,
  ) {}

  /**
   * Loads koffi and binds libc's functions; rejects with the reason when that cannot be done (no
   * prebuilt koffi for this platform, not Linux).
   */
  static async load(): Promise<ResidentMemory> {
    if (process.platform !== 'linux') throw new Error(`page-out needs Linux (this is ${process.platform})`);
    const koffi = (await import('koffi')).default;
    // The process's own symbols: libc's, whichever libc it is.
    const libc = koffi.load(null);
    const madvise = libc.func('int madvise(uintptr_t addr, size_t length, int advice)') as Madvise;
    const fadvise = libc.func('int posix_fadvise(int fd, int64_t offset, int64_t length, int advice)') as Fadvise;
    let mallocTrim: ((pad: number) => number) | undefined;
    try {
      mallocTrim = libc.func('int malloc_trim(size_t pad)') as (pad: number) => number;
    } catch {
      mallocTrim = undefined; // not glibc
    }
    return new ResidentMemory(madvise, fadvise, mallocTrim, () => koffi.errno());
  }

  /**
   * Advises every read-only file mapping out of memory and trims glibc's heap. Throws when the kernel
   * refuses the advice (EINVAL before Linux 5.4); a mapping that went away meanwhile (ENOMEM) is skipped.
   */
  pageOut(): PageOutResult {
    const startedAt = performance.now();
    const before = residentBytes();
    const candidates = pageOutCandidates(parseMaps(readFileSync('/proc/self/maps', 'utf8')));
    this.advised = [];
    for (const m of candidates) {
      if (!this.advise(m, MADV_PAGEOUT, 'MADV_PAGEOUT')) continue;
      // While idle, a page fault reads that page alone: no readahead around it, so the few pages the
      // idle work runs (polling files, timers) do not bring back their neighbours by the hundred.
      if (this.advise(m, MADV_RANDOM, 'MADV_RANDOM')) this.advised.push(m);
    }
    this.dropUnmappedCache(process.execPath);
    this.mallocTrim?.(0);
    return { mappings: candidates.length, before, after: residentBytes(), durationMs: performance.now() - startedAt };
  }

  /** Work resumed: page faults read ahead again (MADV_NORMAL on what the page-out advised). */
  resume(): void {
    for (const m of this.advised.splice(0)) this.advise(m, MADV_NORMAL, 'MADV_NORMAL');
  }

  /**
   * Drops the pages of node's binary that the page cache holds and no process maps: what readahead
   * brought in at start-up, and what the page-out could not free. A fault would otherwise map them
   * back, up to 16 around each page it reads. Pages another process maps stay.
   */
  private dropUnmappedCache(path: string): void {
    const fd = openSync(path, 'r');
    try {
      // posix_fadvise returns the error number itself.
      const error = this.fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      if (error !== 0) throw new Error(`posix_fadvise(POSIX_FADV_DONTNEED) on ${path} failed with errno ${String(error)}`);
    } finally {
      closeSync(fd);
    }
  }

  /** false when the mapping went away meanwhile (ENOMEM); throws on any other failure. */
  private advise(m: Mapping, advice: number, name: string): boolean {
    if (this.madvise(m.start, m.end - m.start, advice) === 0) return true;
    const errno = this.errno();
    if (errno === ENOMEM) return false;
    throw new Error(`madvise(${name}) on ${m.path} failed with errno ${String(errno)}${errno === EINVAL && advice === MADV_PAGEOUT ? ' (the kernel predates Linux 5.4)' : ''}`);
  }
}

const EINVAL = 22;
const ENOMEM = 12;

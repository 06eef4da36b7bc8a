/**
 * Where each file has been shipped up to, kept on disk across restarts (a hostPath in Kubernetes).
 * One versioned JSON file, rewritten atomically: temp file, fsync, rename, fsync of the folder — so a
 * crash at any moment leaves either the old or the new state, never a torn one.
 */
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError, ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';

export const CHECKPOINT_FILE = 'checkpoints.json';
/** 2 added `size` and `done`; version 1 files are read as files with neither. */
export const CHECKPOINT_VERSION = 2;

export interface Checkpoint {
  /** The file identity key (`dev:ino:fingerprint`). */
  key: string;
  /** Where the file was last seen; informational, and the place to look for it after a rename. */
  path: string;
  dev: number;
  ino: number;
  fingerprint: string;
  /** Every byte before this offset has been acknowledged by Kafka. */
  offset: number;
  /** The file's size when last seen: with `offset`, what is lost if the file is deleted before it is read. */
  size?: number;
  /**
   * Read to its end and every line acknowledged. Kept while the file is still on disk in any form
   * (`<n>.log.<timestamp>`, `.gz`), so that a restart never ships it again; dropped once it is gone.
   */
  done?: boolean;
  updatedAtMs: number;
}

interface CheckpointFile {
  version: typeof CHECKPOINT_VERSION;
  writtenAtMs: number;
  checkpoints: Checkpoint[];
}

export class CheckpointStore {
  private readonly entries = new Map<string, Checkpoint>();
  /** Checkpoints that would have moved backwards (a bug; each logged, the larger offset kept). */
  regressions = 0;
  private dirty = false;
  private lastWriteMs: number | undefined;
  private writing: Promise<boolean> | undefined;
  /** No state file existed: the agent starts on this node for the first time (`files.startAt` applies). */
  private first = false;

  private constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Loads the state folder. A missing file is a first start. A file that does not parse is moved aside
   * (`checkpoints.json.corrupt-<ms>`) and the agent starts over — re-reading means duplicates with the
   * same event_id, never loss. A file of a newer version is an error: an older agent must not guess.
   */
  static async open(dir: string, logger: Logger): Promise<CheckpointStore> {
    const store = new CheckpointStore(dir, logger);
    try {
      await mkdir(dir, { recursive: true });
    } catch (error) {
      throw new CheckpointError(`cannot create checkpoint folder ${dir}`, { code: ErrorCode.CHECKPOINT_IO, cause: error });
    }
    const file = join(dir, CHECKPOINT_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        // Written at the first flush even with no entries, so a restart is never taken for a first start.
        store.first = true;
        store.dirty = true;
        return store;
      }
      throw new CheckpointError(`cannot read ${file}`, { code: ErrorCode.CHECKPOINT_IO, cause: error });
    }
    const parsed = parseCheckpointFile(text);
    if (parsed.kind === 'newer') {
      throw new CheckpointError(`${file} has version ${parsed.version}, newer than this agent understands (${CHECKPOINT_VERSION})`, {
        code: ErrorCode.CHECKPOINT_CORRUPT,
      });
    }
    if (parsed.kind === 'corrupt') {
      const aside = `${file}.corrupt-${Date.now()}`;
      await rename(file, aside);
      logger.error({ file, movedTo: aside, problem: parsed.problem }, 'checkpoint file unreadable, moved aside; files will be read from their start position');
      return store;
    }
    for (const cp of parsed.checkpoints) store.entries.set(cp.key, cp);
    store.lastWriteMs = parsed.writtenAtMs;
    logger.info({ file, checkpoints: store.entries.size }, 'checkpoints loaded');
    return store;
  }

  /** Whether this is the agent's first start with this state folder (no state file existed). */
  get firstStart(): boolean {
    return this.first;
  }

  get(key: string): Checkpoint | undefined {
    return this.entries.get(key);
  }

  all(): IterableIterator<Checkpoint> {
    return this.entries.values();
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Records progress; only ever forward for a given identity. A move backwards means two readers of
   * one file identity (a bug): it is logged with both offsets and counted (`regressions`), the larger
   * offset is kept, and the caller goes on with its other files.
   */
  set(checkpoint: Checkpoint): void {
    const current = this.entries.get(checkpoint.key);
    if (current && current.offset === checkpoint.offset && current.path === checkpoint.path && current.done === checkpoint.done && current.size === checkpoint.size) return;
    if (current && checkpoint.offset < current.offset) {
      this.regressions++;
      this.logger.error(
        { key: checkpoint.key, path: checkpoint.path, offset: current.offset, attemptedOffset: checkpoint.offset, code: ErrorCode.INTERNAL },
        'bug: a checkpoint would move backwards; the larger offset is kept',
      );
      checkpoint = { ...checkpoint, offset: current.offset };
    }
    this.entries.set(checkpoint.key, checkpoint);
    this.dirty = true;
  }

  delete(key: string): void {
    if (this.entries.delete(key)) this.dirty = true;
  }

  /** When state was last written durably (ms since epoch), if ever. */
  get lastWrittenAtMs(): number | undefined {
    return this.lastWriteMs;
  }

  /** Writes the state if it changed since the last write. Concurrent calls share one write. */
  async flush(): Promise<boolean> {
    if (this.writing) await this.writing.catch(() => undefined);
    if (!this.dirty) return false;
    this.writing = this.write();
    try {
      return await this.writing;
    } finally {
      this.writing = undefined;
    }
  }

  private async write(): Promise<boolean> {
    this.dirty = false;
    const now = Date.now();
    const content: CheckpointFile = { version: CHECKPOINT_VERSION, writtenAtMs: now, checkpoints: [...this.entries.values()] };
    const file = join(this.dir, CHECKPOINT_FILE);
    const temp = `${file}.tmp`;
    try {
      const handle = await open(temp, 'w', 0o600);
      try {
        await handle.writeFile(JSON.stringify(content));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
      const dirHandle = await open(this.dir, 'r');
      try {
        await dirHandle.sync();
      } finally {
        await dirHandle.close();
      }
    } catch (error) {
      this.dirty = true;
      throw new CheckpointError(`cannot write ${file}`, { code: ErrorCode.CHECKPOINT_IO, retriable: true, cause: error });
    }
    this.lastWriteMs = now;
    return true;
  }
}

type ParsedFile =
  | { kind: 'ok'; checkpoints: Checkpoint[]; writtenAtMs: number }
  | { kind: 'corrupt'; problem: string }
  | { kind: 'newer'; version: number };

/** Validates the on-disk format by hand: it is small, and a bad entry must not take the others down. */
export function parseCheckpointFile(text: string): ParsedFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    return { kind: 'corrupt', problem: (error as Error).message };
  }
  if (typeof data !== 'object' || data === null) return { kind: 'corrupt', problem: 'not an object' };
  const { version, checkpoints, writtenAtMs } = data as { version?: unknown; checkpoints?: unknown; writtenAtMs?: unknown };
  if (typeof version !== 'number') return { kind: 'corrupt', problem: 'no version' };
  if (version > CHECKPOINT_VERSION) return { kind: 'newer', version };
  if (!Array.isArray(checkpoints)) return { kind: 'corrupt', problem: 'no checkpoints list' };
  const valid = checkpoints.filter(isCheckpoint);
  if (valid.length !== checkpoints.length) return { kind: 'corrupt', problem: `${checkpoints.length - valid.length} malformed entries` };
  return { kind: 'ok', checkpoints: valid, writtenAtMs: typeof writtenAtMs === 'number' ? writtenAtMs : 0 };
}

function isCheckpoint(value: unknown): value is Checkpoint {
  if (typeof value !== 'object' || value === null) return false;
  const c = value as Record<string, unknown>;
  return (
    typeof c.key === 'string' &&
    typeof c.path === 'string' &&
    typeof c.fingerprint === 'string' &&
    Number.isSafeInteger(c.dev) &&
    Number.isSafeInteger(c.ino) &&
    Number.isSafeInteger(c.offset) &&
    (c.offset as number) >= 0 &&
    (c.size === undefined || Number.isSafeInteger(c.size)) &&
    (c.done === undefined || typeof c.done === 'boolean') &&
    typeof c.updatedAtMs === 'number'
  );
}

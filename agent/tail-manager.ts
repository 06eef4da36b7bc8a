/**
 * Discovers the node's pod log files and keeps every incarnation of every one of them tailed.
 *
 * - Live files (`<n>.log`): chokidar reports them promptly, and every poll also stats each known path,
 *   so a new file at a path is opened within one poll interval whatever the watcher said. The poll
 *   notices growth, rotation (the path names another inode), deletion and truncation.
 * - Rotated files (`<n>.log.<timestamp>`, `.gz` once the kubelet compressed them): a container folder
 *   is reconciled at start, whenever a rotation is seen in it, and at every rescan. Each rotated file
 *   is known by its head fingerprint (of the decompressed head for `.gz`): one being read is left
 *   alone, one a checkpoint names is read from the checkpoint, one read to its end is skipped, and an
 *   unknown one is read from its start, oldest first. A checkpoint whose file is gone under every name
 *   is a loss no shipper could avoid: counted (`lost_bytes_total{reason}`) and logged with its range.
 * - copytruncate: the unread tail is read from the copy beside the file when there is one.
 *
 * One read loop takes files in turn (one chunk each) and waits while the producer is full.
 * Checkpoints are written on an interval from each file's safe offset, and a finished file's entry
 * stays (marked done) while the file is on disk in any form, so a restart never ships it twice.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import picomatch from 'picomatch';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Checkpoint, CheckpointStore } from './checkpoint-store.js';
import { FINGERPRINT_BYTES, identityFromHead, type FileIdentity } from './file-identity.js';
import { gzipHead, isGzipPath } from './gzip-reader.js';
import { parsePodLogPath, type PodLogPath } from './pod-path.js';
import { TailedFile, type TailEnvironment } from './tailed-file.js';

export const ERROR_REASONS = [
  'file_open',
  'permission_denied',
  'not_regular',
  'file_read',
  'file_vanished',
  'discovery',
  'checkpoint_write',
  'kafka_send',
  'unparsed',
  'truncated',
  'invalid_utf8',
  'record_too_large',
] as const;
export type ErrorReason = (typeof ERROR_REASONS)[number];

/**
 * Why bytes that existed could not be read: the file was deleted (by the kubelet's pruning, or with
 * its pod) before the agent read them; it was truncated in place (copytruncate) with no copy to read
 * them from; or its compressed copy could not be decompressed.
 */
export const LOSS_REASONS = ['deleted_before_read', 'truncated', 'unreadable'] as const;
export type LossReason = (typeof LOSS_REASONS)[number];

/** Compressed rotated files decompressed at the same time, at most (after a long outage, a node may hold hundreds). */
const MAX_DECOMPRESSING_FILES = 4;

/** A rotated copy of a container's `<n>.log`: `<n>.log.<timestamp>` or `<n>.log.<timestamp>.gz`. */
const ROTATED_NAME = /^(0|[1-9][0-9]{0,8})\.log\.(.+)$/;

/** What a rotated file in a container folder is, by its head. */
interface SiblingFile {
  path: string;
  identity: FileIdentity;
  /** Bytes it holds (decompressed, for `.gz`). */
  size: number;
}

export interface TailManagerOptions {
  root: string;
  include: string[];
  exclude: string[];
  namespaces: { include: string[]; exclude: string[] };
  /**
   * Where to start in files found at the agent's first start on this node (an empty state folder).
   * After that, every file without a checkpoint is read from its start.
   */
  startAt: 'beginning' | 'end';
  readBufferBytes: number;
  maxOpenFiles: number;
  pollIntervalMs: number;
  rescanIntervalMs: number;
  checkpointIntervalMs: number;
  /** Checkpoint entries matching no file for this long are dropped. */
  orphanCheckpointTtlMs: number;
}

export interface TailManagerHooks {
  onError: (reason: ErrorReason, error: unknown, context: Record<string, unknown>) => void;
  onBackpressure: (waitedMs: number) => void;
  /** Bytes that existed and can never be read: `[fromOffset, toOffset)` of the file at `path`. */
  onLost: (reason: LossReason, bytes: number, context: { path: string; source: string; fromOffset: number; toOffset: number }) => void;
}

export class TailManager {
  /** The file currently at each path. */
  private readonly active = new Map<string, TailedFile>();
  /** Files no longer at their path (rotated, deleted, truncated) still being read or acknowledged. */
  private readonly draining = new Set<TailedFile>();
  /** Paths found but not opened yet for lack of a descriptor slot, in discovery order. */
  private readonly waiting = new Map<string, PodLogPath>();
  /** Paths that failed to open, and when to try again. */
  private readonly failed = new Map<string, number>();
  /** Every live `<n>.log` path found: each poll stats the ones no file is open at. */
  private readonly paths = new Map<string, PodLogPath>();
  /** Identities of rotated files by `dev:ino:mtime` (a rotated file's head never changes), pruned at each rescan. */
  private readonly siblingCache = new Map<string, { identity: FileIdentity; size: number }>();
  /** Folders being reconciled, and whether another pass was asked for meanwhile. */
  private readonly reconciling = new Map<string, { again: boolean; done: Promise<void> }>();
  private rescanning = false;
  private readonly readyQueue: TailedFile[] = [];
  private readonly readySet = new Set<TailedFile>();
  private wakeReader: (() => void) | undefined;
  private watcher: FSWatcher | undefined;
  private timers: NodeJS.Timeout[] = [];
  private readLoopDone: Promise<void> | undefined;
  private stopping = false;
  private firstScan = false;
  private openCount = 0;
  private polling = false;
  private checkpointing: Promise<void> | undefined;
  private readonly includeMatch: (path: string) => boolean;
  private readonly excludeMatch: (path: string) => boolean;
  private readonly nsInclude: (ns: string) => boolean;
  private readonly nsExclude: (ns: string) => boolean;

  constructor(
    private readonly env: TailEnvironment,
    private readonly checkpoints: CheckpointStore,
    private readonly options: TailManagerOptions,
    private readonly hooks: TailManagerHooks,
    private readonly logger: Logger,
  ) {
    this.includeMatch = options.include.length > 0 ? picomatch(options.include, { dot: true }) : () => true;
    this.excludeMatch = options.exclude.length > 0 ? picomatch(options.exclude, { dot: true }) : () => false;
    this.nsInclude = options.namespaces.include.length > 0 ? picomatch(options.namespaces.include) : () => true;
    this.nsExclude = options.namespaces.exclude.length > 0 ? picomatch(options.namespaces.exclude) : () => false;
  }

  /** Whether the first full scan finished (part of readiness). */
  get firstScanDone(): boolean {
    return this.firstScan;
  }

  get trackedFiles(): number {
    return this.active.size + this.draining.size + this.waiting.size;
  }

  get openFiles(): number {
    return this.openCount;
  }

  /** Bytes written to tracked files and not yet acknowledged by Kafka. */
  unshippedBytes(): number {
    let total = 0;
    for (const file of this.active.values()) total += file.unshippedBytes;
    for (const file of this.draining) total += file.unshippedBytes;
    return total;
  }

  async start(): Promise<void> {
    await this.scan(true);
    await this.reconcileAll(true);
    await this.writeCheckpoints();
    this.firstScan = true;
    this.readLoopDone = this.readLoop();
    this.watcher = watch(this.options.root, {
      ignoreInitial: true,
      followSymlinks: false,
      depth: 2,
      persistent: true,
      ignored: (path, stats) => !this.accepts(path, stats?.isFile()),
    });
    this.watcher.on('add', (path) => void this.track(path, false));
    this.watcher.on('change', (path) => {
      const file = this.active.get(path);
      if (file) this.markReady(file);
    });
    this.watcher.on('unlink', () => void this.poll());
    this.watcher.on('error', (error) => this.hooks.onError('discovery', error, { root: this.options.root }));
    this.every(this.options.pollIntervalMs, () => this.poll());
    this.every(this.options.rescanIntervalMs, () => this.rescan());
    this.every(this.options.checkpointIntervalMs, () => this.writeCheckpoints());
  }

  /** Stops discovery and reading. Unsent data stays unacknowledged, so checkpoints stay behind it. */
  async stopReading(): Promise<void> {
    this.stopping = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.watcher?.close();
    this.wakeReader?.();
    await this.readLoopDone;
  }

  /** Final checkpoint write and descriptor release (after the producer was flushed). */
  async close(): Promise<void> {
    await this.writeCheckpoints();
    for (const file of [...this.active.values(), ...this.draining]) await file.abandon();
  }

  // ---- discovery -----------------------------------------------------------------------------

  /** Whether a path under the root is a pod log file (or a folder that may hold one) we should tail. */
  private accepts(path: string, isFile: boolean | undefined): boolean {
    const rel = relative(this.options.root, path);
    if (rel === '') return true;
    if (rel.startsWith('..')) return false;
    const parts = rel.split(sep);
    const namespace = parts[0]?.split('_')[0] ?? '';
    if (!this.nsInclude(namespace) || this.nsExclude(namespace)) return false;
    if (parts.length < 3 && isFile !== true) return true;
    if (parts.length !== 3) return false;
    if (!parsePodLogPath(path, this.options.root)) return false;
    return this.includeMatch(rel) && !this.excludeMatch(rel);
  }

  private async scan(initial: boolean): Promise<void> {
    const root = this.options.root;
    let podDirs: string[];
    try {
      podDirs = (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => join(root, d.name));
    } catch (error) {
      this.hooks.onError('discovery', error, { root });
      return;
    }
    for (const podDir of podDirs) {
      if (this.stopping) return;
      if (!this.accepts(podDir, false)) continue;
      let containers;
      try {
        containers = (await readdir(podDir, { withFileTypes: true })).filter((d) => d.isDirectory());
      } catch {
        continue; // removed since listed
      }
      for (const container of containers) {
        const dir = join(podDir, container.name);
        let entries;
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch {
          continue;
        }
        for (const entry of entries) {
          const path = join(dir, entry.name);
          if (!entry.name.endsWith('.log')) continue;
          if (!entry.isFile()) {
            if (!this.failed.has(path)) {
              this.failed.set(path, Number.MAX_SAFE_INTEGER);
              this.hooks.onError('not_regular', undefined, { path });
            }
            continue;
          }
          if (!this.accepts(path, true)) continue;
          const pod = parsePodLogPath(path, this.options.root);
          if (pod) this.paths.set(path, pod);
          await this.track(path, initial);
        }
      }
    }
  }

  /** Starts following a path unless already followed. */
  private async track(path: string, initial: boolean): Promise<void> {
    if (this.stopping || this.active.has(path) || this.waiting.has(path)) return;
    const retryAt = this.failed.get(path);
    if (retryAt !== undefined && Date.now() < retryAt) return;
    const pod = this.paths.get(path) ?? parsePodLogPath(path, this.options.root);
    if (!pod) return;
    this.paths.set(path, pod);
    if (this.openCount >= this.options.maxOpenFiles) {
      this.waiting.set(path, pod);
      return;
    }
    await this.openFile(path, pod, initial);
  }

  private async openFile(path: string, pod: PodLogPath, initial: boolean, forceStart?: number): Promise<void> {
    const file = new TailedFile(path, pod, this.env);
    this.active.set(path, file);
    this.openCount++;
    try {
      await file.open();
    } catch (error) {
      this.active.delete(path);
      this.openCount--;
      const code = (error as NodeJS.ErrnoException).code;
      const reason: ErrorReason =
        code === 'EACCES' || code === 'EPERM' ? 'permission_denied' : code === 'ELOOP' || code === 'ENOTREG' ? 'not_regular' : code === 'ENOENT' ? 'file_vanished' : 'file_open';
      // Not retried sooner than a rescan; a permission fixed later is picked up then. A file gone
      // between a look and the open (a rotation) is looked for again at the next poll.
      if (code !== 'ENOENT') this.failed.set(path, Date.now() + this.options.rescanIntervalMs - 1);
      this.hooks.onError(reason, error, { path });
      this.openWaiting();
      return;
    }
    this.failed.delete(path);
    await this.identify(file, initial, forceStart);
  }

  private async identify(file: TailedFile, initial: boolean, forceStart?: number): Promise<boolean> {
    let twin: TailedFile | undefined;
    const identified = await file.identify((identity, size) => {
      if (forceStart !== undefined) return forceStart;
      // The same file back at its path (the kubelet renames a rotated file back when the runtime
      // could not reopen its log): it goes on where its reader is, never from an older checkpoint.
      twin = [...this.draining].find((other) => other.identity?.key === identity.key);
      if (twin) return Math.min(twin.readOffset, size);
      const checkpoint = this.checkpoints.get(identity.key);
      if (checkpoint) return checkpoint.offset <= size ? checkpoint.offset : 0;
      return this.skipsExisting(initial) ? size : 0;
    });
    if (identified && twin?.phase === 'draining' && this.active.get(file.path) === file) {
      // One reader per file: the draining one takes the path again, with its assembly state.
      this.active.set(file.path, twin);
      this.draining.delete(twin);
      twin.reactivate();
      await file.abandon();
      this.openCount--;
      this.logger.info({ path: file.path, identity: twin.identity?.key }, 'rotated file renamed back to its path, reading on');
      this.markReady(twin);
      return true;
    }
    if (identified) {
      this.logger.debug({ path: file.path, identity: file.identity?.key, offset: file.readOffset }, 'tailing file');
      this.markReady(file);
    }
    return identified;
  }

  /** Files already on disk at the agent's first start on this node are skipped when `startAt` is `end`. */
  private skipsExisting(initial: boolean): boolean {
    return initial && this.options.startAt === 'end' && this.checkpoints.firstStart;
  }

  // ---- rotated files: restart, missed incarnations, compression, pruning -------------------------

  /** The safety net: live paths the watcher missed, then every container folder reconciled. */
  private async rescan(): Promise<void> {
    if (this.rescanning) return;
    this.rescanning = true;
    try {
      await this.scan(false);
      await this.reconcileAll(false);
    } finally {
      this.rescanning = false;
    }
  }

  /** Every container folder that holds a known path or a checkpoint entry. */
  private async reconcileAll(initial: boolean): Promise<void> {
    const folders = new Set<string>();
    for (const path of this.paths.keys()) folders.add(dirname(path));
    for (const checkpoint of this.checkpoints.all()) {
      if (parsePodLogPath(checkpoint.path, this.options.root) && this.accepts(checkpoint.path, true)) folders.add(dirname(checkpoint.path));
    }
    const seen = new Set<string>();
    for (const folder of folders) {
      if (this.stopping) return;
      await this.reconcile(folder, initial, seen);
    }
    // Identities of rotated files no longer on disk are forgotten.
    if (!this.stopping) for (const key of this.siblingCache.keys()) if (!seen.has(key)) this.siblingCache.delete(key);
  }

  /** Reconciles one folder; a call while it runs asks for one more pass after it. */
  private async reconcile(folder: string, initial = false, seen?: Set<string>): Promise<void> {
    const running = this.reconciling.get(folder);
    if (running) {
      running.again = true;
      return running.done;
    }
    const state = { again: false, done: Promise.resolve() };
    state.done = (async () => {
      try {
        for (;;) {
          state.again = false;
          await this.reconcileOnce(folder, initial, seen);
          // Set by a call made while this pass awaited.
          if (!(state as { again: boolean }).again || this.stopping) break;
        }
      } catch (error) {
        this.hooks.onError('discovery', error, { folder });
      } finally {
        this.reconciling.delete(folder);
      }
    })();
    this.reconciling.set(folder, state);
    return state.done;
  }

  private async reconcileOnce(folder: string, initial: boolean, seen?: Set<string>): Promise<void> {
    const tracked = this.trackedFingerprints(folder);
    const entries = new Map<string, Checkpoint>();
    for (const checkpoint of this.checkpoints.all()) if (dirname(checkpoint.path) === folder) entries.set(checkpoint.fingerprint, checkpoint);
    const found = new Set<string>();
    for (const sibling of await this.siblings(folder, seen)) {
      const { identity } = sibling;
      found.add(identity.fingerprint);
      if (tracked.has(identity.fingerprint) || this.stopping) continue;
      const entry = entries.get(identity.fingerprint);
      if (entry?.done === true) continue;
      const canonical = join(folder, `${ROTATED_NAME.exec(basename(sibling.path))?.[1] ?? '0'}.log`);
      if (entry === undefined && this.skipsExisting(initial)) {
        this.checkpoints.set({ key: identity.key, path: canonical, dev: identity.dev, ino: identity.ino, fingerprint: identity.fingerprint, offset: sibling.size, size: sibling.size, done: true, updatedAtMs: Date.now() });
        continue;
      }
      const resumeAt = entry === undefined ? 0 : entry.offset;
      const resumed = entry === undefined ? identity : { dev: entry.dev, ino: entry.ino, fingerprint: entry.fingerprint, key: entry.key };
      if (await this.openSibling(canonical, sibling.path, resumed, resumeAt)) tracked.add(identity.fingerprint);
    }
    // Entries whose file is gone under every name. The live file a checkpoint names is open (or
    // waiting for a slot, or failing to open): those are not gone.
    const live = new Set([...this.active.values(), ...this.draining].flatMap((file) => (file.identity ? [file.identity.key] : [])));
    const missing = [...entries.values()].filter((entry) => !found.has(entry.fingerprint) && !tracked.has(entry.fingerprint) && !live.has(entry.key) && !this.waiting.has(entry.path) && !this.failed.has(entry.path));
    if (missing.length === 0) return;
    // A file renamed while the folder was listed may have been missed: list it once more before calling anything lost.
    const again = new Set((await this.siblings(folder, seen)).map((sibling) => sibling.identity.fingerprint));
    for (const entry of missing) {
      if (again.has(entry.fingerprint)) continue;
      this.checkpoints.delete(entry.key);
      // Not read to its end: what it held past the checkpoint is lost, as far as the agent saw it grow
      // (possibly nothing: a file that grew after the agent stopped has an end nobody can know).
      if (entry.done !== true) this.lose('deleted_before_read', entry.path, entry.path, entry.offset, Math.max(entry.offset, entry.size ?? entry.offset));
    }
  }

  /** Fingerprints of the files of `folder` being read (live or draining). */
  private trackedFingerprints(folder: string): Set<string> {
    const fingerprints = new Set<string>();
    for (const file of [...this.active.values(), ...this.draining]) {
      // Finished files count until their checkpoint says done: their last lines may still be in flight.
      if (file.identity && dirname(file.path) === folder) fingerprints.add(file.identity.fingerprint);
    }
    return fingerprints;
  }

  /**
   * The rotated files of a container folder that can be identified, oldest first: by restart number,
   * then by name (the kubelet's timestamps sort as text), a plain file before its `.gz`. Files the
   * kubelet is still writing (`.tmp`) are not rotated files yet.
   */
  private async siblings(folder: string, seen?: Set<string>): Promise<SiblingFile[]> {
    let names: string[];
    try {
      names = await readdir(folder);
    } catch {
      return []; // the folder is gone (pod deleted)
    }
    const rotated = names
      .flatMap((name) => {
        const match = ROTATED_NAME.exec(name);
        return match?.[1] !== undefined && !name.endsWith('.tmp') ? [{ name, restart: Number(match[1]), base: isGzipPath(name) ? name.slice(0, -3) : name }] : [];
      })
      .sort((a, b) => a.restart - b.restart || (a.base < b.base ? -1 : a.base > b.base ? 1 : a.name.length - b.name.length));
    const files: SiblingFile[] = [];
    for (const { name } of rotated) {
      const sibling = await this.siblingIdentity(join(folder, name), seen);
      if (sibling) files.push(sibling);
    }
    return files;
  }

  /** A rotated file's identity from its head (decompressed for `.gz`), cached by device and inode. */
  private async siblingIdentity(path: string, seen?: Set<string>): Promise<SiblingFile | undefined> {
    const stats = await stat(path).catch(() => undefined);
    if (!stats?.isFile()) return undefined;
    // Inodes are reused as soon as the kubelet deletes a file: the time of the last write tells a new
    // file from an old one on the same inode. A plain rotated file may still grow (re-read: its head is cheap).
    const cacheKey = `${stats.dev}:${stats.ino}:${stats.mtimeMs}`;
    seen?.add(cacheKey);
    const cached = this.siblingCache.get(cacheKey);
    const compressed = isGzipPath(path);
    if (cached && (compressed || cached.size === stats.size)) return { path, ...cached };
    let identity: FileIdentity | undefined;
    let size = stats.size;
    try {
      if (compressed) {
        const { head, declaredBytes } = await gzipHead(path, FINGERPRINT_BYTES);
        identity = identityFromHead(stats.dev, stats.ino, head);
        size = declaredBytes ?? 0;
      } else {
        const handle = await open(path, 'r');
        try {
          const head = Buffer.alloc(FINGERPRINT_BYTES);
          const { bytesRead } = await handle.read(head, 0, FINGERPRINT_BYTES, 0);
          identity = identityFromHead(stats.dev, stats.ino, head.subarray(0, bytesRead));
        } finally {
          await handle.close();
        }
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') this.hooks.onError('file_read', error, { path });
      return undefined;
    }
    if (!identity) return undefined;
    this.siblingCache.set(cacheKey, { identity, size });
    return { path, identity, size };
  }

  /** Starts reading a rotated file (`source`) from `offset` as `identity`, under its canonical path. */
  private async openSibling(canonical: string, source: string, identity: FileIdentity, offset: number): Promise<boolean> {
    const pod = parsePodLogPath(canonical, this.options.root);
    if (!pod) return false;
    const file = new TailedFile(canonical, pod, this.env, source);
    try {
      await file.openRotated(identity, offset);
    } catch (error) {
      await file.abandon();
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.hooks.onError('file_open', error, { path: source });
      return false;
    }
    this.openCount++;
    this.draining.add(file);
    this.markReady(file);
    this.logger.info({ path: source, offset, identity: identity.key }, 'reading a rotated file');
    return true;
  }

  /**
   * copytruncate: a file beside `file` whose head is the same as `file`'s and which holds at least
   * what was read: the copy the rotation made before truncating.
   */
  private async findCopy(file: TailedFile): Promise<SiblingFile | undefined> {
    const fingerprint = file.identity?.fingerprint;
    if (fingerprint === undefined) return undefined;
    const copies = (await this.siblings(dirname(file.path))).filter((s) => s.identity.fingerprint === fingerprint && s.size >= file.readOffset);
    return copies.find((copy) => !isGzipPath(copy.path)) ?? copies[0];
  }

  /** Counts and logs bytes that existed and can never be read. */
  private lose(reason: LossReason, path: string, source: string, fromOffset: number, toOffset: number): void {
    this.hooks.onLost(reason, toOffset - fromOffset, { path, source, fromOffset, toOffset });
  }

  private openWaiting(): void {
    for (const [path, pod] of this.waiting) {
      if (this.openCount >= this.options.maxOpenFiles || this.stopping) return;
      this.waiting.delete(path);
      void this.openFile(path, pod, false);
    }
  }

  // ---- reading -------------------------------------------------------------------------------

  private markReady(file: TailedFile): void {
    if (this.readySet.has(file) || this.stopping) return;
    this.readySet.add(file);
    this.readyQueue.push(file);
    const wake = this.wakeReader;
    this.wakeReader = undefined;
    wake?.();
  }

  private async readLoop(): Promise<void> {
    const buffer = Buffer.allocUnsafe(this.options.readBufferBytes);
    while (!this.stopping) {
      const file = this.readyQueue.shift();
      if (!file) {
        await new Promise<void>((resolve) => (this.wakeReader = resolve));
        continue;
      }
      this.readySet.delete(file);
      // Its topic refuses messages (the producer holds them aside): leave the file until the topic
      // takes them again; the poll offers it again while it has unread bytes.
      if (this.env.producer.isStalled(this.env.topicFor(file.pod))) continue;
      // A few compressed files are decompressed at once (each stream holds ~100 KiB); the others wait
      // with their descriptor held, so pruning takes nothing away, and the poll offers them again.
      if (file.compressed && !file.decompressing && this.decompressingFiles() >= MAX_DECOMPRESSING_FILES) continue;
      if (!this.env.producer.hasCapacity()) {
        const started = Date.now();
        await this.env.producer.waitForCapacity();
        this.hooks.onBackpressure(Date.now() - started);
        if (this.isStopping()) return;
      }
      let bytesRead = 0;
      try {
        bytesRead = await file.readChunk(buffer);
      } catch (error) {
        this.hooks.onError('file_read', error, { path: file.source });
        if (file.compressed) {
          // A corrupt .gz cannot be read past this point, however often it is tried.
          this.lose('unreadable', file.path, file.source, file.readOffset, Math.max(file.readOffset, file.knownSize));
          await this.finish(file);
        }
        continue;
      }
      // Only a read that found bytes takes the file again at once: a file that gave nothing (not
      // identified yet, or at its end) waits for the watcher or the poll, else this loop would spin
      // without ever yielding to timers and I/O (a frozen agent).
      if (bytesRead > 0 && (bytesRead === buffer.length || file.hasUnreadBytes)) this.markReady(file);
      else if (file.drainComplete(Date.now())) await this.finish(file);
    }
  }

  private decompressingFiles(): number {
    let count = 0;
    for (const file of this.draining) if (file.decompressing && file.phase !== 'finished') count++;
    return count;
  }

  private async finish(file: TailedFile): Promise<void> {
    if (file.phase === 'finished') return;
    await file.finish();
    this.openCount--;
    this.openWaiting();
  }

  // ---- watching for growth, rotation, deletion, truncation --------------------------------------

  private async poll(): Promise<void> {
    if (this.polling || this.stopping) return;
    this.polling = true;
    try {
      for (const file of [...this.active.values()]) await this.pollActive(file);
      for (const file of [...this.draining]) await this.pollDraining(file);
      await this.pollPaths();
    } finally {
      this.polling = false;
    }
  }

  private async pollActive(file: TailedFile): Promise<void> {
    if (file.phase === 'identifying') {
      const identified = await this.identify(file, false).catch((error: unknown) => {
        this.hooks.onError('file_read', error, { path: file.path });
        return false;
      });
      if (!identified) {
        // Still no first line: if the path moved on meanwhile, let the new file take its place (a
        // rotated file is read by the folder's reconciliation once it holds a line).
        const current = await stat(file.path).catch(() => undefined);
        const fdStats = await file.refreshSize().catch(() => undefined);
        if (!current || fdStats === undefined || fdStats.nlink === 0 || current.ino !== file.ino || current.dev !== file.dev) {
          this.active.delete(file.path);
          await file.abandon();
          this.openCount--;
          this.openWaiting();
          if (current) await this.track(file.path, false);
          await this.reconcile(dirname(file.path));
        }
      }
      return;
    }
    if (file.phase !== 'active') return;
    let size;
    try {
      size = await file.refreshSize();
    } catch (error) {
      this.hooks.onError('file_read', error, { path: file.path });
      return;
    }
    if (!size) return;
    if (size.truncated) {
      await this.truncated(file, size.previousSize);
      return;
    }
    let current: Awaited<ReturnType<typeof stat>> | undefined;
    try {
      current = await stat(file.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return;
    }
    if (current?.ino !== file.identity?.ino || current?.dev !== file.identity?.dev) {
      this.retire(file, size.nlink === 0 ? 'deleted' : 'rotated');
      if (current !== undefined) await this.track(file.path, false);
      // More than one rotation since the last poll leaves incarnations no descriptor holds.
      await this.reconcile(dirname(file.path));
    } else if (file.hasUnreadBytes) {
      this.markReady(file);
    }
    file.tick();
  }

  /**
   * copytruncate: the file starts over at 0. Its unread tail is read from the copy beside it when
   * there is one; what neither holds is counted lost. The path's new content is a new file.
   */
  private async truncated(file: TailedFile, sizeBefore: number): Promise<void> {
    const from = file.readOffset;
    // Looked for first, while the file is still active: a draining file could be finished meanwhile.
    const copy = await this.findCopy(file);
    let readable = from;
    if (copy) {
      this.active.delete(file.path);
      this.draining.add(file);
      try {
        await file.switchTo(copy.path);
        readable = copy.size;
        this.logger.info({ path: file.path, copy: copy.path, offset: from }, 'file truncated, reading its tail from the copy');
      } catch (error) {
        this.hooks.onError('file_open', error, { path: copy.path });
        file.beginDrain('truncated');
      }
    } else {
      this.retire(file, 'truncated');
    }
    if (sizeBefore > readable) this.lose('truncated', file.path, copy?.path ?? file.path, readable, sizeBefore);
    if (file.source === file.path) await this.finish(file);
    else this.markReady(file);
    await this.openFile(file.path, file.pod, false, 0);
  }

  /**
   * Every known live path with no file open at it: a file there now is opened within this poll,
   * whatever the watcher reported. A path whose folder is gone is forgotten.
   */
  private async pollPaths(): Promise<void> {
    for (const path of [...this.paths.keys()]) {
      if (this.stopping) return;
      if (this.active.has(path) || this.waiting.has(path)) continue;
      let code: string | undefined;
      const current = await stat(path).catch((error: unknown) => {
        code = (error as NodeJS.ErrnoException).code;
        return undefined;
      });
      if (current !== undefined) {
        if (!current.isFile()) continue;
        await this.track(path, false);
        // Nothing was open at the path: incarnations may have come and gone meanwhile.
        if (this.active.has(path)) await this.reconcile(dirname(path));
        continue;
      }
      if (code === 'ENOENT' && (await stat(dirname(path)).catch(() => undefined)) === undefined) {
        this.paths.delete(path);
        this.failed.delete(path);
      }
    }
  }

  /** The path no longer names this file: keep reading it through its descriptor until drained. */
  private retire(file: TailedFile, reason: 'rotated' | 'deleted' | 'truncated'): void {
    this.active.delete(file.path);
    this.draining.add(file);
    file.beginDrain(reason);
    this.logger.debug({ path: file.path, reason, offset: file.readOffset }, 'file left its path, draining');
    this.markReady(file);
  }

  private async pollDraining(file: TailedFile): Promise<void> {
    if (file.phase === 'draining') {
      try {
        await file.refreshSize();
      } catch (error) {
        this.hooks.onError('file_read', error, { path: file.path });
      }
      if (file.hasUnreadBytes) this.markReady(file);
      else if (file.drainComplete(Date.now())) await this.finish(file);
    }
  }

  // ---- checkpoints ---------------------------------------------------------------------------

  async writeCheckpoints(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    this.checkpointing = this.doWriteCheckpoints().finally(() => (this.checkpointing = undefined));
    return this.checkpointing;
  }

  private async doWriteCheckpoints(): Promise<void> {
    const now = Date.now();
    const live = new Set<string>();
    // One entry per identity: should two readers ever hold one file, the entry keeps the smaller safe offset.
    const entries = new Map<string, Checkpoint>();
    for (const file of [...this.active.values(), ...this.draining]) {
      const identity = file.identity;
      if (!identity) continue;
      const done = file.settled;
      // Done, its entry stays while the file is on disk under any name; reconciliation drops it after.
      if (done) this.draining.delete(file);
      live.add(identity.key);
      const entry: Checkpoint = {
        key: identity.key,
        path: file.path,
        dev: identity.dev,
        ino: identity.ino,
        fingerprint: identity.fingerprint,
        offset: file.safeOffset(),
        size: Math.max(file.knownSize, file.readOffset),
        ...(done ? { done } : {}),
        updatedAtMs: now,
      };
      const other = entries.get(identity.key);
      if (other === undefined) entries.set(identity.key, entry);
      else entries.set(identity.key, { ...other, offset: Math.min(other.offset, entry.offset), size: Math.max(other.size ?? 0, entry.size ?? 0), ...(other.done === true && done ? { done } : { done: undefined }) });
    }
    for (const entry of entries.values()) this.checkpoints.set(entry);
    // Folder reconciliation owns the entries of the folders it sees; entries of folders no longer
    // tailed (outside the root, excluded by a changed config) age out.
    for (const checkpoint of [...this.checkpoints.all()]) {
      if (live.has(checkpoint.key) || (parsePodLogPath(checkpoint.path, this.options.root) && this.accepts(checkpoint.path, true))) continue;
      if (now - checkpoint.updatedAtMs > this.options.orphanCheckpointTtlMs) this.checkpoints.delete(checkpoint.key);
    }
    try {
      await this.checkpoints.flush();
    } catch (error) {
      this.hooks.onError('checkpoint_write', error, {});
    }
  }

  /** A method, so the read loop re-reads the flag after awaiting (no stale narrowing). */
  private isStopping(): boolean {
    return this.stopping;
  }

  private every(ms: number, run: () => Promise<void>): void {
    const timer = setInterval(() => {
      run().catch((error: unknown) => this.logger.error({ err: error }, `periodic task failed: ${describeError(error)}`));
    }, ms);
    this.timers.push(timer);
  }
}

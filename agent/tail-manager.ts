/**
 * Discovers the node's pod log files and keeps every one of them tailed: chokidar for prompt discovery,
 * a periodic rescan as the safety net, a bounded number of open descriptors, one read loop that takes
 * files in turn (one chunk each) and waits while the producer is full, and a poll that notices growth,
 * rotation (the path now names another inode), deletion and truncation. Checkpoints are written on an
 * interval from each file's safe offset; entries of files that are gone for good are dropped.
 */
import type { Stats } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import picomatch from 'picomatch';
import { describeError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { CheckpointStore } from './checkpoint-store.js';
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

export interface TailManagerOptions {
  root: string;
  include: string[];
  exclude: string[];
  namespaces: { include: string[]; exclude: string[] };
  /** Where to start in files found at the first scan that have no checkpoint. Files that appear later always start at 0. */
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
    await this.resumeRotatedFiles();
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
    this.every(this.options.rescanIntervalMs, () => this.scan(false));
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
          if (this.accepts(path, true)) await this.track(path, initial);
        }
      }
    }
  }

  /** Starts following a path unless already followed. */
  private async track(path: string, initial: boolean): Promise<void> {
    if (this.stopping || this.active.has(path) || this.waiting.has(path)) return;
    const retryAt = this.failed.get(path);
    if (retryAt !== undefined && Date.now() < retryAt) return;
    const pod = parsePodLogPath(path, this.options.root);
    if (!pod) return;
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
      // Not retried sooner than a rescan; a permission fixed later is picked up then.
      this.failed.set(path, Date.now() + this.options.rescanIntervalMs - 1);
      this.hooks.onError(reason, error, { path });
      this.openWaiting();
      return;
    }
    this.failed.delete(path);
    await this.identify(file, initial, forceStart);
  }

  private async identify(file: TailedFile, initial: boolean, forceStart?: number): Promise<boolean> {
    const identified = await file.identify((identity, size) => {
      if (forceStart !== undefined) return forceStart;
      const checkpoint = this.checkpoints.get(identity.key);
      if (checkpoint) return checkpoint.offset <= size ? checkpoint.offset : 0;
      return initial && this.options.startAt === 'end' ? size : 0;
    });
    if (identified) {
      this.logger.debug({ path: file.path, identity: file.identity?.key, offset: file.readOffset }, 'tailing file');
      this.markReady(file);
    }
    return identified;
  }

  /**
   * After a restart, checkpoints whose file is no longer at its path may belong to a file the kubelet
   * rotated (renamed to `<n>.log.<timestamp>`) before we finished it: find it by device and inode in
   * the same folder and drain it from the checkpoint, under its canonical path. Entries whose file is
   * gone are dropped.
   */
  private async resumeRotatedFiles(): Promise<void> {
    const tracked = new Set([...this.active.values()].flatMap((f) => (f.identity ? [f.identity.key] : [])));
    for (const checkpoint of [...this.checkpoints.all()]) {
      if (tracked.has(checkpoint.key) || this.waiting.has(checkpoint.path)) continue;
      const pod = parsePodLogPath(checkpoint.path, this.options.root);
      const dir = dirname(checkpoint.path);
      const names = pod ? await readdir(dir).catch(() => [] as string[]) : [];
      let resumed = false;
      for (const name of names) {
        if (name.endsWith('.gz') || !pod) continue;
        const openPath = join(dir, name);
        const stats = await stat(openPath).catch(() => undefined);
        if (stats?.dev !== checkpoint.dev || stats.ino !== checkpoint.ino) continue;
        resumed = await this.resumeRotated(checkpoint.path, openPath, pod, checkpoint.key, checkpoint.offset);
        break;
      }
      if (!resumed) this.checkpoints.delete(checkpoint.key);
    }
  }

  private async resumeRotated(path: string, openPath: string, pod: PodLogPath, key: string, offset: number): Promise<boolean> {
    const file = new TailedFile(path, pod, this.env, openPath);
    try {
      await file.open();
      const ok = await file.identify((identity, size) => (identity.key === key && offset <= size ? offset : size));
      if (!ok || file.identity?.key !== key) {
        await file.abandon();
        return false;
      }
    } catch (error) {
      this.hooks.onError('file_open', error, { path: openPath });
      return false;
    }
    this.openCount++;
    file.beginDrain('rotated');
    this.draining.add(file);
    this.markReady(file);
    this.logger.info({ path: openPath, offset }, 'resuming a file rotated while the agent was down');
    return true;
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
        this.hooks.onError('file_read', error, { path: file.path });
        continue;
      }
      // Only a read that found bytes takes the file again at once: a file that gave nothing (not
      // identified yet, or at its end) waits for the watcher or the poll, else this loop would spin
      // without ever yielding to timers and I/O (a frozen agent).
      if (bytesRead > 0 && (bytesRead === buffer.length || file.hasUnreadBytes)) this.markReady(file);
      else if (file.drainComplete(Date.now())) await this.finish(file);
    }
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
        // Still no first line: if the path moved on meanwhile, let the new file take its place.
        const current = await stat(file.path).catch(() => undefined);
        const fdStats = await file.refreshSize().catch(() => undefined);
        if (!current || fdStats === undefined || fdStats.nlink === 0) {
          this.active.delete(file.path);
          await file.abandon();
          this.openCount--;
          this.openWaiting();
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
      // copytruncate: what was not read is gone. Finish this incarnation and start over at 0.
      this.logger.warn({ path: file.path, offset: file.readOffset, size: size.size }, 'file truncated, reading it again from the start');
      this.retire(file, 'truncated');
      await this.finish(file);
      await this.openFile(file.path, file.pod, false, 0);
      return;
    }
    let current: Stats | undefined;
    try {
      current = await stat(file.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return;
    }
    if (current?.ino !== file.identity?.ino || current?.dev !== file.identity?.dev) {
      this.retire(file, size.nlink === 0 ? 'deleted' : 'rotated');
      if (current !== undefined) await this.track(file.path, false);
    } else if (file.hasUnreadBytes) {
      this.markReady(file);
    }
    file.tick();
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
    for (const file of [...this.active.values(), ...this.draining]) {
      const identity = file.identity;
      if (!identity) continue;
      if (file.settled) {
        this.draining.delete(file);
        this.checkpoints.delete(identity.key);
        continue;
      }
      live.add(identity.key);
      this.checkpoints.set({ key: identity.key, path: file.path, dev: identity.dev, ino: identity.ino, fingerprint: identity.fingerprint, offset: file.safeOffset(), updatedAtMs: now });
    }
    for (const checkpoint of [...this.checkpoints.all()]) {
      if (live.has(checkpoint.key) || this.waiting.has(checkpoint.path)) continue;
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

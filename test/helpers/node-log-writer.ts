/**
 * A Kubernetes node's log tree, written the way the kubelet and containerd write it, with a ledger of
 * where every line's bytes were and when they left the disk. Tests and the rotation benchmark use it to
 * decide which lines a shipper could still have read at any moment.
 *
 * What it models, from the kubelet's container log manager (pkg/kubelet/logs/container_log_manager.go)
 * and containerd's CRI logger (pkg/cri/io/logger.go):
 * - CRI lines `<RFC3339Nano> <stream> <P|F> <message>`; a line longer than 16 KiB is cut into `P`
 *   chunks of exactly 16 KiB and one `F` chunk, on bytes (containerd does not look at UTF-8, so a
 *   chunk can end inside a multi-byte character). stdout and stderr are written by separate copiers,
 *   so the other stream's lines can sit between the chunks.
 * - Rotation by size, checked every `monitorIntervalMs` (the kubelet's containerLogMonitorInterval).
 *   One rotation does, in this order: remove `*.tmp` and any plain rotated file that has a `.gz` twin
 *   (cleanupUnusedLogs); remove the oldest rotated files so that at most `maxFiles - 2` are left
 *   (removeExcessLogs: with the live file and the one about to be rotated, `maxFiles` in all); gzip
 *   every plain rotated file (compressLog: `<name>.gz.tmp`, rename to `<name>.gz`, remove `<name>`);
 *   rename `N.log` to `N.log.<YYYYMMDD-HHMMSS>` (UTC) and have the runtime reopen `N.log`
 *   (rotateLatestLog). The runtime may still append to the renamed file until it reopens.
 * - Two rotations within one second give the same name. The second rename succeeds (the first file
 *   was already gzipped away), and the kubelet's next rotation then deletes that plain file as
 *   "unused" because its name plus `.gz` exists: its lines are gone unless a shipper read them in
 *   time. `forceSameSecondRotationAfterMs` makes that happen once.
 * - One docker json-file pod (`{"log":"…\n","stream":"stdout","time":"…"}`; long lines split at
 *   16 KiB into entries without the trailing `\n`), rotated like the others.
 * - One copytruncate pod: `N.log` is copied to `N.log.<k>` (k = 1, 2, …) and truncated in place; the
 *   runtime keeps appending (O_APPEND) at the new end. At most `maxFiles - 1` copies are kept. The
 *   copy comes right after a burst of lines, so the tail of every truncated file is only in its copy.
 * - Container restarts: the container's next log is `<restart + 1>.log`; the old one stays.
 *
 * The ledger: every file incarnation (a rename-rotated file from its creation as `N.log` to the removal
 * of its last form, plain or `.gz`; for copytruncate, the bytes between two truncations, first in the
 * live file then in its copy) with its names over time, and every line's byte range in it (from the
 * start of its first chunk to the end of its last). Every line's message starts with a unique id.
 */
import { closeSync, copyFileSync, existsSync, ftruncateSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CRI_CHUNK_BYTES, containerLogDir, criChunks, criTime, type CriStream } from '../../scripts/pod-log-writer.js';

export type ContainerKind = 'cri' | 'docker' | 'copytruncate';

export interface NodeLogWriterOptions {
  root: string;
  namespace: string;
  /** Prefix of pod names and line ids, so that two writers can share a namespace. */
  name?: string;
  /** CRI containers rotated by rename (each its own pod). */
  criContainers: number;
  /** Adds one docker json-file pod. */
  dockerPod: boolean;
  /** Adds one pod rotated by copytruncate. */
  copytruncatePod: boolean;
  /** Lines per second over all containers. */
  linesPerSecond: number;
  /** The kubelet's containerLogMaxSize. */
  rotateBytes: number;
  /** The kubelet's containerLogMaxFiles (at least 2). */
  maxFiles: number;
  /** How often the kubelet checks sizes. */
  monitorIntervalMs: number;
  /** Every how many lines a container writes a long line (0: never); only the first `longLineContainers` do. */
  longLineEvery: number;
  longLineContainers: number;
  /** Restarts this many CRI containers once (their next lines go to `1.log`) after `restartAfterMs`. */
  restartContainers: number;
  restartAfterMs: number;
  /** Rotates the last CRI container twice within one second (400 ms apart, tried again in a later second when a late tick misses it), once, after this many ms (undefined: never). */
  forceSameSecondRotationAfterMs?: number;
}

export interface Incarnation {
  readonly id: number;
  readonly container: number;
  readonly dir: string;
  /** Names (relative to `dir`) it had, with when it took each. */
  readonly names: { name: string; atMs: number }[];
  readonly createdAtMs: number;
  sizeBytes: number;
  /** When its last form left the disk. */
  deletedAtMs?: number;
  deletedBecause?: 'excess' | 'unused' | 'copy-pruned';
}

export interface WrittenLine {
  readonly id: string;
  readonly container: number;
  readonly seq: number;
  readonly stream: CriStream;
  readonly long: boolean;
  readonly incarnation: number;
  /** Byte range in the incarnation: start of its first physical line, end of its last. */
  readonly start: number;
  readonly end: number;
  readonly writtenAtMs: number;
}

export interface FileEvent {
  atMs: number;
  kind: 'create' | 'rename' | 'compress' | 'delete' | 'copy' | 'truncate';
  path: string;
  incarnation: number;
}

interface Container {
  readonly index: number;
  readonly kind: ContainerKind;
  readonly dir: string;
  restart: number;
  fd: number;
  /** The incarnation being written. */
  current: Incarnation;
  seq: number;
  copies: number;
  restarted: boolean;
  lastRotationMs?: number;
}

export interface NodeLogWriterStats {
  lines: number;
  longLines: number;
  /** `P` chunks that end inside a multi-byte UTF-8 character (as containerd cuts). */
  chunksSplittingUtf8: number;
  rotations: number;
  copytruncates: number;
  sameSecondRotations: number;
  deletedIncarnations: number;
  restarts: number;
}

const TICK_MS = 20;
/** Lines the copytruncate pod writes just before each copy. */
const COPYTRUNCATE_BURST_LINES = 40;
/** Characters of 1 to 4 UTF-8 bytes for long lines, so that 16 KiB cuts land inside characters. */
const LONG_ALPHABET = ['日', '本', '語', 'é', 'ü', '😀', 'a', ' ', 'ж', '€'];

/** The kubelet's rotated-file suffix: Go's `20060102-150405`, UTC. */
export function rotationStamp(atMs: number): string {
  return new Date(atMs).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

export class NodeLogWriter {
  readonly incarnations: Incarnation[] = [];
  readonly lines: WrittenLine[] = [];
  readonly byId = new Map<string, WrittenLine>();
  readonly events: FileEvent[] = [];
  readonly stats: NodeLogWriterStats = { lines: 0, longLines: 0, chunksSplittingUtf8: 0, rotations: 0, copytruncates: 0, sameSecondRotations: 0, deletedIncarnations: 0, restarts: 0 };
  readonly containers: Container[] = [];
  /** Which incarnation each path on disk holds (plain and gzipped forms). */
  private readonly onDisk = new Map<string, Incarnation>();
  private timer: NodeJS.Timeout | undefined;
  private startedAtMs = 0;
  private pausedMs = 0;
  private pausedAtMs: number | undefined;
  /** Lines written by the paced loop (not by writeLines calls from outside). */
  private paced = 0;
  private lastMonitorMs = 0;
  private forcedSameSecond = false;
  private secondRotation: { container: Container; atMs: number; stamp: string } | undefined;
  private nanos = 0;

  constructor(readonly options: NodeLogWriterOptions) {
    const kinds: ContainerKind[] = [...Array.from({ length: options.criContainers }, (): ContainerKind => 'cri'), ...(options.dockerPod ? ['docker' as const] : []), ...(options.copytruncatePod ? ['copytruncate' as const] : [])];
    for (const [index, kind] of kinds.entries()) {
      const uid = `${String(index).padStart(8, '0')}-7f9c-4aaa-8bbb-${kind === 'cri' ? 'c' : kind === 'docker' ? 'd' : 'e'}${(options.name ?? '').length.toString(16).padStart(11, '0')}`;
      const dir = containerLogDir(options.root, { namespace: options.namespace, pod: `${options.name ?? ''}${kind}-${index}`, uid, container: 'app' });
      const container: Container = { index, kind, dir, restart: 0, fd: -1, current: undefined as unknown as Incarnation, seq: 0, copies: 0, restarted: false };
      this.openLive(container, Date.now());
      this.containers.push(container);
    }
  }

  /** The pods' folder names, `<namespace>_<pod>_<uid>`, each holding `app/`. */
  get containerDirs(): string[] {
    return this.containers.map((c) => c.dir);
  }

  /** Writes at `linesPerSecond` until stop(); the kubelet's rotation runs alongside. */
  start(): void {
    this.startedAtMs = Date.now();
    this.pausedMs = 0;
    this.pausedAtMs = undefined;
    this.paced = 0;
    this.lastMonitorMs = this.startedAtMs;
    this.schedule();
  }

  /**
   * Pauses writing and rotating (the node stands still), e.g. while a test waits for an agent to start
   * on a loaded machine; resume() goes on at the same rate, the paused time not counted.
   */
  pause(): void {
    this.stop();
    this.pausedAtMs ??= Date.now();
  }

  resume(): void {
    if (this.pausedAtMs !== undefined) this.pausedMs += Date.now() - this.pausedAtMs;
    this.pausedAtMs = undefined;
    if (this.timer === undefined) this.schedule();
  }

  /** Stops writing (and rotating); the files stay as they are. */
  stop(): void {
    const timer = this.timer;
    this.timer = undefined;
    if (timer) clearTimeout(timer);
  }

  /** Time spent writing since start(), pauses excluded. */
  private activeMs(now: number): number {
    return now - this.startedAtMs - this.pausedMs;
  }

  private schedule(): void {
    const tick = (): void => {
      if (this.timer === undefined) return;
      const now = Date.now();
      const due = Math.floor((this.activeMs(now) * this.options.linesPerSecond) / 1000) - this.paced;
      if (due > 0) this.paced += this.writeLines(due, now);
      this.maybeRestart(now);
      this.maybeSecondRotation(now);
      if (now - this.lastMonitorMs >= this.options.monitorIntervalMs) {
        this.lastMonitorMs = now;
        this.monitor(now);
      }
      this.timer = setTimeout(tick, TICK_MS);
    };
    this.timer = setTimeout(tick, TICK_MS);
  }

  /** Closes the runtime's descriptors. */
  close(): void {
    for (const c of this.containers) {
      if (c.fd >= 0) closeSync(c.fd);
      c.fd = -1;
    }
  }

  /** Writes `count` lines spread over the containers right now (also usable without start()). */
  writeLines(count: number, now = Date.now()): number {
    const live = this.containers;
    const per = Math.floor(count / live.length);
    let extra = count - per * live.length;
    let written = 0;
    for (const c of live) {
      let n = per;
      if (extra > 0) {
        n++;
        extra--;
      }
      if (n > 0) written += this.writeBatch(c, n, now);
    }
    return written;
  }

  /** Rotates one container's log now, as the kubelet does when it finds it over the size limit. */
  rotateNow(container: number, now = Date.now()): void {
    const c = this.containers[container];
    if (!c) throw new Error(`no container ${container}`);
    if (c.kind === 'copytruncate') this.copytruncate(c, now);
    else this.rotate(c, now);
  }

  /** The message of a line, recomputed from its id's parts (what a shipper must deliver, byte for byte). */
  expectedMessage(line: Pick<WrittenLine, 'id' | 'container' | 'seq' | 'long'>): string {
    if (!line.long) return `${line.id} GET /api/v1/orders?id=${line.seq} 200 ${'ü'.repeat(line.seq % 5)} kube-probe/1.34 upstream=192.0.2.${line.seq % 256} took=${line.seq % 997}ms`;
    const kind = this.containers[line.container]?.kind;
    // Docker's json-file driver escapes the text as JSON; a cut inside a character would be lost there.
    const alphabet = kind === 'docker' ? ['a', 'b', ' ', 'z'] : LONG_ALPHABET;
    const targetBytes = 40_000 + ((line.seq * 7919) % 9_000);
    const parts = [`${line.id} `];
    let bytes = parts[0]?.length ?? 0;
    let state = line.seq * 2654435761;
    while (bytes < targetBytes) {
      state = (state * 1103515245 + 12345) % 2147483648;
      const ch = alphabet[state % alphabet.length] ?? 'a';
      parts.push(ch);
      bytes += Buffer.byteLength(ch);
    }
    return parts.join('');
  }

  /** The files the ledger says are on disk now, by path: a cross-check of the ledger against the disk. */
  pathsOnDisk(): string[] {
    return [...this.onDisk.keys()].sort();
  }

  private idOf(container: number, seq: number): string {
    return `${this.options.name ?? ''}c${String(container).padStart(2, '0')}-${String(seq).padStart(7, '0')}`;
  }

  private nextTime(now: number): string {
    this.nanos = (this.nanos + 1) % 1_000_000;
    return criTime(now, this.nanos);
  }

  private writeBatch(c: Container, count: number, now: number): number {
    const parts: Buffer[] = [];
    let offset = c.current.sizeBytes;
    const pending: { seq: number; stream: CriStream; long: boolean; start: number; end: number }[] = [];
    const push = (buffer: Buffer): number => {
      parts.push(buffer);
      offset += buffer.length;
      return offset;
    };
    let n = 0;
    while (n < count) {
      const seq = c.seq++;
      const long = this.options.longLineEvery > 0 && c.index < this.options.longLineContainers && seq % this.options.longLineEvery === this.options.longLineEvery - 1;
      const stream: CriStream = long ? 'stdout' : seq % 4 === 3 ? 'stderr' : 'stdout';
      const message = this.expectedMessage({ id: this.idOf(c.index, seq), container: c.index, seq, long });
      n++;
      if (!long) {
        const start = offset;
        pending.push({ seq, stream, long, start, end: push(this.physicalLines(c, message, stream, now)[0] ?? Buffer.alloc(0)) });
        continue;
      }
      // A long stdout line: its chunks, with the next stderr lines (their own ids) between them.
      const chunks = this.physicalLines(c, message, stream, now);
      const start = offset;
      for (const [i, chunk] of chunks.entries()) {
        push(chunk);
        if (i < chunks.length - 1 && n < count) {
          const otherSeq = c.seq++;
          const other = this.expectedMessage({ id: this.idOf(c.index, otherSeq), container: c.index, seq: otherSeq, long: false });
          const otherStart = offset;
          pending.push({ seq: otherSeq, stream: 'stderr', long: false, start: otherStart, end: push(this.physicalLines(c, other, 'stderr', now)[0] ?? Buffer.alloc(0)) });
          n++;
        }
      }
      pending.push({ seq, stream, long, start, end: offset });
      this.stats.longLines++;
    }
    const data = Buffer.concat(parts);
    writeSync(c.fd, data);
    c.current.sizeBytes += data.length;
    for (const p of pending) {
      const line: WrittenLine = { id: this.idOf(c.index, p.seq), container: c.index, seq: p.seq, stream: p.stream, long: p.long, incarnation: c.current.id, start: p.start, end: p.end, writtenAtMs: now };
      this.lines.push(line);
      this.byId.set(line.id, line);
    }
    this.stats.lines += pending.length;
    return pending.length;
  }

  /** The physical lines of one message in the container's format. */
  private physicalLines(c: Container, message: string, stream: CriStream, now: number): Buffer[] {
    const time = this.nextTime(now);
    if (c.kind !== 'docker') {
      const chunks = criChunks(time, stream, message, CRI_CHUNK_BYTES);
      if (chunks.length > 1) {
        const bytes = Buffer.from(message);
        for (let cut = CRI_CHUNK_BYTES; cut < bytes.length; cut += CRI_CHUNK_BYTES) {
          if (((bytes[cut] ?? 0) & 0xc0) === 0x80) this.stats.chunksSplittingUtf8++;
        }
      }
      return chunks;
    }
    // Docker's json-file: 16 KiB pieces, all but the last without the trailing newline.
    const pieces: Buffer[] = [];
    for (let startChar = 0; ; startChar += CRI_CHUNK_BYTES) {
      const piece = message.slice(startChar, startChar + CRI_CHUNK_BYTES);
      const last = startChar + CRI_CHUNK_BYTES >= message.length;
      pieces.push(Buffer.from(`${JSON.stringify({ log: last ? `${piece}\n` : piece, stream, time })}\n`));
      if (last) return pieces;
    }
  }

  private newIncarnation(c: Container, name: string, now: number): Incarnation {
    const inc: Incarnation = { id: this.incarnations.length, container: c.index, dir: c.dir, names: [{ name, atMs: now }], createdAtMs: now, sizeBytes: 0 };
    this.incarnations.push(inc);
    this.onDisk.set(join(c.dir, name), inc);
    this.events.push({ atMs: now, kind: 'create', path: join(c.dir, name), incarnation: inc.id });
    return inc;
  }

  private openLive(c: Container, now: number): void {
    const name = `${c.restart}.log`;
    c.fd = openSync(join(c.dir, name), 'a', 0o640);
    c.current = this.newIncarnation(c, name, now);
  }

  private maybeRestart(now: number): void {
    if (this.activeMs(now) < this.options.restartAfterMs) return;
    let restarts = this.stats.restarts;
    for (const c of this.containers) {
      if (restarts >= this.options.restartContainers) return;
      if (c.kind !== 'cri' || c.restarted || c.index === 0) continue;
      // The container exits (its log stays) and the kubelet starts it again with the next number.
      closeSync(c.fd);
      c.restart++;
      c.restarted = true;
      this.openLive(c, now);
      restarts++;
      this.stats.restarts++;
    }
  }

  /** The kubelet's periodic check: rotate every container whose live log reached rotateBytes. */
  private monitor(now: number): void {
    for (const c of this.containers) {
      if (c.current.sizeBytes < this.options.rotateBytes) continue;
      if (c.kind === 'copytruncate') this.copytruncate(c, now);
      else this.rotate(c, now);
    }
  }

  /**
   * The forced same-second rotation: early in a second, rotate the last CRI container (unless it was
   * rotated less than a second ago), and again 400 ms later, in the same second (tried again in a later second if a late tick missed it), after the runtime
   * wrote to the new file meanwhile.
   */
  private maybeSecondRotation(now: number): void {
    const forceAt = this.options.forceSameSecondRotationAfterMs;
    const c = this.containers[this.options.criContainers - 1];
    if (!this.forcedSameSecond && c && forceAt !== undefined && this.activeMs(now) >= forceAt && now % 1000 < 200 && now - (c.lastRotationMs ?? 0) >= 1000) {
      this.forcedSameSecond = true;
      this.rotate(c, now);
      this.secondRotation = { container: c, atMs: now + 400, stamp: rotationStamp(now) };
      return;
    }
    const pending = this.secondRotation;
    if (!pending || now < pending.atMs) return;
    this.secondRotation = undefined;
    // A late tick (a loaded machine) missed the second: try again in a later one.
    if (rotationStamp(now) !== pending.stamp) {
      this.forcedSameSecond = false;
      return;
    }
    this.rotate(pending.container, now);
    this.stats.sameSecondRotations++;
  }

  private removePath(path: string, now: number, because: Incarnation['deletedBecause']): void {
    const inc = this.onDisk.get(path);
    rmSync(path, { force: true });
    this.onDisk.delete(path);
    this.events.push({ atMs: now, kind: 'delete', path, incarnation: inc?.id ?? -1 });
    if (inc && ![...this.onDisk.values()].includes(inc)) {
      inc.deletedAtMs = now;
      inc.deletedBecause = because;
      this.stats.deletedIncarnations++;
    }
  }

  /** containerLogManager.rotateLog, step by step. */
  private rotate(c: Container, now: number): void {
    const live = `${c.restart}.log`;
    const prefix = `${live}.`;
    let rotated = readdirSync(c.dir).filter((n) => n.startsWith(prefix));
    // cleanupUnusedLogs: temporary files, and plain files whose `.gz` twin exists.
    for (const name of rotated) {
      if (name.endsWith('.tmp') || (!name.endsWith('.gz') && rotated.includes(`${name}.gz`))) this.removePath(join(c.dir, name), now, 'unused');
    }
    rotated = readdirSync(c.dir)
      .filter((n) => n.startsWith(prefix))
      .sort();
    // removeExcessLogs: at most maxFiles - 2 rotated files before this rotation adds one.
    const keep = Math.max(this.options.maxFiles - 2, 0);
    while (rotated.length > keep) {
      const oldest = rotated.shift();
      if (oldest !== undefined) this.removePath(join(c.dir, oldest), now, 'excess');
    }
    // compressLog: every plain rotated file to `.gz` through `.gz.tmp`, then the plain one removed.
    for (const name of rotated) {
      if (name.endsWith('.gz')) continue;
      const path = join(c.dir, name);
      const inc = this.onDisk.get(path);
      const tmp = `${path}.gz.tmp`;
      writeFileSync(tmp, gzipSync(readFileSync(path)), { mode: 0o640 });
      renameSync(tmp, `${path}.gz`);
      if (inc) {
        this.onDisk.set(`${path}.gz`, inc);
        inc.names.push({ name: `${name}.gz`, atMs: now });
        this.events.push({ atMs: now, kind: 'compress', path: `${path}.gz`, incarnation: inc.id });
      }
      this.removePath(path, now, 'excess');
    }
    // rotateLatestLog: rename, then the runtime reopens the live file.
    const target = `${live}.${rotationStamp(now)}`;
    const livePath = join(c.dir, live);
    const targetPath = join(c.dir, target);
    if (existsSync(targetPath)) this.removePath(targetPath, now, 'unused'); // rename(2) replaces it
    renameSync(livePath, targetPath);
    const inc = c.current;
    this.onDisk.delete(livePath);
    this.onDisk.set(targetPath, inc);
    inc.names.push({ name: target, atMs: now });
    this.events.push({ atMs: now, kind: 'rename', path: targetPath, incarnation: inc.id });
    // Before the reopen, the runtime's copier may still append a line to the renamed file.
    this.writeBatch(c, 1 + (c.seq % 2), now);
    closeSync(c.fd);
    this.openLive(c, now);
    c.lastRotationMs = now;
    this.stats.rotations++;
  }

  /** logrotate's copytruncate: copy to `N.log.<k>`, truncate `N.log` in place; the writer keeps its O_APPEND descriptor. */
  private copytruncate(c: Container, now: number): void {
    const live = `${c.restart}.log`;
    const livePath = join(c.dir, live);
    // logrotate copies at any moment of the application's output: here right after a burst of lines,
    // which no reader can have read before the truncation (they are only in the copy then).
    this.writeBatch(c, COPYTRUNCATE_BURST_LINES, now);
    c.copies++;
    const copyName = `${live}.${c.copies}`;
    const copyPath = join(c.dir, copyName);
    copyFileSync(livePath, copyPath);
    const inc = c.current;
    this.onDisk.set(copyPath, inc);
    inc.names.push({ name: copyName, atMs: now });
    this.events.push({ atMs: now, kind: 'copy', path: copyPath, incarnation: inc.id });
    ftruncateSync(c.fd, 0);
    this.onDisk.delete(livePath);
    this.events.push({ atMs: now, kind: 'truncate', path: livePath, incarnation: inc.id });
    c.current = this.newIncarnation(c, live, now);
    const copies = readdirSync(c.dir)
      .filter((n) => /^\d+\.log\.\d+$/.test(n))
      .sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2]));
    while (copies.length > Math.max(this.options.maxFiles - 1, 1)) {
      const oldest = copies.shift();
      if (oldest !== undefined) this.removePath(join(c.dir, oldest), now, 'copy-pruned');
    }
    this.stats.copytruncates++;
  }
}

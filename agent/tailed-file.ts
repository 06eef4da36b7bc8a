/**
 * One log file being tailed: an open descriptor, a byte offset, and the line assembly state. It reads
 * in large chunks, splits physical lines, assembles entries (partial merge, multiline), builds records
 * and hands them to the producer grouped into Kafka messages. It knows the safe checkpoint offset:
 * nothing before it is unacknowledged or half-assembled.
 *
 * Lifecycle: `open` → (`identifying` until the head can be fingerprinted) → `active` → `draining`
 * (rotated away, deleted, or truncated: read to the end through the descriptor already held) →
 * `finished` (descriptor closed; waits for its last acknowledgements, then its checkpoint is dropped).
 */
import { close, fstat, open, read, constants as fsConstants, type Stats } from 'node:fs';
import { promisify } from 'node:util';
import type { Logger } from '../shared/logger.js';
import { RecordFlag, type KubernetesMetadata } from '../shared/record.js';
import { scanCriLineAt, type CriLayout } from './cri-parser.js';
import { fileEventIdPrefix } from './event-id.js';
import { identifyFile, type FileIdentity } from './file-identity.js';
import { GzipReader, isGzipPath } from './gzip-reader.js';
import { FileProgress } from './file-progress.js';
import type { AgentProducer } from './kafka-producer.js';
import { LineAssembler, type LogEntry, type LogFormat } from './line-assembler.js';
import type { MessageBuilder, MessageSink } from './message-builder.js';
import { MultilineJoiner, type MultilineOptions } from './multiline.js';
import type { MetadataLookup } from './pod-metadata.js';
import type { PodLogPath } from './pod-path.js';
import { RecordWriter } from './record-writer.js';

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);
const readAsync = promisify(read);
const closeAsync = promisify(close);

export type FilePhase = 'new' | 'identifying' | 'active' | 'draining' | 'finished';
/** Why a file is read to its end: renamed away, deleted, truncated in place, or a compressed rotated file. */
export type DrainReason = 'rotated' | 'deleted' | 'truncated' | 'compressed';

export interface TailSettings {
  cluster: string;
  node: string;
  format: LogFormat;
  maxLineBytes: number;
  /** Largest Kafka message value; records are grouped into messages up to this size. */
  maxMessageBytes: number;
  maxRecordsPerMessage: number;
  /** How long a file renamed away (rotated) keeps being read after its last new byte. */
  rotateWaitMs: number;
  /** How long the first chunk of a split line waits for its last one before it is shipped flagged `partial`. */
  partialTimeoutMs: number;
}

/** What a file needs from the rest of the agent. */
export interface TailEnvironment {
  settings: TailSettings;
  producer: AgentProducer;
  /** Where records are grouped into Kafka messages (one builder for all files). */
  messages: MessageBuilder;
  logger: Logger;
  lookupMetadata: (path: PodLogPath) => MetadataLookup;
  /** Whether the pod watcher is in sync with the API (tells a miss from a fallback). */
  metadataSynced: () => boolean;
  topicFor: (path: PodLogPath) => string;
  multilineFor: (path: PodLogPath) => MultilineOptions | undefined;
  counters: TailCounters;
}

/** Plain counters the metrics module reads; cheaper than touching prom-client per line. */
export interface TailCounters {
  linesRead: number;
  bytesRead: number;
  recordsProduced: number;
  recordsExcluded: number;
  recordsTruncatedToFit: number;
  /** Records enriched from the pod watcher. */
  metadataHits: number;
  /** Records of a pod the watcher does not know while it is in sync with the API: path-derived metadata. */
  metadataMisses: number;
  /** Records shipped with path-derived metadata because the API is unreachable (or enrichment is off). */
  metadataFallbacks: number;
  unparsed: number;
  truncated: number;
  invalidUtf8: number;
}

export function newTailCounters(): TailCounters {
  return {
    linesRead: 0,
    bytesRead: 0,
    recordsProduced: 0,
    recordsExcluded: 0,
    recordsTruncatedToFit: 0,
    metadataHits: 0,
    metadataMisses: 0,
    metadataFallbacks: 0,
    unparsed: 0,
    truncated: 0,
    invalidUtf8: 0,
  };
}

const NEWLINE = 10;

/** Per chunk: the file's metadata and record writer, for the hot path. */
interface FastPath {
  lookup: MetadataLookup;
  writer: RecordWriter;
  /** Whether the pod watcher is in sync (tells a metadata miss from a fallback). */
  synced: boolean;
}
/**
 * Bytes kept beyond maxLineBytes of a physical line that is cut while read: more than any CRI prefix
 * (time, stream, tag), so what remains of the message is still over the cap and gets flagged.
 */
const CARRY_PREFIX_ROOM_BYTES = 1024;

export class TailedFile {
  phase: FilePhase = 'new';
  fd: number | undefined;
  identity: FileIdentity | undefined;
  /** Device and inode of the file the descriptor holds (known from `open`, before the identity). */
  dev = 0;
  ino = 0;
  /** An identification is in flight. */
  private identifying = false;
  /** Next byte to read. */
  readOffset = 0;
  /** Offset just after the last complete physical line handed on (≤ readOffset). */
  consumedOffset = 0;
  /** Size of the file at the last look; with consumedOffset gives the bytes not yet read. */
  knownSize = 0;
  drainReason: DrainReason | undefined;
  /** Set when the file is read from a compressed copy (`.gz`): a forward-only stream instead of the descriptor. */
  private gzip: GzipReader | undefined;
  /** When a draining file saw new bytes last (ms), to apply rotateWaitMs. */
  lastGrowthMs = 0;
  readonly progress = new FileProgress();

  private carry: Buffer[] = [];
  private carryBytes = 0;
  /** Physical length of the carried line, including bytes dropped beyond maxLineBytes. */
  private carryLength = 0;
  private assembler: LineAssembler;
  private joiners: { stdout: MultilineJoiner; stderr: MultilineJoiner } | undefined;
  private writer: RecordWriter | undefined;
  private writerSource: KubernetesMetadata | undefined;
  private eventIdPrefix = '';
  /** Receives this file's finished messages from the shared builder. */
  private readonly messageSink: MessageSink = (value, minStart, release) => this.enqueueMessage(value, minStart, release);
  /** Scratch space for scanning CRI lines on the hot path. */
  private readonly layout: CriLayout = { timeEnd: 0, stream: 'stdout', partial: false, messageStart: 0 };
  private readonly assemblerTotals = { unparsed: 0, truncated: 0, invalidUtf8: 0 };

  /**
   * @param path the file's canonical path (`…/<n>.log`): what checkpoints and records name
   * @param openPath where to open it, when it differs (a rotated `<n>.log.<timestamp>` resumed after a restart)
   */
  constructor(
    readonly path: string,
    readonly pod: PodLogPath,
    private readonly env: TailEnvironment,
    private openPath: string = path,
  ) {
    this.assembler = new LineAssembler({ format: env.settings.format, maxLineBytes: env.settings.maxLineBytes });
    const multiline = env.multilineFor(pod);
    if (multiline) this.joiners = { stdout: new MultilineJoiner(multiline), stderr: new MultilineJoiner(multiline) };
  }

  /** Where the bytes are read from: the canonical path, or the rotated or compressed name it now has. */
  get source(): string {
    return this.openPath;
  }

  /**
   * Opens a file that left its path (`<n>.log.<timestamp>`, or `.gz` once compressed) as `identity`,
   * to be read from `offset` to its end: a checkpointed file found after a restart, a rotated file
   * nobody read yet, or a copytruncate's copy. Throws the fs error on failure.
   */
  async openRotated(identity: FileIdentity, offset: number): Promise<void> {
    await this.openSource();
    this.consumedOffset = offset;
    this.adopt(identity, offset);
    this.beginDrain(this.gzip ? 'compressed' : 'rotated');
  }

  private async openSource(): Promise<void> {
    if (isGzipPath(this.openPath)) {
      this.gzip = await GzipReader.open(this.openPath);
      this.fd = this.gzip.fd;
      this.knownSize = this.gzip.declaredBytes ?? 0;
    } else {
      await this.open();
    }
  }

  /**
   * copytruncate: the path's file was truncated, and `copyPath` holds a copy of what it held. Goes on
   * reading the copy from where this file was, as the same identity (same event ids), then finishes.
   */
  async switchTo(copyPath: string): Promise<void> {
    await this.closeDescriptor();
    this.openPath = copyPath;
    await this.openSource();
    if (this.knownSize < this.readOffset) this.knownSize = this.readOffset;
    this.beginDrain(this.gzip ? 'compressed' : 'rotated');
  }

  /** Takes `identity` and starts reading at `offset` (consumedOffset is the caller's to set). */
  private adopt(identity: FileIdentity, offset: number): void {
    this.identity = identity;
    this.eventIdPrefix = fileEventIdPrefix(this.env.settings.cluster, this.env.settings.node, this.path, identity.fingerprint);
    this.readOffset = offset;
    if (this.knownSize < offset) this.knownSize = offset;
  }

  /** Opens the descriptor (never following a symlink). Throws the fs error on failure. */
  async open(): Promise<Stats> {
    this.fd = await openAsync(this.openPath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    const stats = await fstatAsync(this.fd);
    if (!stats.isFile()) {
      await this.closeDescriptor();
      throw Object.assign(new Error(`${this.openPath} is not a regular file`), { code: 'ENOTREG' });
    }
    this.knownSize = stats.size;
    this.dev = stats.dev;
    this.ino = stats.ino;
    this.phase = 'identifying';
    return stats;
  }

  /**
   * Fingerprints the head. Until the file holds a first line (or enough bytes) it stays
   * `identifying`; then `resumeAt` gives the offset to start from (a checkpoint, 0, or the end).
   */
  async identify(resumeAt: (identity: FileIdentity, size: number) => number): Promise<boolean> {
    // One identification at a time: discovery and the poll can both try a new file, and a second
    // one finishing after reading began would set the offset back (lines read twice).
    if (this.fd === undefined || this.phase !== 'identifying' || this.identifying) return false;
    this.identifying = true;
    try {
      return await this.identifyOnce(resumeAt);
    } finally {
      this.identifying = false;
    }
  }

  private async identifyOnce(resumeAt: (identity: FileIdentity, size: number) => number): Promise<boolean> {
    if (this.fd === undefined) return false;
    const stats = await fstatAsync(this.fd);
    const identity = await identifyFile(this.fd, stats);
    if (!identity || this.phase !== 'identifying') return false;
    const offset = resumeAt(identity, stats.size);
    this.consumedOffset = offset;
    this.knownSize = stats.size;
    this.adopt(identity, offset);
    this.phase = 'active';
    return true;
  }

  /** Refreshes the known size through the descriptor; detects truncation (copytruncate). */
  async refreshSize(): Promise<{ size: number; previousSize: number; nlink: number; truncated: boolean } | undefined> {
    if (this.fd === undefined) return undefined;
    const previousSize = this.knownSize;
    if (this.gzip) return { size: previousSize, previousSize, nlink: this.gzip.nlink, truncated: false };
    const stats = await fstatAsync(this.fd);
    const grew = stats.size > previousSize;
    this.knownSize = stats.size;
    if (grew) this.lastGrowthMs = Date.now();
    return { size: stats.size, previousSize, nlink: stats.nlink, truncated: stats.size < this.readOffset };
  }

  /** Whether the bytes come from a compressed copy (`.gz`). */
  get compressed(): boolean {
    return this.gzip !== undefined;
  }

  /** A compressed copy whose decompression started (it holds stream buffers until it is finished). */
  get decompressing(): boolean {
    return this.gzip?.started === true;
  }

  /**
   * Whether a read would find bytes: the file is readable (identified, not finished) and was seen
   * larger than the read offset. A file still `identifying` has bytes but nothing to read yet.
   */
  get hasUnreadBytes(): boolean {
    if (this.fd === undefined || (this.phase !== 'active' && this.phase !== 'draining')) return false;
    return this.gzip ? !this.gzip.atEnd : this.knownSize > this.readOffset;
  }

  /** Bytes written to the file but not yet safely shipped (for the backlog metric). */
  get unshippedBytes(): number {
    return Math.max(0, this.knownSize - this.safeOffset());
  }

  /**
   * Reads one chunk into `buffer` at the current offset and ships what it completes. Returns the
   * number of bytes read (0 at end of file).
   */
  async readChunk(buffer: Buffer): Promise<number> {
    if (this.fd === undefined || (this.phase !== 'active' && this.phase !== 'draining')) return 0;
    const bytesRead = await this.readAt(buffer);
    if (bytesRead === 0) {
      // The end is here (the file shrank since its size was seen): nothing unread until it grows.
      if (this.knownSize > this.readOffset) this.knownSize = this.readOffset;
      return 0;
    }
    const start = this.readOffset;
    this.readOffset += bytesRead;
    if (this.readOffset > this.knownSize) this.knownSize = this.readOffset;
    this.env.counters.bytesRead += bytesRead;
    this.processBytes(buffer.subarray(0, bytesRead), start);
    return bytesRead;
  }

  /** The next bytes at readOffset: through the descriptor, or from the decompressed stream. */
  private async readAt(buffer: Buffer): Promise<number> {
    const gzip = this.gzip;
    if (gzip === undefined) return (await readAsync(this.fd as number, buffer, 0, buffer.length, this.readOffset)).bytesRead;
    if (gzip.position < this.readOffset && (await gzip.skipTo(this.readOffset)) < this.readOffset) return 0;
    const bytesRead = await gzip.read(buffer);
    if (gzip.atEnd) this.knownSize = this.readOffset + bytesRead;
    return bytesRead;
  }

  /**
   * Emits multi-line events that waited too long for their next line, and split lines whose last
   * chunk never came (flagged `partial`), so neither holds the checkpoint back for longer than that.
   */
  tick(now = Date.now()): void {
    const entries = this.assembler.flushStale(now - this.env.settings.partialTimeoutMs);
    if (this.joiners) entries.push(...this.joiners.stdout.flushExpired(), ...this.joiners.stderr.flushExpired());
    if (entries.length > 0) {
      this.ship(entries);
      this.flushMessage();
      this.syncAssemblerCounters();
    }
  }

  beginDrain(reason: DrainReason): void {
    if (this.phase === 'finished') return;
    this.phase = 'draining';
    this.drainReason = reason;
    this.lastGrowthMs = Date.now();
  }

  /** The file is back at its path (renamed back): read it as the live file again. */
  reactivate(): void {
    if (this.phase !== 'draining') return;
    this.phase = 'active';
    this.drainReason = undefined;
  }

  /** A draining file is done once read to the end and (if renamed away) quiet for rotateWaitMs. */
  drainComplete(now: number): boolean {
    if (this.phase !== 'draining' || this.hasUnreadBytes) return false;
    if (this.drainReason === 'rotated') return now - this.lastGrowthMs >= this.env.settings.rotateWaitMs;
    return true;
  }

  /**
   * No more bytes will come: ships what is still assembling (an unterminated last line included) and
   * closes the descriptor.
   */
  async finish(): Promise<void> {
    if (this.phase === 'finished') return;
    if (this.carryBytes > 0) {
      // A last line without its newline: ship it as it is.
      const line = Buffer.concat(this.carry, this.carryBytes);
      const start = this.consumedOffset;
      const end = start + this.carryLength;
      this.carry = [];
      this.carryBytes = 0;
      this.carryLength = 0;
      this.consumedOffset = end;
      this.env.counters.linesRead++;
      this.ship(this.assembler.push({ bytes: line, start, end }));
    }
    this.ship(this.assembler.flush());
    if (this.joiners) this.ship([...this.joiners.stdout.flush(), ...this.joiners.stderr.flush()]);
    this.flushMessage();
    this.syncAssemblerCounters();
    this.phase = 'finished';
    await this.closeDescriptor();
  }

  /** Closes without shipping anything more (shutdown): the checkpoint stays at the safe offset. */
  async abandon(): Promise<void> {
    this.phase = 'finished';
    await this.closeDescriptor();
  }

  /** Offset before which every byte is acknowledged; what a checkpoint may record. */
  safeOffset(): number {
    let pending = this.assembler.pendingStart();
    if (this.joiners) {
      for (const joiner of [this.joiners.stdout, this.joiners.stderr]) {
        const start = joiner.pendingStart();
        if (start !== undefined && (pending === undefined || start < pending)) pending = start;
      }
    }
    return this.progress.safeOffset(this.consumedOffset, pending);
  }

  /** Finished, with every message acknowledged: nothing more will ever happen to this file. */
  get settled(): boolean {
    return this.phase === 'finished' && this.progress.outstanding === 0;
  }

  private async closeDescriptor(): Promise<void> {
    const fd = this.fd;
    const gzip = this.gzip;
    this.fd = undefined;
    this.gzip = undefined;
    if (gzip !== undefined) await gzip.close();
    else if (fd !== undefined) await closeAsync(fd);
  }

  // ---- hot path ------------------------------------------------------------------------------

  private processBytes(chunk: Buffer, chunkStart: number): void {
    this.env.messages.begin(this.messageSink);
    let fast = this.fastPath();
    let lineStartInChunk = 0;
    let lines = 0;
    let fastRecords = 0;
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, lineStartInChunk);
      if (newline < 0) break;
      const end = chunkStart + newline + 1;
      if (this.carryBytes > 0 || this.carryLength > 0) {
        this.appendCarry(chunk.subarray(lineStartInChunk, newline));
        const bytes = Buffer.concat(this.carry, this.carryBytes);
        const start = this.consumedOffset;
        this.carry = [];
        this.carryBytes = 0;
        this.carryLength = 0;
        this.consumedOffset = end;
        this.ship(this.assembler.push({ bytes, start, end }));
      } else {
        const start = chunkStart + lineStartInChunk;
        this.consumedOffset = end;
        if (fast !== undefined && this.shipFast(fast, chunk, lineStartInChunk, newline, start)) fastRecords++;
        else {
          this.ship(this.assembler.push({ bytes: chunk.subarray(lineStartInChunk, newline), start, end }));
          // The first line of a file decides its format (`auto`): the hot path may apply from the next one.
          fast ??= this.fastPath();
        }
      }
      lines++;
      lineStartInChunk = newline + 1;
    }
    if (lineStartInChunk < chunk.length) this.appendCarry(chunk.subarray(lineStartInChunk));
    const counters = this.env.counters;
    counters.linesRead += lines;
    if (fast !== undefined && fastRecords > 0) {
      counters.recordsProduced += fastRecords;
      if (fast.lookup.kind === 'hit') counters.metadataHits += fastRecords;
      else if (fast.synced) counters.metadataMisses += fastRecords;
      else counters.metadataFallbacks += fastRecords;
    }
    this.flushMessage();
    this.syncAssemblerCounters();
  }

  /**
   * What the hot path needs for this chunk, or undefined when every line must take the general path:
   * a format other than CRI (or not known yet), multiline joining, or an excluded pod.
   */
  private fastPath(): FastPath | undefined {
    if (this.assembler.format !== 'cri' || this.joiners) return undefined;
    const lookup = this.env.lookupMetadata(this.pod);
    if (lookup.kind === 'hit' && lookup.excluded) return undefined;
    return { lookup, writer: this.writerFor(lookup), synced: lookup.kind === 'hit' || this.env.metadataSynced() };
  }

  /**
   * The hot path: a whole CRI line (nothing pending on its stream) with a message that needs no
   * cutting or repair goes from the read buffer straight into the open Kafka message. Returns false,
   * having written nothing, when the line must take the general path (assembler, entry, string).
   */
  private shipFast(fast: FastPath, chunk: Buffer, lineStart: number, lineEnd: number, start: number): boolean {
    const layout = this.layout;
    if (!scanCriLineAt(chunk, lineStart, lineEnd, layout) || layout.partial || this.assembler.hasPending(layout.stream)) return false;
    const messageBytes = lineEnd - layout.messageStart;
    if (messageBytes > this.env.settings.maxLineBytes) return false;
    const maxBytes = fast.writer.maxCriRecordBytes(layout.timeEnd - lineStart, messageBytes);
    if (maxBytes < 0) return false;
    const messages = this.env.messages;
    const out = messages.reserve(maxBytes);
    const recordEnd = fast.writer.writeCriLine(chunk, lineStart, layout.timeEnd, layout.stream, layout.messageStart, lineEnd, start, out, messages.position);
    if (recordEnd < 0) return false;
    messages.commit(recordEnd, start);
    return true;
  }

  /**
   * Keeps the bytes of an unfinished physical line, at most maxLineBytes + CARRY_PREFIX_ROOM_BYTES of
   * them (the rest is counted, not kept). The room covers the CRI prefix, so a cut line still holds a
   * message longer than maxLineBytes and the assembler flags and counts it as truncated.
   */
  private appendCarry(bytes: Buffer): void {
    this.carryLength += bytes.length;
    const room = this.env.settings.maxLineBytes + CARRY_PREFIX_ROOM_BYTES - this.carryBytes;
    if (room <= 0) return;
    const kept = bytes.length <= room ? bytes : bytes.subarray(0, room);
    this.carry.push(Buffer.from(kept));
    this.carryBytes += kept.length;
  }

  private ship(entries: LogEntry[]): void {
    if (entries.length === 0) return;
    let output = entries;
    if (this.joiners) {
      output = [];
      for (const entry of entries) output.push(...this.joiners[entry.stream].push(entry));
      if (output.length === 0) return;
    }
    const lookup = this.env.lookupMetadata(this.pod);
    if (lookup.kind === 'hit' && lookup.excluded) {
      this.env.counters.recordsExcluded += output.length;
      return;
    }
    const writer = this.writerFor(lookup);
    if (lookup.kind === 'hit') this.env.counters.metadataHits += output.length;
    else if (this.env.metadataSynced()) this.env.counters.metadataMisses += output.length;
    else this.env.counters.metadataFallbacks += output.length;
    const messages = this.env.messages;
    messages.begin(this.messageSink);
    for (const entry of output) {
      const record = writer.build(entry);
      if (record.truncated) this.env.counters.recordsTruncatedToFit++;
      messages.append(record.json, record.bytes, entry.start);
    }
    this.env.counters.recordsProduced += output.length;
  }

  private writerFor(lookup: MetadataLookup): RecordWriter {
    if (this.writer && this.writerSource === lookup.metadata) return this.writer;
    const flags = lookup.kind === 'fallback' ? [RecordFlag.METADATA_FALLBACK] : [];
    this.writer = new RecordWriter(lookup.metadata, this.path, this.eventIdPrefix, this.env.settings.maxMessageBytes - 1, flags);
    this.writerSource = lookup.metadata;
    return this.writer;
  }

  /** Hands this file's open message, if any, to the producer. */
  private flushMessage(): void {
    this.env.messages.begin(this.messageSink);
    this.env.messages.flush();
  }

  /** A finished message of this file's records: its lines count as shipped once Kafka acks it. */
  private enqueueMessage(value: Buffer, minStart: number, release: () => void): void {
    const progress = this.progress;
    progress.add(minStart);
    this.env.producer.enqueue({
      topic: this.env.topicFor(this.pod),
      key: this.pod.podUid,
      value,
      size: value.length,
      onAck: () => {
        progress.ack(minStart);
        release();
      },
    });
  }

  private syncAssemblerCounters(): void {
    const c = this.assembler.counters;
    const t = this.assemblerTotals;
    this.env.counters.unparsed += c.unparsed - t.unparsed;
    this.env.counters.truncated += c.truncated - t.truncated;
    this.env.counters.invalidUtf8 += c.invalidUtf8 - t.invalidUtf8;
    t.unparsed = c.unparsed;
    t.truncated = c.truncated;
    t.invalidUtf8 = c.invalidUtf8;
  }
}

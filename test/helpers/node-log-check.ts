/**
 * Checks what reached Kafka against a NodeLogWriter's ledger: each record on arrival (its line id,
 * message byte for byte, stream), then which lines are missing and whether each missing line could
 * have been read at all, given when the agent was up and when the kubelet deleted its file.
 */
import { basename, dirname } from 'node:path';
import type { ReceivedRecord } from './agent.js';
import type { Incarnation, NodeLogWriter, WrittenLine } from './node-log-writer.js';

interface Arrival {
  count: number;
  eventId: string;
  /** A later copy carried another event_id. */
  eventIdChanged: boolean;
}

/** What arrived, line by line. */
export class LineTally {
  readonly arrivals = new Map<string, Arrival>();
  records = 0;
  /** Records whose first word is no written line's id (a piece of a line, or something else). */
  unknown = 0;
  readonly unknownExamples: string[] = [];
  /** Records of a known line whose message or stream differs from what was written. */
  mismatched = 0;
  readonly mismatchExamples: string[] = [];

  constructor(private readonly writer: NodeLogWriter) {}

  readonly onRecord = ({ record }: ReceivedRecord): void => {
    this.records++;
    const message = record.message;
    const space = message.indexOf(' ');
    const id = space < 0 ? message : message.slice(0, space);
    const line = this.writer.byId.get(id);
    if (!line) {
      this.unknown++;
      if (this.unknownExamples.length < 5) this.unknownExamples.push(`${message.slice(0, 60)}… (${Buffer.byteLength(message)} bytes, flags ${JSON.stringify(record.log.flags ?? [])})`);
      return;
    }
    const expected = this.writer.expectedMessage(line);
    if (message !== expected || record.stream !== line.stream) {
      this.mismatched++;
      if (this.mismatchExamples.length < 5) {
        const at = firstDifference(message, expected);
        this.mismatchExamples.push(
          `${id} (${line.long ? 'long' : 'short'}, ${line.stream}): got ${Buffer.byteLength(message)} bytes on ${record.stream}, want ${Buffer.byteLength(expected)}; first difference at char ${at}: ${JSON.stringify(message.slice(at, at + 12))} vs ${JSON.stringify(expected.slice(at, at + 12))}; flags ${JSON.stringify(record.log.flags ?? [])}`,
        );
      }
      return;
    }
    const seen = this.arrivals.get(id);
    if (seen) {
      seen.count++;
      if (seen.eventId !== record.event_id) seen.eventIdChanged = true;
    } else {
      this.arrivals.set(id, { count: 1, eventId: record.event_id, eventIdChanged: false });
    }
  };

  missing(lines: readonly WrittenLine[] = this.writer.lines): WrittenLine[] {
    return lines.filter((l) => !this.arrivals.has(l.id));
  }

  duplicates(): number {
    let extra = 0;
    for (const a of this.arrivals.values()) extra += a.count - 1;
    return extra;
  }

  eventIdChanges(): string[] {
    return [...this.arrivals].filter(([, a]) => a.eventIdChanged).map(([id]) => id);
  }
}

function firstDifference(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** Lines that arrived more than once, grouped by the file incarnation that held them. */
export function describeDuplicates(writer: NodeLogWriter, tally: LineTally, limit = 12): string {
  const duplicated = [...tally.arrivals].filter(([, a]) => a.count > 1).flatMap(([id]) => {
    const line = writer.byId.get(id);
    return line ? [line] : [];
  });
  return describeMissing(writer, duplicated, limit);
}

/** Missing lines grouped by the file incarnation that held them: what a failure message shows. */
export function describeMissing(writer: NodeLogWriter, missing: readonly WrittenLine[], limit = 12): string {
  const byIncarnation = new Map<number, WrittenLine[]>();
  for (const line of missing) {
    const group = byIncarnation.get(line.incarnation) ?? [];
    group.push(line);
    byIncarnation.set(line.incarnation, group);
  }
  const rows = [...byIncarnation].sort((a, b) => b[1].length - a[1].length);
  return rows
    .slice(0, limit)
    .map(([id, group]) => {
      const inc = writer.incarnations[id] as Incarnation;
      const first = group[0] as WrittenLine;
      const pod = basename(dirname(inc.dir));
      return `${group.length} lines of ${pod}/${inc.names.map((n) => n.name).join(' → ')} (bytes ${first.start}.. of ${inc.sizeBytes}; ${inc.deletedAtMs === undefined ? 'still on disk' : `deleted (${inc.deletedBecause})`}; e.g. ${first.id})`;
    })
    .concat(rows.length > limit ? [`… and ${rows.length - limit} more files`] : [])
    .join('\n');
}

/** One agent process in a kill test: when it was started, answered on its ops port, and was killed. */
export interface AgentRun {
  spawnedAtMs: number;
  readyAtMs: number;
  killedAtMs?: number;
  /** The agent's output (JSON log lines). */
  logs: string;
}

/** A loss the agent logged: `msg: "lost bytes"` with the file and the byte range. */
export interface LossReport {
  atMs: number;
  path: string;
  reason: string;
  fromOffset: number;
  toOffset?: number;
}

export function lossReports(runs: readonly AgentRun[]): LossReport[] {
  const reports: LossReport[] = [];
  for (const run of runs) {
    for (const text of run.logs.split('\n')) {
      if (!text.startsWith('{') || !text.includes('lost bytes')) continue;
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (entry.msg !== 'lost bytes') continue;
      reports.push({
        atMs: typeof entry.time === 'string' ? Date.parse(entry.time) : typeof entry.time === 'number' ? entry.time : run.spawnedAtMs,
        path: String(entry.path),
        reason: String(entry.reason),
        fromOffset: Number(entry.fromOffset),
        ...(typeof entry.toOffset === 'number' ? { toOffset: entry.toOffset } : {}),
      });
    }
  }
  return reports;
}

export interface KillRunVerdict {
  /** Missing lines that were on disk, in some form, when an agent started, or at the end: losses nothing excuses. */
  lostWhileOnDisk: WrittenLine[];
  /** Missing lines on disk at no restart, in a file deleted while an agent was up and no kill came between: nothing excuses them either. */
  lostWhileUp: WrittenLine[];
  /** Missing lines of a file deleted while no agent could read it, that some agent had seen: each must lie in a reported range. */
  lostSeenUnreported: WrittenLine[];
  lostSeenReported: WrittenLine[];
  /** Missing lines of files that were created and deleted while every agent was down: nobody could know them. */
  lostNeverSeen: WrittenLine[];
  /** Reports naming no file the kubelet had deleted by then. */
  falseReports: LossReport[];
}

/**
 * Decides, for every missing line, whether its loss is excused, and whether the agent reported it.
 *
 * A line L in file incarnation I (deleted at d, or never) that was on disk when an agent was started
 * (written before, I not deleted yet), or at the end, must have arrived: the writer stands still from
 * each start until that agent shipped everything on disk (or stalled), so nothing excuses it.
 *
 * Otherwise L may be missing only if some agent was killed after L was written and I was gone before
 * the next agent was up (`readyAtMs + graceMs`): deleted while every agent was down, or while one held
 * it open and was killed before reading L.
 *
 * Of the excused ones, if an agent was up for `seenMs` or more while I existed, that agent tracked I
 * and checkpointed it, so the agent that found it gone must have logged a loss for it: a report in the
 * same container folder, naming one of I's names (`.gz` or not), from an offset at or below L's first
 * byte (L was never acknowledged, so no checkpoint passed it). The report's end may lie before L: the
 * agent cannot know how far a file grew after it was killed.
 */
export function judgeKillRun(writer: NodeLogWriter, tally: LineTally, runs: readonly AgentRun[], reports: readonly LossReport[], options: { graceMs: number; seenMs: number }): KillRunVerdict {
  const verdict: KillRunVerdict = { lostWhileOnDisk: [], lostWhileUp: [], lostSeenUnreported: [], lostSeenReported: [], lostNeverSeen: [], falseReports: [] };
  const killed = runs.filter((r): r is AgentRun & { killedAtMs: number } => r.killedAtMs !== undefined);
  const nextReady = (killedAtMs: number): number => runs.find((r) => r.spawnedAtMs >= killedAtMs)?.readyAtMs ?? Number.POSITIVE_INFINITY;
  const seen = (inc: Incarnation): boolean =>
    runs.some((r) => {
      const from = Math.max(inc.createdAtMs, r.readyAtMs);
      const to = Math.min(inc.deletedAtMs ?? Number.POSITIVE_INFINITY, r.killedAtMs ?? Number.POSITIVE_INFINITY);
      return to - from >= options.seenMs;
    });
  const namesOf = (inc: Incarnation): Set<string> => new Set(inc.names.map((n) => n.name));
  for (const line of tally.missing()) {
    const inc = writer.incarnations[line.incarnation] as Incarnation;
    const deletedAt = inc.deletedAtMs;
    const onDiskAtAStart = deletedAt === undefined || runs.some((r) => line.writtenAtMs <= r.spawnedAtMs && deletedAt > r.spawnedAtMs);
    if (onDiskAtAStart) {
      verdict.lostWhileOnDisk.push(line);
      continue;
    }
    // Lost to an outage: written before an agent was killed, or while none was up, and deleted before the next one was up.
    const excused = killed.some((r) => {
      const back = nextReady(r.killedAtMs);
      return (line.writtenAtMs < r.killedAtMs || (deletedAt >= r.killedAtMs && line.writtenAtMs < back)) && deletedAt < back + options.graceMs;
    });
    if (!excused) {
      verdict.lostWhileUp.push(line);
      continue;
    }
    if (!seen(inc)) {
      verdict.lostNeverSeen.push(line);
      continue;
    }
    const names = namesOf(inc);
    const reported = reports.some((r) => dirname(r.path) === inc.dir && names.has(basename(r.path)) && r.fromOffset <= line.start && r.atMs >= deletedAt - options.graceMs);
    (reported ? verdict.lostSeenReported : verdict.lostSeenUnreported).push(line);
  }
  for (const report of reports) {
    const name = basename(report.path);
    const matches = writer.incarnations.some((inc) => dirname(report.path) === inc.dir && namesOf(inc).has(name) && inc.deletedAtMs !== undefined && inc.deletedAtMs <= report.atMs + options.graceMs);
    if (!matches) verdict.falseReports.push(report);
  }
  return verdict;
}

/**
 * Waits until `done()` holds, or until `progress()` (records received) has not moved for `stallMs`
 * (nothing more is coming: the assertions then say what is missing), at most `timeoutMs`. Returns
 * whether `done()` held.
 */
export async function waitUntilDoneOrStalled(done: () => boolean, progress: () => number, options: { stallMs: number; timeoutMs: number; intervalMs?: number }): Promise<boolean> {
  const deadline = Date.now() + options.timeoutMs;
  let last = progress();
  let movedAt = Date.now();
  for (;;) {
    if (done()) return true;
    const now = Date.now();
    const current = progress();
    if (current !== last) {
      last = current;
      movedAt = now;
    }
    if (now - movedAt > options.stallMs || now > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 500));
  }
}

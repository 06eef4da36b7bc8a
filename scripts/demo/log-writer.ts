/**
 * The node's log files: the demo's lines written as CRI lines into a `/var/log/pods`-style folder
 * while the agent runs, in rounds, with long lines split into `P` chunks (another stream's line
 * sometimes between them) and one kubelet rename rotation (scripts/pod-log-writer.ts does the bytes).
 */
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../../shared/errors.js';
import { appendChunks, containerLogDir, criChunks, criTime, rotateLog, type CriStream } from '../pod-log-writer.js';
import type { CreatedContainer } from './kube-objects.js';
import { poll } from './poll.js';
import type { LineContext, Random } from './workload.js';

/** The logs are written in this many rounds, ROUND_INTERVAL_MS apart, while the agent runs. */
export const ROUNDS = 8;
const ROUND_INTERVAL_MS = 250;
/** The rotating container's file is renamed during this round, after part of the round is written. */
const ROTATE_ROUND = 4;
/** Lines' own timestamps spread over the last this-many minutes, so S3 gets several hour partitions. */
const TIME_SPAN_MINUTES = 150;

interface LogEvent {
  time: string;
  stream: CriStream;
  message: string;
}

interface ContainerLog {
  container: CreatedContainer;
  file: string;
  events: LogEvent[];
}

export interface WriteStats {
  lines: number;
  physicalLines: number;
  partialChains: number;
  interleaved: number;
  stderr: number;
  /** `<pod>/<container>/0.log → 0.log.<time>`, once the rotation happened. */
  rotation?: string;
  /** Every message written, for the check that what landed is what was written. */
  messages: Set<string>;
  /** stderr lines per app label, for the example query's expected count. */
  stderrByApp: Map<string, number>;
}

export function planLogs(containers: CreatedContainer[], root: string, rnd: Random): ContainerLog[] {
  const endMs = Date.now() - 60_000;
  const startMs = endMs - TIME_SPAN_MINUTES * 60_000;
  return containers.map((container) => {
    const { plan } = container;
    const events: LogEvent[] = [];
    let forceStderr = false;
    for (let i = 0; i < plan.lines; i++) {
      const timeMs = startMs + Math.floor(((endMs - startMs) * i) / plan.lines);
      const c: LineContext = { id: `${plan.name}-${String(i).padStart(5, '0')}`, time: new Date(timeMs), rnd };
      const time = criTime(timeMs, Math.floor(rnd() * 1_000_000));
      const long: boolean = plan.long !== undefined && !forceStderr && rnd() < plan.longShare;
      const stream: CriStream = !long && (forceStderr || rnd() < plan.stderrShare) ? 'stderr' : 'stdout';
      const message = long && plan.long ? plan.long(c) : stream === 'stderr' ? plan.stderr(c) : plan.stdout(c);
      events.push({ time, stream, message });
      // Half of the long lines are followed by a stderr line, which the writer puts between their chunks.
      forceStderr = long && rnd() < 0.5;
    }
    const dir = containerLogDir(root, { namespace: container.namespace, pod: container.podName, uid: container.uid, container: plan.name });
    return { container, file: join(dir, '0.log'), events };
  });
}

/**
 * The physical CRI lines of some events, as a runtime interleaves them: when a long line (several
 * chunks) is followed by a line on the other stream, that line lands between the first chunks.
 */
function physicalLines(events: readonly LogEvent[], stats: WriteStats): Buffer[] {
  const lines: Buffer[] = [];
  for (let i = 0; i < events.length; i++) {
    const event = events[i] as LogEvent;
    const chunks = criChunks(event.time, event.stream, event.message);
    const next = events[i + 1];
    if (chunks.length > 1) stats.partialChains++;
    if (chunks.length > 1 && next !== undefined && next.stream !== event.stream) {
      const nextChunks = criChunks(next.time, next.stream, next.message);
      if (nextChunks.length === 1) {
        lines.push(chunks[0] as Buffer, ...nextChunks, ...chunks.slice(1));
        stats.interleaved++;
        i++;
        continue;
      }
    }
    lines.push(...chunks);
  }
  return lines;
}

/**
 * Appends every container's events in ROUNDS rounds. In ROTATE_ROUND, once the agent shipped lines of
 * the rotating container (it holds the file open), that file is rotated the kubelet's way: part of
 * the round, rename to `0.log.<time>`, the rest still written to the renamed file (the runtime has not
 * reopened yet), and the following rounds go to a fresh `0.log`.
 */
export async function writeLogs(logs: ContainerLog[], stats: WriteStats, agent: { shipped: (podUid: string) => boolean; diagnose: () => Promise<string> }, signal: AbortSignal): Promise<void> {
  const write = (file: string, events: readonly LogEvent[]): void => {
    const lines = physicalLines(events, stats);
    appendChunks(file, lines);
    stats.physicalLines += lines.length;
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const log of logs) {
      const from = Math.floor((log.events.length * round) / ROUNDS);
      const to = Math.floor((log.events.length * (round + 1)) / ROUNDS);
      const events = log.events.slice(from, to);
      if (round === ROTATE_ROUND && log.container.plan.rotates === true) {
        try {
          await poll(`the agent shipping lines of ${log.container.podName}`, () => Promise.resolve(agent.shipped(log.container.uid)), 60_000, 100, signal);
        } catch (error) {
          if (signal.aborted) throw error;
          throw new Error(`${describeError(error)}; ${await agent.diagnose()}`, { cause: error });
        }
        const split = Math.floor(events.length * 0.75);
        write(log.file, events.slice(0, split));
        const rotated = rotateLog(log.file);
        write(rotated, events.slice(split));
        stats.rotation = `${log.container.podName}/${log.container.plan.name}/0.log → ${basename(rotated)}`;
      } else {
        write(log.file, events);
      }
      for (const event of events) {
        stats.lines++;
        stats.messages.add(event.message);
        if (event.stream === 'stderr') {
          stats.stderr++;
          const app = log.container.pod.labels.app ?? '';
          stats.stderrByApp.set(app, (stats.stderrByApp.get(app) ?? 0) + 1);
        }
      }
    }
    await sleep(ROUND_INTERVAL_MS, undefined, { signal });
  }
}

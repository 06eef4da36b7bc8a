/**
 * `npm run bench:aggregator-recovery`: how long a consumer group of aggregators takes to get back to
 * steady state after one member is killed with `kill -9` (an OOM kill), against the real Kafka and S3
 * server, for each tried pair of session timeout and heartbeat interval.
 *
 * Two members (S3 sink only) consume a 6-partition topic fed at a steady BENCH_RATE records/s
 * (default 2,000). Once every partition commits, one member is killed; the clock stops when every
 * partition has committed past the end offsets it had at the kill (the survivor took the dead member's
 * partitions over and caught up). The killed member is not restarted: a restarted pod joins with a new
 * member id (kafkajs has no static membership) and waits the same session timeout for the old one.
 *
 * Environment: BENCH_SESSIONS (`30000:3000,10000:1000` = sessionTimeoutMs:heartbeatIntervalMs pairs),
 * BENCH_RATE, BENCH_KILLS (kills per pair, 2). The last output line is one JSON object, also written to
 * bench/results/aggregator-recovery.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from '../scripts/stack/context.js';
import {
  aggregatorConfigFile,
  committedOffsets,
  deleteS3Prefix,
  logRecord,
  RecordProducer,
  startAggregatorProcess,
  testS3Client,
  topicEndOffsets,
} from '../test/helpers/aggregator.js';
import type { LogshipProcess } from '../test/helpers/process.js';
import { uniqueName } from '../test/helpers/stack.js';

const SESSIONS = (process.env.BENCH_SESSIONS ?? '30000:3000,10000:1000').split(',').map((pair) => pair.split(':').map(Number) as [number, number]);
const RATE = Number(process.env.BENCH_RATE ?? 2_000);
const KILLS = Number(process.env.BENCH_KILLS ?? 2);
const PARTITIONS = 6;
const TICK_MS = 100;
const WAIT_LIMIT_MS = 180_000;

function log(message: string): void {
  process.stderr.write(`[recovery] ${message}\n`);
}

/** Resolves once every partition's committed offset is at least the given one; returns the seconds it took. */
async function caughtUp(groupId: string, topic: string, target: ReadonlyMap<string, number>, startedMs: number): Promise<number> {
  for (;;) {
    const committed = await committedOffsets(groupId, [topic]);
    if ([...target].every(([key, end]) => (committed.get(key) ?? -1) >= end)) return (performance.now() - startedMs) / 1000;
    if (performance.now() - startedMs > WAIT_LIMIT_MS) throw new Error(`no recovery within ${String(WAIT_LIMIT_MS / 1000)} s`);
    await sleep(200);
  }
}

async function main(): Promise<void> {
  const producer = new RecordProducer();
  await producer.connect();
  const s3 = testS3Client();
  const results: Record<string, unknown>[] = [];
  let n = 0;
  const feeding = { on: true };
  const name = uniqueName('recovery');
  const topics: string[] = [];
  try {
    for (const [sessionTimeoutMs, heartbeatIntervalMs] of SESSIONS) {
      const topic = `${name}.s${String(sessionTimeoutMs)}`;
      topics.push(topic);
      await producer.createTopics([{ topic, partitions: PARTITIONS }]);
      feeding.on = true;
      // A steady feed, ten sends a second, keyed by pod as the agent does.
      const feed = (async () => {
        while (feeding.on) {
          const batch = Array.from({ length: Math.max(1, Math.round((RATE * TICK_MS) / 1000)) }, () => logRecord(n++, 'ns-rec', Date.now(), { pod: `pod-${String(n % 24)}` }));
          await producer.send(topic, batch, 1);
          await sleep(TICK_MS);
        }
      })();
      const groupId = `${topic}-group`;
      const config = (): string =>
        aggregatorConfigFile({
          groupId,
          topics: [topic],
          s3Prefix: `${name}/${String(sessionTimeoutMs)}`,
          deadLetterTopic: `${name}-deadletter`,
          extra: {},
        });
      const start = (): LogshipProcess =>
        startAggregatorProcess(config(), {
          LOGSHIP_KAFKA__SESSION_TIMEOUT_MS: String(sessionTimeoutMs),
          LOGSHIP_KAFKA__HEARTBEAT_INTERVAL_MS: String(heartbeatIntervalMs),
          LOGSHIP_KAFKA__REBALANCE_TIMEOUT_MS: String(Math.max(sessionTimeoutMs, 20_000)),
        });
      const members = [start(), start()];
      await Promise.all(members.map((m) => m.opsUrl));
      const recoveries: number[] = [];
      for (let kill = 0; kill < KILLS; kill++) {
        // Steady state first: every partition committed past where it was a moment ago.
        await caughtUp(groupId, topic, await topicEndOffsets([topic]), performance.now());
        const victim = members.shift();
        if (victim === undefined) break;
        const ends = await topicEndOffsets([topic]);
        const killedAt = performance.now();
        await victim.kill9();
        const seconds = await caughtUp(groupId, topic, ends, killedAt);
        recoveries.push(Math.round(seconds * 10) / 10);
        log(`session ${String(sessionTimeoutMs)} ms, heartbeat ${String(heartbeatIntervalMs)} ms: kill ${String(kill + 1)} recovered in ${seconds.toFixed(1)} s`);
        // A replacement joins (as a restarted pod would) before the next kill.
        const replacement = start();
        await replacement.opsUrl;
        members.push(replacement);
      }
      feeding.on = false;
      await feed;
      await Promise.all(members.map((m) => m.stop()));
      results.push({ session_timeout_ms: sessionTimeoutMs, heartbeat_interval_ms: heartbeatIntervalMs, recovery_seconds: recoveries });
    }
  } finally {
    feeding.on = false;
    await producer.deleteTopics([...topics, `${name}-deadletter`]).catch(() => undefined);
    await producer.close();
    await deleteS3Prefix(s3, name).catch(() => undefined);
    s3.destroy();
  }
  const result = { rate_records_per_sec: RATE, partitions: PARTITIONS, members: 2, runs: results };
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'aggregator-recovery.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});

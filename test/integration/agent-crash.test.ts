import assert from 'node:assert/strict';
import { mkdtempSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { agentConfigFile, appendLines, cri, makeRoot, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const FILES = 4;
const LINES_PER_FILE = 50_000;
const CHUNK = 125;
const KILLS = 5;

describe('agent: kill -9 during a 200,000-line run (real Kafka)', () => {
  const topicPrefix = uniqueName('it-agent-crash');
  const topic = `${topicPrefix}.ns-crash`;
  const collector = new RecordCollector();
  let agent: AgentProcess | undefined;

  before(() => collector.start([topic]));
  after(async () => {
    await agent?.kill9();
    await collector.stop([topic]);
  });

  it('delivers every line at least once; the only duplicates are replays with their original event_id', async (t) => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const config = agentConfigFile({ root, stateDir, topicPrefix, extra: { checkpoints: { dir: stateDir, intervalMs: 100 } } });
    const files = Array.from({ length: FILES }, (_, i) => join(podDir(root, 'ns-crash', `pod-${i}`, `0000000${i}-aaaa-4aaa-8aaa-aaaaaaaaaaaa`, 'app').dir, '0.log'));

    // The writer: all files in turn, a chunk at a time, with one rename rotation half-way.
    let written = 0;
    const writer = (async () => {
      for (let from = 0; from < LINES_PER_FILE; from += CHUNK) {
        for (const [i, file] of files.entries()) {
          if (i === 0 && from === LINES_PER_FILE / 2) {
            renameSync(file, `${file}.20261122-041719`);
          }
          appendLines(file, Array.from({ length: CHUNK }, (_, n) => cri(`f${i}-${from + n}`)));
          written += CHUNK;
        }
        await sleep(40);
      }
    })();

    let kills = 0;
    agent = startAgentProcess(config);
    while (kills < KILLS) {
      await agent.opsUrl;
      // Let it ship for a random moment, then kill it without warning and start it again.
      await sleep(700 + Math.floor(Math.random() * 1500));
      await agent.kill9();
      kills++;
      t.diagnostic(`kill ${kills} after ${written} lines written, ${collector.records.length} records received`);
      agent = startAgentProcess(config);
    }
    await writer;
    const total = FILES * LINES_PER_FILE;
    await waitFor(
      `all ${total} distinct lines in Kafka`,
      () => new Set(collector.records.map((r) => r.record.message)).size >= total,
      120_000,
      500,
    ).catch((error: unknown) => {
      const seen = new Set(collector.records.map((r) => r.record.message));
      for (let i = 0; i < FILES; i++) {
        const gaps: number[] = [];
        for (let n = 0; n < LINES_PER_FILE; n++) if (!seen.has(`f${i}-${n}`)) gaps.push(n);
        t.diagnostic(`file ${i}: ${gaps.length} missing, first ${gaps.slice(0, 5).join(',')} last ${gaps.slice(-3).join(',')}`);
      }
      t.diagnostic(agent?.logs().split('\n').filter((l) => /warn|error/i.test(l)).slice(-10).join('\n') ?? '');
      throw error;
    });
    // The last agent may still be starting (everything already arrived): stop it once it is up.
    await agent.opsUrl;
    assert.equal(await agent.stop(), 0, 'the last agent stops cleanly on SIGTERM');

    const idsByMessage = new Map<string, Set<string>>();
    for (const { record } of collector.records) {
      let ids = idsByMessage.get(record.message);
      if (!ids) {
        ids = new Set();
        idsByMessage.set(record.message, ids);
      }
      ids.add(record.event_id);
    }
    const expected = files.flatMap((_, i) => Array.from({ length: LINES_PER_FILE }, (_, n) => `f${i}-${n}`));
    const missing = expected.filter((m) => !idsByMessage.has(m));
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} lines missing`);
    assert.equal(idsByMessage.size, total, 'nothing but the written lines arrived');
    const inconsistent = [...idsByMessage].filter(([, ids]) => ids.size !== 1);
    assert.deepEqual(inconsistent.slice(0, 5), [], 'a duplicate must carry its original event_id');
    const duplicates = collector.records.length - total;
    t.diagnostic(`${kills} kills; ${collector.records.length} records for ${total} lines: ${duplicates} replayed duplicates (same event_id)`);
  });
});

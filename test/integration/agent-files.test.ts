import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, truncateSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { agentConfigFile, appendLines, cri, makeRoot, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const UID_A = '11111111-1111-4111-8111-111111111111';
const UID_B = '22222222-2222-4222-8222-222222222222';
const UID_C = '33333333-3333-4333-8333-333333333333';

/** Messages of one source, in order: `<tag>-<n>`. */
function lines(tag: string, from: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${tag}-${from + i}`);
}

describe('agent: rotation, copytruncate, deletion and partial lines (real Kafka)', () => {
  const topicPrefix = uniqueName('it-agent-files');
  const topics = [`${topicPrefix}.ns-rotate`, `${topicPrefix}.ns-truncate`, `${topicPrefix}.ns-delete`];
  const collector = new RecordCollector();
  const root = makeRoot();
  let agent: AgentProcess;

  before(async () => {
    await collector.start(topics);
  });
  after(async () => {
    await agent.stop();
    await collector.stop(topics);
  });

  it('ships every line exactly once across rename rotation, copytruncate and a file deleted mid-read', async () => {
    const rotate = podDir(root, 'ns-rotate', 'web-1', UID_A, 'app');
    const truncate = podDir(root, 'ns-truncate', 'batch-1', UID_B, 'worker');
    const remove = podDir(root, 'ns-delete', 'job-1', UID_C, 'main');
    const rotateFile = join(rotate.dir, '0.log');
    const truncateFile = join(truncate.dir, '0.log');
    const removeFile = join(remove.dir, '0.log');
    const expected: string[] = [];

    // Before the agent starts: plain lines, and one long line split by the runtime into P chunks
    // with a stderr line in between.
    appendLines(rotateFile, lines('rot', 0, 500).map((m) => cri(m)));
    expected.push(...lines('rot', 0, 500));
    appendLines(rotateFile, [cri('long-A'.padEnd(3000, 'a'), { partial: true }), cri('interleaved-stderr', { stream: 'stderr' }), cri('long-B'.padEnd(3000, 'b'), { partial: true }), cri('long-END')]);
    expected.push('interleaved-stderr', `${'long-A'.padEnd(3000, 'a')}${'long-B'.padEnd(3000, 'b')}long-END`);
    appendLines(truncateFile, lines('trunc-a', 0, 300).map((m) => cri(m)));
    expected.push(...lines('trunc-a', 0, 300));
    appendLines(removeFile, lines('del', 0, 20_000).map((m) => cri(m)));
    expected.push(...lines('del', 0, 20_000));

    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    agent = startAgentProcess(agentConfigFile({ root, stateDir, topicPrefix, extra: { files: { root, pollIntervalMs: 100, rescanIntervalMs: 1_000, rotateWaitMs: 1_000, readBufferBytes: 64 * 1024 } } }));

    // Deleted while being read: unlink as soon as its first records arrived; the agent holds the
    // descriptor and must drain the rest.
    await waitFor('first records of the file to delete', () => collector.records.some((r) => r.record.message.startsWith('del-')), 60_000);
    unlinkSync(removeFile);

    // Rename rotation: the runtime keeps writing to the renamed file for a moment, then a new 0.log.
    await waitFor('rotating file shipped', () => collector.records.some((r) => r.record.message === 'rot-499'), 60_000);
    renameSync(rotateFile, `${rotateFile}.20261122-041719`);
    appendLines(`${rotateFile}.20261122-041719`, lines('rot-late', 0, 50).map((m) => cri(m)));
    expected.push(...lines('rot-late', 0, 50));
    appendLines(rotateFile, lines('rot-new', 0, 400).map((m) => cri(m)));
    expected.push(...lines('rot-new', 0, 400));

    // copytruncate: once shipped, the file is copied away and truncated in place, then written anew.
    await waitFor('truncating file shipped', () => collector.records.some((r) => r.record.message === 'trunc-a-299'), 60_000);
    truncateSync(truncateFile, 0);
    appendLines(truncateFile, lines('trunc-b', 0, 200).map((m) => cri(m)));
    expected.push(...lines('trunc-b', 0, 200));

    await collector.waitForCount(expected.length, 90_000);
    // Nothing more than expected arrives shortly after (no duplicates trickling in).
    await waitFor('agent idle', async () => {
      const before = collector.records.length;
      await new Promise((r) => setTimeout(r, 500));
      return collector.records.length === before;
    });

    const messages = collector.records.map((r) => r.record.message);
    assert.equal(messages.length, expected.length, 'record count');
    assert.deepEqual([...messages].sort(), [...expected].sort());
    const ids = new Set(collector.records.map((r) => r.record.event_id));
    assert.equal(ids.size, messages.length, 'event ids unique');

    // Per file, records arrive in file order (one key per pod keeps them on one partition).
    const rot = collector.records.filter((r) => /^rot-\d+$/.test(r.record.message)).map((r) => Number(r.record.message.slice(4)));
    assert.deepEqual(rot, [...rot].sort((a, b) => a - b));

    const merged = collector.records.find((r) => r.record.message.startsWith('long-A'));
    assert.ok(merged);
    assert.equal(merged.record.stream, 'stdout');
    assert.equal(merged.record.kubernetes.namespace, 'ns-rotate');
    assert.equal(merged.record.kubernetes.pod, 'web-1');
    assert.equal(merged.record.kubernetes.pod_uid, UID_A);
    assert.equal(merged.record.kubernetes.container, 'app');
    assert.deepEqual(merged.record.log.flags, ['metadata_fallback']);
    assert.equal(collector.records.find((r) => r.record.message === 'interleaved-stderr')?.record.stream, 'stderr');
  });
});

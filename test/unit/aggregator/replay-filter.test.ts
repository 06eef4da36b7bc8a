import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { originOf, ReplayState } from '../../../aggregator/replay-filter.js';
import { decodeMessage } from '../../../aggregator/record-decoder.js';
import type { SinkRecord } from '../../../aggregator/sink.js';

const LIMITS = { forgetAfterMs: 60_000, maxOriginsPerPartition: 3 };
const FILE_A = 'a'.repeat(20);
const FILE_B = 'b'.repeat(20);

function eventId(file: string, byteOffset: number): string {
  return file + byteOffset.toString(16).padStart(12, '0');
}

/** One Kafka message per record, as an agent with maxRecordsPerMessage 1 writes them. */
function records(kafkaOffset: number, lines: { file: string; at: number; stream?: string }[]): SinkRecord[] {
  return lines.flatMap((l, i) => {
    const value = Buffer.from(
      `${JSON.stringify({ '@timestamp': '2026-11-22T04:17:19.1Z', message: `m${String(l.at)}`, stream: l.stream ?? 'stdout', event_id: eventId(l.file, l.at), kubernetes: { cluster: 'c', namespace: 'n' } })}\n`,
    );
    return decodeMessage('t', 0, kafkaOffset + i, value, { maxRecordBytes: 65_536 }).records;
  });
}

const offsetsOf = (rs: readonly SinkRecord[]): number[] => rs.map((r) => r.fields.originOffset ?? -1);

describe('originOf', () => {
  it('reads file and stream from an agent event_id, and nothing from another producer\'s', () => {
    assert.deepEqual(originOf(eventId(FILE_A, 0x1f), 'stderr'), { origin: `${FILE_A}e`, offset: 0x1f });
    assert.notEqual(originOf(eventId(FILE_A, 1), 'stdout')?.origin, originOf(eventId(FILE_A, 1), 'stderr')?.origin);
    assert.equal(originOf('not-an-agent-id', 'stdout'), undefined);
    assert.equal(originOf(eventId(FILE_A, 1).toUpperCase(), 'stdout'), undefined);
  });
});

describe('ReplayState', () => {
  it('drops records at or below the highest byte offset written for their file and stream, within a batch too', () => {
    const state = new ReplayState();
    const first = state.judge(records(0, [{ file: FILE_A, at: 0 }, { file: FILE_A, at: 100 }, { file: FILE_B, at: 0 }]));
    assert.equal(first.dropped, 0);
    state.commit(first.highs, 1_000, LIMITS);
    // The agent restarted from its checkpoint at 100: 100 again, then new lines; B's replay inside the batch.
    const replay = records(3, [{ file: FILE_A, at: 100 }, { file: FILE_A, at: 200 }, { file: FILE_B, at: 50 }, { file: FILE_B, at: 50 }, { file: FILE_A, at: 150 }]);
    const verdict = state.judge(replay);
    assert.deepEqual(offsetsOf(verdict.kept), [200, 50]);
    assert.equal(verdict.dropped, 3);
  });

  it('judges each stream on its own: a long stdout line merged later has a lower offset than the stderr lines before it', () => {
    const state = new ReplayState();
    const verdict = state.judge(records(0, [{ file: FILE_A, at: 300, stream: 'stderr' }, { file: FILE_A, at: 100, stream: 'stdout' }]));
    assert.equal(verdict.dropped, 0);
  });

  it('never drops records of other producers', () => {
    const value = Buffer.from('{"@timestamp":"2026-11-22T04:17:19Z","event_id":"x1","kubernetes":{"cluster":"c","namespace":"n"}}\n');
    const rs = [...decodeMessage('t', 0, 0, value, { maxRecordBytes: 65_536 }).records, ...decodeMessage('t', 0, 1, value, { maxRecordBytes: 65_536 }).records];
    assert.equal(new ReplayState().judge(rs).kept.length, 2);
  });

  it('does not move until committed: a failed send judged again gives the same verdict', () => {
    const state = new ReplayState();
    const batch = records(0, [{ file: FILE_A, at: 0 }, { file: FILE_A, at: 10 }]);
    assert.equal(state.judge(batch).kept.length, 2);
    assert.equal(state.judge(batch).kept.length, 2);
  });

  it('forgets files not seen for forgetAfterMs and the least recently seen beyond the limit', () => {
    const state = new ReplayState();
    for (const [i, file] of ['c', 'd', 'e', 'f'].entries()) state.commit(new Map([[file, 10]]), 1_000 + i, LIMITS);
    assert.equal(state.size, 3);
    assert.equal(state.highest('c'), undefined);
    state.commit(new Map([['d', 20]]), 1_000 + LIMITS.forgetAfterMs + 3, LIMITS);
    // e (seen at 1002) is older than forgetAfterMs now; f (1003) is not; d was just seen.
    assert.equal(state.highest('e'), undefined);
    assert.equal(state.highest('f'), 10);
    assert.equal(state.highest('d'), 20);
  });

  it('round-trips through JSON, oldest first whatever the stored order', () => {
    const state = new ReplayState();
    state.commit(new Map([['x', 5]]), 2_000, LIMITS);
    state.commit(new Map([['y', 7]]), 1_000, LIMITS);
    const read = ReplayState.parse(JSON.parse(JSON.stringify(state)));
    assert.ok(read);
    assert.equal(read.highest('x'), 5);
    read.commit(new Map([['z', 1], ['w', 1]]), 2_001, LIMITS);
    assert.equal(read.highest('y'), undefined, 'y was seen first, so it goes first');
    assert.equal(ReplayState.parse({ x: [1] }), undefined);
    assert.equal(ReplayState.parse([]), undefined);
  });
});

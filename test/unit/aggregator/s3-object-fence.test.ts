import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConflictResolution, decideConflict, heldObject, heldPastMarker, ObjectMetadata, objectMetadata, recordsAfter } from '../../../aggregator/s3-object-fence.js';
import { sinkRecord, type SinkRecord } from '../../../aggregator/sink.js';

/** Records of Kafka messages: [offset, records in it]. */
function records(...messages: [offset: number, count: number][]): SinkRecord[] {
  return messages.flatMap(([offset, count]) =>
    Array.from({ length: count }, (_, index) =>
      sinkRecord({ topic: 't', partition: 0, offset, index }, Buffer.from(`{"n":${String(offset)}}`), { timeMs: 0, eventId: `${String(offset)}.${String(index)}`, cluster: 'c', namespace: 'ns', pod: 'p', container: 'c' }),
    ),
  );
}

describe('object metadata', () => {
  it('names the last record\'s offset and the incarnation, and reads back', () => {
    const written = objectMetadata(records([4, 2], [9, 3]), 'topic-id');
    assert.deepEqual(written, { [ObjectMetadata.LAST_OFFSET]: '9', [ObjectMetadata.TOPIC_ID]: 'topic-id' });
    assert.deepEqual(heldObject(written), { lastOffset: 9, topicId: 'topic-id' });
    assert.deepEqual(objectMetadata(records([7, 1]), undefined), { [ObjectMetadata.LAST_OFFSET]: '7' });
  });

  it('reads an object without (or with malformed) metadata as holding nothing known', () => {
    assert.deepEqual(heldObject(undefined), { lastOffset: undefined, topicId: undefined });
    assert.deepEqual(heldObject({}), { lastOffset: undefined, topicId: undefined });
    for (const bad of ['', '-1', '1e3', '12a', ' 3', '99999999999999999']) assert.equal(heldObject({ [ObjectMetadata.LAST_OFFSET]: bad }).lastOffset, undefined, bad);
    assert.equal(heldObject({ [ObjectMetadata.LAST_OFFSET]: '3', [ObjectMetadata.TOPIC_ID]: '' }).topicId, undefined);
  });

  it('refuses an object without records', () => {
    assert.throws(() => objectMetadata([], undefined));
  });
});

describe('decideConflict', () => {
  const writer = { topicId: 'now', highWatermark: 1_000 };

  it('resumes after this incarnation\'s object: its records through its last offset are written', () => {
    assert.deepEqual(decideConflict({ lastOffset: 120, topicId: 'now' }, writer), { resolution: ConflictResolution.RESUMED, heldThrough: 120 });
  });

  it('never skips records for an object of another incarnation, told by topic ID', () => {
    assert.deepEqual(decideConflict({ lastOffset: 120, topicId: 'before' }, writer), { resolution: ConflictResolution.EARLIER_INCARNATION });
  });

  it('tells another incarnation by the high watermark when either topic ID is unknown', () => {
    const unknown = { topicId: undefined, highWatermark: 1_000 };
    assert.equal(decideConflict({ lastOffset: 1_000, topicId: 'before' }, unknown).resolution, ConflictResolution.EARLIER_INCARNATION);
    assert.equal(decideConflict({ lastOffset: 1_500, topicId: undefined }, writer).resolution, ConflictResolution.EARLIER_INCARNATION);
    assert.equal(decideConflict({ lastOffset: 999, topicId: undefined }, writer).resolution, ConflictResolution.RESUMED);
    assert.equal(decideConflict({ lastOffset: 5_000, topicId: undefined }, { topicId: undefined, highWatermark: undefined }).resolution, ConflictResolution.RESUMED);
  });

  it('replaces an object without logship metadata (an older logship\'s), as before the fence', () => {
    assert.deepEqual(decideConflict({ lastOffset: undefined, topicId: 'now' }, writer), { resolution: ConflictResolution.UNMARKED });
  });
});

describe('recordsAfter', () => {
  const batch = records([10, 2], [11, 1], [14, 3], [20, 1]);

  it('skips whole messages up to the offset held, keeping the rest in order', () => {
    assert.deepEqual(recordsAfter(batch, 11).map((r) => [r.offset, r.index]), [[14, 0], [14, 1], [14, 2], [20, 0]]);
    assert.deepEqual(recordsAfter(batch, 13).map((r) => r.offset), [14, 14, 14, 20]);
    assert.deepEqual(recordsAfter(batch, 20), []);
  });

  it('returns the same array when nothing is held', () => {
    assert.equal(recordsAfter(batch, 9), batch);
  });
});

describe('heldPastMarker', () => {
  it('keeps the groups written at or past the marker, the highest offset of each', () => {
    const previous = new Map([['a', 300], ['b', 150], ['c', 400]]);
    const found = new Map([['a', 250], ['c', 420], ['d', 200], ['e', 199]]);
    assert.deepEqual([...heldPastMarker(previous, found, 200)].sort(), [['a', 300], ['c', 420], ['d', 200]]);
  });

  it('forgets everything once the marker passed it', () => {
    assert.equal(heldPastMarker(new Map([['a', 10]]), new Map([['b', 20]]), 21).size, 0);
  });
});

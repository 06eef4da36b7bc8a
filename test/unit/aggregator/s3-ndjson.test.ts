import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeMessage } from '../../../aggregator/record-decoder.js';
import { lineOf, type SinkRecord } from '../../../aggregator/sink.js';
import { ndjsonSlices } from '../../../aggregator/sinks/s3-ndjson.js';

const SLICE_BYTES = 1024 * 1024;

function line(n: number, pad = 0): string {
  return JSON.stringify({
    '@timestamp': '2026-11-22T04:17:19.123456789Z',
    message: `line ${String(n)} ${'x'.repeat(pad)}`,
    event_id: `id-${String(n)}`,
    kubernetes: { cluster: 'prod', namespace: 'payments', pod: 'api-1', container: 'api' },
  });
}

function message(offset: number, lines: string[], trailingNewline = true): SinkRecord[] {
  const value = Buffer.from(lines.join('\n') + (trailingNewline ? '\n' : ''));
  return decodeMessage('logs', 0, offset, value, { maxRecordBytes: 4 * SLICE_BYTES }).records;
}

function expectedNdjson(records: readonly SinkRecord[]): Buffer {
  return Buffer.concat(records.flatMap((r) => [lineOf(r), Buffer.from('\n')]));
}

describe('ndjsonSlices', () => {
  it('writes each record as one line, across messages, gaps and a message without its last newline', () => {
    const first = message(1, Array.from({ length: 50 }, (_, i) => line(i)));
    const second = message(2, Array.from({ length: 30 }, (_, i) => line(100 + i)), false);
    // A filter dropped some records: the lines around a gap are not one run.
    const records = [...first.filter((_, i) => i % 7 !== 3), ...second, ...first.slice(0, 2)];
    const slices = [...ndjsonSlices(records)];
    assert.deepEqual(Buffer.concat(slices), expectedNdjson(records));
    assert.equal(slices.length, 1);
  });

  it('keeps slices within 1 MiB and gives a longer line a slice of its own', () => {
    const lines = Array.from({ length: 4_000 }, (_, i) => line(i, 300));
    const huge = line(-1, SLICE_BYTES + 10);
    const records = [...message(1, lines.slice(0, 2_000)), ...message(2, [huge]), ...message(3, lines.slice(2_000))];
    const slices = [...ndjsonSlices(records)];
    assert.deepEqual(Buffer.concat(slices), expectedNdjson(records));
    const large = slices.filter((s) => s.length > SLICE_BYTES);
    assert.equal(large.length, 1);
    assert.equal(large[0]?.toString(), huge);
    assert.ok(slices.length >= 4, `${slices.length} slices`);
  });

  it('writes nothing for no records', () => {
    assert.deepEqual([...ndjsonSlices([])], []);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decodeMessage } from '../../../aggregator/record-decoder.js';
import { lineOf, type SinkRecord } from '../../../aggregator/sink.js';
import { gzipNdjson, ndjsonSlices } from '../../../aggregator/sinks/s3-ndjson.js';

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

  it('may reuse one buffer for every slice, as long as each is consumed before the next is asked for', () => {
    const lines = Array.from({ length: 6_000 }, (_, i) => line(i, 300));
    const records = [...message(1, lines.slice(0, 3_000)), ...message(2, [line(-1, SLICE_BYTES + 10)]), ...message(3, lines.slice(3_000))];
    const shared = Buffer.alloc(SLICE_BYTES);
    let taken = 0;
    const copies: Buffer[] = [];
    for (const slice of ndjsonSlices(records, () => (taken++, shared))) copies.push(Buffer.from(slice));
    assert.ok(taken >= 2, `${String(taken)} slices taken`);
    assert.deepEqual(Buffer.concat(copies), expectedNdjson(records));
  });
});

describe('gzipNdjson', () => {
  it('compresses the NDJSON of several objects at once, each intact', async () => {
    const objects = [0, 1, 2, 3, 4].map((n) => message(n, Array.from({ length: 4_000 + 1_000 * n }, (_, i) => line(i + 10_000 * n, 300))));
    for (let round = 0; round < 2; round++) {
      const compressed = await Promise.all(objects.map((records) => gzipNdjson(records, 1)));
      compressed.forEach((bytes, n) => assert.deepEqual(gunzipSync(bytes), expectedNdjson(objects[n] ?? []), `object ${String(n)}`));
    }
  });
});

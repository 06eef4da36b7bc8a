import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessageBuilder, type MessageSink } from '../../../agent/message-builder.js';

interface Emitted {
  value: string;
  minStart: number;
  bytes: Buffer;
  release: () => void;
}

function collector(): { sink: MessageSink; messages: Emitted[] } {
  const messages: Emitted[] = [];
  return { sink: (bytes, minStart, release) => messages.push({ value: bytes.toString(), minStart, bytes, release }), messages };
}

describe('MessageBuilder', () => {
  it('groups records as NDJSON up to the record limit, with the smallest start of each message', () => {
    const builder = new MessageBuilder({ maxMessageBytes: 1024, maxRecordsPerMessage: 2, slabBytes: 4096 });
    const { sink, messages } = collector();
    builder.begin(sink);
    builder.append('{"a":1}', 7, 100);
    builder.append('{"a":2}', 7, 50);
    builder.append('{"a":3}', 7, 200);
    builder.flush();
    assert.deepEqual(
      messages.map((m) => [m.value, m.minStart]),
      [
        ['{"a":1}\n{"a":2}\n', 50],
        ['{"a":3}\n', 200],
      ],
    );
  });

  it('starts a new message with the record that would take one past maxMessageBytes', () => {
    const builder = new MessageBuilder({ maxMessageBytes: 20, maxRecordsPerMessage: 100, slabBytes: 64 });
    const { sink, messages } = collector();
    builder.begin(sink);
    for (let i = 0; i < 5; i++) builder.append(`{"n":${i}}`, 7, i * 10);
    builder.flush();
    assert.deepEqual(
      messages.map((m) => [m.value, m.minStart]),
      [
        ['{"n":0}\n{"n":1}\n', 0],
        ['{"n":2}\n{"n":3}\n', 20],
        ['{"n":4}\n', 40],
      ],
    );
    assert.ok(messages.every((m) => m.bytes.length <= 20));
  });

  it('writes hot-path records in place through reserve/commit', () => {
    const builder = new MessageBuilder({ maxMessageBytes: 1024, maxRecordsPerMessage: 10, slabBytes: 4096 });
    const { sink, messages } = collector();
    builder.begin(sink);
    const out = builder.reserve(10);
    const end = builder.position + out.write('{"x":true}', builder.position);
    builder.commit(end, 7);
    builder.flush();
    assert.deepEqual(messages.map((m) => [m.value, m.minStart]), [['{"x":true}\n', 7]]);
  });

  it('flushes the open message to its owner when another owner begins', () => {
    const builder = new MessageBuilder({ maxMessageBytes: 1024, maxRecordsPerMessage: 10, slabBytes: 4096 });
    const a = collector();
    const b = collector();
    builder.begin(a.sink);
    builder.append('{"f":"a"}', 9, 0);
    builder.begin(b.sink);
    builder.append('{"f":"b"}', 9, 0);
    builder.flush();
    assert.deepEqual(a.messages.map((m) => m.value), ['{"f":"a"}\n']);
    assert.deepEqual(b.messages.map((m) => m.value), ['{"f":"b"}\n']);
  });

  it('keeps a message intact in a new slab when it outgrows the current one', () => {
    const builder = new MessageBuilder({ maxMessageBytes: 40, maxRecordsPerMessage: 100, slabBytes: 80 });
    const { sink, messages } = collector();
    builder.begin(sink);
    const records: string[] = [];
    for (let i = 0; i < 30; i++) {
      const json = `{"i":${String(i).padStart(3, '0')}}`;
      records.push(json);
      builder.append(json, json.length, i);
    }
    builder.flush();
    assert.equal(messages.map((m) => m.value).join(''), records.map((r) => `${r}\n`).join(''));
    assert.ok(messages.every((m) => m.bytes.length <= 40));
  });

  it('reuses a slab only after every message in it was released', () => {
    const builder = new MessageBuilder({ maxMessageBytes: 2048, maxRecordsPerMessage: 1, slabBytes: SLAB_BYTES });
    const { sink, messages } = collector();
    builder.begin(sink);
    for (let i = 0; i < 8; i++) appendRecord(builder, i); // two slabs, four messages each
    builder.flush();
    const snapshot = messages.map((m) => m.value);
    // Nothing released: further records must not overwrite the bytes of unacknowledged messages.
    for (let i = 8; i < 24; i++) appendRecord(builder, i);
    builder.flush();
    assert.deepEqual(
      messages.slice(0, 8).map((m) => m.value),
      snapshot,
    );
    const first = messages[0]?.bytes.buffer;
    assert.ok(messages.slice(4, 24).every((m) => m.bytes.buffer !== first), 'only the first four messages are in the first slab');
    // Release them all: the slabs may now be used again.
    for (const m of messages.slice(0, 24)) m.release();
    for (let i = 24; i < 80; i++) appendRecord(builder, i);
    builder.flush();
    assert.ok(messages.slice(24).some((m) => m.bytes.buffer === first), 'a released slab is used again');
    assert.deepEqual(
      messages.slice(24).map((m) => m.value),
      Array.from({ length: 56 }, (_, k) => `${record(k + 24)}\n`),
    );
  });

  it('keeps as many free slabs as maxFreeBytes allows, at least two', () => {
    /** Writes 24 one-record messages (six slabs), releases them all, writes 24 more: how many of the first six came back? */
    const slabsReused = (maxFreeBytes: number | undefined): number => {
      const builder = new MessageBuilder({ maxMessageBytes: 2048, maxRecordsPerMessage: 1, slabBytes: SLAB_BYTES, ...(maxFreeBytes === undefined ? {} : { maxFreeBytes }) });
      const { sink, messages } = collector();
      builder.begin(sink);
      for (let i = 0; i < 24; i++) appendRecord(builder, i);
      builder.flush();
      const firstRound = new Set(messages.map((m) => m.bytes.buffer));
      assert.equal(firstRound.size, 6);
      for (const m of messages) m.release();
      for (let i = 24; i < 48; i++) appendRecord(builder, i);
      builder.flush();
      return new Set(messages.slice(24).map((m) => m.bytes.buffer).filter((buffer) => firstRound.has(buffer))).size;
    };
    // Two free slabs kept, plus the last slab of the first round, freed when writing moves on from it.
    assert.equal(slabsReused(undefined), 3);
    assert.equal(slabsReused(SLAB_BYTES), 3);
    assert.equal(slabsReused(8 * SLAB_BYTES), 6);
  });
});

/** Slabs large enough to be buffers of their own (smaller ones are slices of Node's shared 8 KiB pool). */
const SLAB_BYTES = 4096;

/** A record of exactly 1,000 bytes: four fit in a slab, with their newlines. */
function record(i: number): string {
  const head = `{"v":${String(i).padStart(4, '0')},"p":"`;
  return `${head}${'x'.repeat(1000 - head.length - 2)}"}`;
}

function appendRecord(builder: MessageBuilder, i: number): void {
  const json = record(i);
  builder.append(json, json.length, i);
}

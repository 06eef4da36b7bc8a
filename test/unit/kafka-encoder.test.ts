import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Encoder from 'kafkajs/src/protocol/encoder.js';
import { setHeapGrowingPercent } from '../../shared/heap-growth.js';
import { presizeRecordArrays } from '../../shared/kafka.js';

/** Encoders as kafkajs builds records: a few header bytes, then a value of `size` bytes. */
function records(count: number, size: number): Encoder[] {
  return Array.from({ length: count }, (_, n) => {
    const record = new Encoder();
    record.writeBufferInternal(Buffer.from([n & 0xff, 0x00, 0x7f]));
    record.writeBufferInternal(Buffer.alloc(size, 0x61 + (n % 26)));
    return record;
  });
}

/** Runs `write` and counts how often the encoder replaced its buffer with a larger one. */
function countGrowth(encoder: Encoder, write: () => void): number {
  const original = Object.getOwnPropertyDescriptor(Encoder.prototype, 'ensureAvailable')?.value as (this: Encoder, length: number) => void;
  let growths = 0;
  Encoder.prototype.ensureAvailable = function (this: Encoder, length: number): void {
    const before = this.buf;
    original.call(this, length);
    if (this === encoder && this.buf !== before) growths++;
  };
  try {
    write();
  } finally {
    Encoder.prototype.ensureAvailable = original;
  }
  return growths;
}

describe('presizeRecordArrays', () => {
  it('writes the records of a batch as kafkajs does, into one buffer allocated once', () => {
    presizeRecordArrays();
    const batch = records(8, 140_000);
    const encoder = new Encoder();
    const growths = countGrowth(encoder, () => encoder.writeEncoderArray(batch));
    assert.ok(encoder.buffer.equals(Buffer.concat(batch.map((record) => record.buffer))));
    assert.equal(growths, 1, 'kafkajs alone grows it 4 times for these 1.1 MB (256 KiB, 512 KiB, 1 MiB, 2 MiB), copying each time');
  });

  it('appends after what the encoder holds, and an empty list writes nothing', () => {
    presizeRecordArrays();
    const batch = records(3, 1000);
    const encoder = new Encoder();
    encoder.writeBufferInternal(Buffer.from('head'));
    encoder.writeEncoderArray([]);
    encoder.writeEncoderArray(batch);
    assert.ok(encoder.buffer.equals(Buffer.concat([Buffer.from('head'), ...batch.map((record) => record.buffer)])));
  });

  it('rejects what is not a list of encoders, with kafkajs\'s message', () => {
    presizeRecordArrays();
    const encoder = new Encoder();
    assert.throws(() => encoder.writeEncoderArray([Buffer.from('x')] as unknown as Encoder[]), /all values should be an instance of Encoder\[\]/);
    assert.throws(() => encoder.writeEncoderArray('x' as unknown as Encoder[]), /all values should be an instance of Encoder\[\]/);
  });
});

describe('setHeapGrowingPercent', () => {
  it('leaves a factor given on the node command line alone', () => {
    assert.equal(setHeapGrowingPercent(300, ['--heap-growing-percent=100']), false);
    assert.equal(setHeapGrowingPercent(300, ['--heap_growing_percent=50']), false);
    assert.equal(setHeapGrowingPercent(300, ['--expose-gc']), true);
  });
});

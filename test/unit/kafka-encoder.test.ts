import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import Encoder from 'kafkajs/src/protocol/encoder.js';
import { encoderBufferStats, poolEncoderBuffers, setGzipLevel } from '../../shared/kafka.js';

const require = createRequire(import.meta.url);

interface ProduceMessage {
  key: string;
  value: Buffer;
  timestamp: number;
  headers?: Record<string, string>;
}
interface ProduceRequestArgs {
  acks: number;
  timeout: number;
  compression: number;
  topicData: { topic: string; partitions: { partition: number; firstSequence: number; messages: ProduceMessage[] }[] }[];
}
/** kafkajs's produce request (v3, record batches) and its framing, as its broker connection sends them. */
const produceRequest = require('kafkajs/src/protocol/requests/produce/v3/request.js') as (args: ProduceRequestArgs) => unknown;
const frameRequest = require('kafkajs/src/protocol/request.js') as (args: { correlationId: number; clientId: string; request: unknown }) => Promise<Encoder>;
const GZIP = 1;
const NONE = 0;

/** Produce requests like the agent's: several topics and partitions, messages from 100 bytes to 200 KB. */
function produceRequests(): ProduceRequestArgs[] {
  const message = (n: number, size: number): ProduceMessage => ({
    key: `pod-${String(n % 7)}`,
    value: Buffer.from(`{"n":${String(n)},"pad":"${'x'.repeat(size)}"}\n`),
    timestamp: 1_790_000_000_000 + n,
    ...(n % 5 === 0 ? { headers: { origin: `file-${String(n)}` } } : {}),
  });
  const sizes = [100, 70_000, 200_000, 3_000, 130_000];
  return [GZIP, NONE, GZIP].map((compression, r) => ({
    acks: -1,
    timeout: 30_000,
    compression,
    topicData: [0, 1, 2].map((t) => ({
      topic: `logs.test.ns-${String(t)}`,
      partitions: [0, 1].map((partition) => ({
        partition,
        firstSequence: 10 * r + partition,
        messages: Array.from({ length: 3 + t + r }, (_, i) => message(i + 100 * t + 1000 * r, sizes[(i + t + partition) % sizes.length] ?? 0)),
      })),
    })),
  }));
}

async function encode(args: ProduceRequestArgs, correlationId: number): Promise<Buffer> {
  const encoder = await frameRequest({ correlationId, clientId: 'logship-test', request: produceRequest(args) });
  return encoder.buffer;
}

// The bytes kafkajs itself writes, before any of the project's changes to its encoder.
setGzipLevel(1);
const requests = produceRequests();
const reference = await Promise.all(requests.map(async (args, n) => Buffer.from(await encode(args, n))));

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

describe('poolEncoderBuffers', () => {
  it('encodes produce requests byte for byte as kafkajs does, in reused memory', async () => {
    poolEncoderBuffers();
    const before = encoderBufferStats();
    // Several rounds, the requests of a round encoded concurrently; every result stays held until the end,
    // so a buffer handed back too early (and reused) would show as a changed result.
    const results: Buffer[][] = [];
    for (let round = 0; round < 4; round++) results.push(await Promise.all(requests.map((args, n) => encode(args, n))));
    for (const round of results) round.forEach((bytes, n) => assert.ok(bytes.equals(reference[n] ?? Buffer.alloc(0)), `request ${String(n)} differs`));
    const after = encoderBufferStats();
    assert.ok(after.reused - before.reused > after.allocated - before.allocated, `the pool reused less than it allocated: ${JSON.stringify({ before, after })}`);
  });

  it('writes the records of a batch as kafkajs does, into one buffer allocated once', () => {
    poolEncoderBuffers();
    const batch = records(8, 140_000);
    const encoder = new Encoder();
    const growths = countGrowth(encoder, () => encoder.writeEncoderArray(batch));
    assert.ok(encoder.buffer.equals(Buffer.concat(batch.map((record) => record.buffer))));
    assert.equal(growths, 1, 'kafkajs alone grows it 4 times for these 1.1 MB (256 KiB, 512 KiB, 1 MiB, 2 MiB), copying each time');
  });

  it('appends after what the encoder holds, and an empty list writes nothing', () => {
    poolEncoderBuffers();
    const batch = records(3, 1000);
    const encoder = new Encoder();
    encoder.writeBufferInternal(Buffer.from('head'));
    encoder.writeEncoderArray([]);
    encoder.writeEncoderArray(batch);
    assert.ok(encoder.buffer.equals(Buffer.concat([Buffer.from('head'), ...batch.map((record) => record.buffer)])));
  });

  it('rejects what is not a list of encoders, with kafkajs\'s message', () => {
    poolEncoderBuffers();
    const encoder = new Encoder();
    assert.throws(() => encoder.writeEncoderArray([Buffer.from('x')] as unknown as Encoder[]), /all values should be an instance of Encoder\[\]/);
    assert.throws(() => encoder.writeEncoderArray('x' as unknown as Encoder[]), /all values should be an instance of Encoder\[\]/);
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';
import { decompressGzip } from '../../shared/kafka.js';

function ndjson(lines: number): Buffer {
  return Buffer.from(Array.from({ length: lines }, (_, n) => `{"n":${String(n)},"message":"GET /orders/${String(n)} 200"}\n`).join(''));
}

describe('decompressGzip', () => {
  it('inflates a batch into one buffer of exactly its size', async () => {
    const plain = ndjson(20_000);
    const out = await decompressGzip(gzipSync(plain));
    assert.ok(out.equals(plain));
    // One allocation of the right size: nothing larger is pinned by the messages sliced from it.
    assert.equal(out.buffer.byteLength, plain.length);
  });

  it('inflates correctly when the size in the trailer is wrong, without pinning a larger buffer', async () => {
    const plain = ndjson(500);
    for (const claimed of [1, plain.length * 40, 0xffffffff]) {
      const gz = gzipSync(plain);
      gz.writeUInt32LE(claimed >>> 0, gz.length - 4);
      // zlib checks ISIZE itself at the end of the stream: a wrong one is an error, not wrong data.
      await assert.rejects(decompressGzip(gz), /incorrect length check|unexpected end/i);
    }
    const concatenated = Buffer.concat([gzipSync(ndjson(3000)), gzipSync(plain)]);
    const out = await decompressGzip(concatenated);
    assert.ok(out.equals(Buffer.concat([ndjson(3000), plain])), 'two gzip members, the trailer naming only the last');
    assert.ok(out.buffer.byteLength < out.length * 2, `result pins ${String(out.buffer.byteLength)} bytes for ${String(out.length)}`);
  });

  it('inflates zlib streams and tiny inputs with the default chunking', async () => {
    const plain = ndjson(100);
    assert.ok((await decompressGzip(deflateSync(plain))).equals(plain));
    assert.equal((await decompressGzip(gzipSync(Buffer.alloc(0)))).length, 0);
    await assert.rejects(decompressGzip(randomBytes(64)));
  });
});

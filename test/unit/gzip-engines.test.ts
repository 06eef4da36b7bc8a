import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { GzipEngines } from '../../shared/gzip-engines.js';

/** NDJSON-like batches of different sizes; the last is random bytes, whose output spans several chunks. */
function inputs(): Buffer[] {
  const batch = (n: number, lines: number): Buffer =>
    Buffer.from(Array.from({ length: lines }, (_, i) => `{"n":${String(n)},"i":${String(i)},"message":"GET /api/v1/orders?id=${String(i * n)} 200"}\n`).join(''));
  const random = Buffer.alloc(300_000);
  for (let i = 0; i < random.length; i++) random[i] = (i * 2654435761) >>> 24;
  return [batch(1, 10), batch(2, 2_000), Buffer.alloc(0), batch(3, 40_000), random, batch(4, 1)];
}

describe('GzipEngines', () => {
  it('writes what zlib.gzip writes, input after input, with streams reused', async () => {
    const engines = new GzipEngines({ level: 1, chunkBytes: 64 * 1024, maxIdle: 2 });
    // Every output is held to the end: a reused stream must not write over what it handed out before.
    const results: { input: Buffer; output: Buffer }[] = [];
    for (let round = 0; round < 3; round++) {
      for (const input of inputs()) results.push({ input, output: await engines.compress(input) });
    }
    results.forEach(({ input, output }, n) => assert.ok(output.equals(gzipSync(input, { level: 1 })), `output ${String(n)}, ${String(input.length)} bytes`));
    engines.close();
  });

  it('compresses inputs given at once each on a stream of its own', async () => {
    const engines = new GzipEngines({ level: 6, chunkBytes: 16 * 1024, maxIdle: 2 });
    const all = [...inputs(), ...inputs()];
    const outputs = await Promise.all(all.map((input) => engines.compress(input)));
    outputs.forEach((output, n) => assert.ok(gunzipSync(output).equals(all[n] ?? Buffer.alloc(1)), `input ${String(n)}`));
    // And the streams kept afterwards still work.
    const again = await engines.compress(all[1] ?? Buffer.alloc(0));
    assert.ok(again.equals(gzipSync(all[1] ?? Buffer.alloc(0), { level: 6 })));
    engines.close();
  });
});

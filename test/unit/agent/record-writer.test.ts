import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { scanCriLineAt, type CriLayout } from '../../../agent/cri-parser.js';
import { LineAssembler } from '../../../agent/line-assembler.js';
import { copyPlainAscii, RecordWriter } from '../../../agent/record-writer.js';
import { RecordFlag, type KubernetesMetadata } from '../../../shared/record.js';

const METADATA: KubernetesMetadata = {
  cluster: 'prod',
  node: 'node-1',
  namespace: 'payments',
  pod: 'api-7f9c',
  pod_uid: '11111111-2222-4333-8444-555555555555',
  container: 'api',
  container_id: 'containerd://abc',
  image: 'registry/api:1.2.3',
  labels: { app: 'api', 'team"quote': 'a\\b' },
  annotations: {},
  namespace_labels: { tier: 'gold' },
};
const FILE = '/var/log/pods/payments_api-7f9c_11111111-2222-4333-8444-555555555555/api/0.log';
const PREFIX = '0123456789abcdef0123';
const TIME = '2026-11-22T04:17:19.123456789Z';

function writer(maxRecordBytes = 64 * 1024, flags: RecordFlag[] = []): RecordWriter {
  return new RecordWriter(METADATA, FILE, PREFIX, maxRecordBytes, flags);
}

/**
 * Writes the CRI line `line` (without its newline), placed at `at` inside a larger buffer so that the
 * word-wise checks meet every alignment, through the hot path; undefined when it declines the line.
 */
function fast(w: RecordWriter, line: Buffer, offset: number, at = 3): string | undefined {
  const src = Buffer.alloc(at + line.length + 5, 0x0a);
  line.copy(src, at);
  const layout: CriLayout = { timeEnd: 0, stream: 'stdout', partial: false, messageStart: 0 };
  assert.ok(scanCriLineAt(src, at, at + line.length, layout), 'a CRI line');
  const max = w.maxCriRecordBytes(layout.timeEnd - at, at + line.length - layout.messageStart);
  assert.ok(max > 0);
  const out = Buffer.alloc(max + 10);
  const end = w.writeCriLine(src, at, layout.timeEnd, layout.stream, layout.messageStart, at + line.length, offset, out, 5);
  if (end < 0) return undefined;
  assert.ok(end - 5 <= max, 'stays within the room it asked for');
  return out.toString('utf8', 5, end);
}

/** The reference: the line through the assembler and `build` (decoded string, JSON.stringify). */
function slow(w: RecordWriter, line: Buffer, offset: number): string {
  const assembler = new LineAssembler({ format: 'cri', maxLineBytes: 1 << 20 });
  const [entry] = assembler.push({ bytes: line, start: offset, end: offset + line.length + 1 });
  assert.ok(entry);
  return w.build(entry).json;
}

function cri(message: Buffer | string, stream: 'stdout' | 'stderr' = 'stdout'): Buffer {
  return Buffer.concat([Buffer.from(`${TIME} ${stream} F `), typeof message === 'string' ? Buffer.from(message) : message]);
}

describe('RecordWriter.writeCriLine (hot path)', () => {
  it('writes exactly the bytes build() renders, for plain, quoted, escaped and multi-byte messages', () => {
    const w = writer();
    const messages = [
      'GET /health 200',
      '',
      'x',
      '{"level":"info","msg":"quoted \\"inner\\" and a backslash \\\\"}',
      'tab\there, carriage\rreturn, bell\u0007, escape\u001b[0m, nul\u0000, del\u007f',
      'naïve café — 日本語 🚀',
      'a'.repeat(1000),
    ];
    for (const message of messages) {
      for (const stream of ['stdout', 'stderr'] as const) {
        for (let at = 0; at < 4; at++) {
          const line = cri(message, stream);
          const got = fast(w, line, 12345, at);
          assert.equal(got, slow(w, line, 12345), JSON.stringify(message));
          assert.deepEqual(JSON.parse(got), JSON.parse(slow(w, line, 12345)));
        }
      }
    }
  });

  it('matches build() for random bytes that are valid UTF-8, at every offset size', () => {
    const w = writer(64 * 1024, [RecordFlag.METADATA_FALLBACK]);
    let seed = 42;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const alphabet = ['a', 'Z', '0', ' ', '"', '\\', '\t', '\n', '\u0001', '\u001f', '\u007f', 'é', '€', '😀', '/', '{', '}'];
    for (let i = 0; i < 500; i++) {
      let message = '';
      const length = random(60);
      for (let j = 0; j < length; j++) message += alphabet[random(alphabet.length)] ?? '';
      const offset = [0, 9, 10, 255, 65_536, 2 ** 31 + 7, 2 ** 40 + 3][i % 7] ?? 0;
      const line = cri(message.replaceAll('\n', ' '));
      assert.equal(fast(w, line, offset, i % 4), slow(w, line, offset));
    }
  });

  it('declines invalid UTF-8 (build repairs and flags it) and a time that needs escaping', () => {
    const w = writer();
    assert.equal(fast(w, cri(Buffer.from([0x61, 0xff, 0x62])), 0), undefined);
    assert.equal(fast(w, cri(Buffer.from([0xe2, 0x82])), 0), undefined, 'a cut multi-byte character');
    const quotedTime = Buffer.from('2026-11-22T04:17:19.1"3456789Z stdout F hi');
    const src = Buffer.concat([quotedTime, Buffer.from('\n')]);
    const layout: CriLayout = { timeEnd: 0, stream: 'stdout', partial: false, messageStart: 0 };
    assert.ok(scanCriLineAt(src, 0, quotedTime.length, layout));
    assert.equal(w.writeCriLine(src, 0, layout.timeEnd, layout.stream, layout.messageStart, quotedTime.length, 0, Buffer.alloc(4096), 0), -1);
  });

  it('leaves records that could outgrow the maximum size to build()', () => {
    const w = writer(2048);
    assert.ok(w.maxCriRecordBytes(TIME.length, 100) > 0);
    assert.equal(w.maxCriRecordBytes(TIME.length, 2000), -1);
  });
});

describe('copyPlainAscii', () => {
  const plain = (bytes: Buffer, start: number, end: number): boolean => {
    const out = Buffer.alloc(end - start + 8);
    const at = copyPlainAscii(bytes, start, end, out, 3);
    if (at >= 0) assert.deepEqual(out.subarray(3, at), bytes.subarray(start, end), 'copies the bytes');
    return at >= 0;
  };

  it('copies printable ASCII and stops at a byte that needs escaping or is not ASCII, at any position and alignment', () => {
    const base = Buffer.alloc(40, 0x61);
    assert.equal(plain(base, 0, base.length), true);
    for (const special of [0x00, 0x0a, 0x1f, 0x22, 0x5c, 0x80, 0xc3, 0xff]) {
      for (let position = 0; position < 16; position++) {
        const bytes = Buffer.from(base);
        bytes[position + 7] = special;
        assert.equal(plain(bytes, 7, 7 + 16), false, `byte ${special} at ${position}`);
        assert.equal(plain(bytes, position + 8, 40), true, 'only the range counts');
      }
    }
    for (const ok of [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7e, 0x7f]) assert.equal(plain(Buffer.alloc(9, ok), 0, 9), true, `byte ${ok}`);
  });
});

/**
 * Micro-benchmark of the parse stage: `parseCriLine` alone, then `LineAssembler.push` (parse, UTF-8
 * check, decode, entry), over ~2M synthetic 170-byte CRI lines on one core. Each is timed a few
 * times and the best round is reported, since a shared machine's noise only ever slows a round down.
 *
 *   npx tsx bench/parse-cri.ts [lines]
 */
import { parseCriLine } from '../agent/cri-parser.js';
import { LineAssembler, type RawLine } from '../agent/line-assembler.js';

const LINE_BYTES = 170;
const DISTINCT_LINES = 16_384;
const DEFAULT_LINES = 2_000_000;
const WARMUP_ROUNDS = 2;
const TIMED_ROUNDS = 3;

/** Distinct lines in one contiguous buffer, as a tailer's read buffer would hold them. */
function syntheticLines(count: number): Buffer[] {
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const nanos = String(i % 1_000_000_000).padStart(9, '0');
    const stream = i % 10 === 0 ? 'stderr' : 'stdout';
    const prefix = `2026-11-22T04:17:19.${nanos}Z ${stream} F `;
    const body = `level=info ts=${i} msg="GET /api/v1/orders/${i * 7919} 200" latency_ms=${i % 997} user=u${i % 4096} `;
    lines.push((prefix + body).padEnd(LINE_BYTES, 'x'));
  }
  const file = Buffer.from(lines.join('\n'), 'latin1');
  const views: Buffer[] = [];
  let start = 0;
  for (const line of lines) {
    views.push(file.subarray(start, start + line.length));
    start += line.length + 1;
  }
  return views;
}

/** Runs `body` over `total` lines (after a warm-up), `TIMED_ROUNDS` times, and returns the best lines per second. */
function measure(lines: Buffer[], total: number, body: (line: Buffer, offset: number) => number): { linesPerSecond: number; checksum: number } {
  let checksum = 0;
  for (let round = 0; round < WARMUP_ROUNDS; round++) {
    for (const line of lines) checksum += body(line, 0);
  }
  let best = 0;
  let offset = 0;
  for (let round = 0; round < TIMED_ROUNDS; round++) {
    const startedAt = process.hrtime.bigint();
    for (let done = 0; done < total; ) {
      for (let i = 0; i < lines.length && done < total; i++, done++) {
        const line = lines[i] ?? Buffer.alloc(0);
        checksum += body(line, offset);
        offset += line.length + 1;
      }
    }
    const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
    best = Math.max(best, total / seconds);
  }
  return { linesPerSecond: best, checksum };
}

function report(name: string, result: { linesPerSecond: number }): void {
  const mbPerSecond = (result.linesPerSecond * (LINE_BYTES + 1)) / 1e6;
  process.stdout.write(`${name.padEnd(24)} ${(result.linesPerSecond / 1e6).toFixed(2)}M lines/s  (${mbPerSecond.toFixed(0)} MB/s)\n`);
}

const total = Number(process.argv[2] ?? DEFAULT_LINES);
const lines = syntheticLines(DISTINCT_LINES);
process.stdout.write(`${total} lines of ${LINE_BYTES} bytes, best of ${TIMED_ROUNDS} rounds, node ${process.version}\n`);

report(
  'parseCriLine',
  measure(lines, total, (line) => {
    const parsed = parseCriLine(line);
    return parsed.kind === 'ok' ? parsed.message.length : -1;
  }),
);

const assembler = new LineAssembler({ format: 'cri', maxLineBytes: 256 * 1024 });
report(
  'LineAssembler.push',
  measure(lines, total, (line, offset) => {
    const raw: RawLine = { bytes: line, start: offset, end: offset + line.length + 1 };
    let size = 0;
    for (const entry of assembler.push(raw)) size += entry.message.length;
    return size;
  }),
);

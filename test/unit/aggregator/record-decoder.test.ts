import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeMessage, parseTimestamp } from '../../../aggregator/record-decoder.js';
import { DeadLetterReason, lineOf } from '../../../aggregator/sink.js';

const options = { maxRecordBytes: 4096 };

function record(n: number, namespace = 'payments'): string {
  return JSON.stringify({
    '@timestamp': '2026-11-22T04:17:19.123456789Z',
    message: `line ${String(n)}`,
    stream: 'stdout',
    event_id: `id-${String(n)}`,
    kubernetes: { cluster: 'prod', node: 'n1', namespace, pod: 'api-1', pod_uid: 'u', container: 'api', labels: {}, annotations: {}, namespace_labels: {} },
    log: { file: '/x', offset: n },
  });
}

describe('decodeMessage', () => {
  it('splits an NDJSON value into records, keeping each line\'s bytes untouched', () => {
    const lines = [record(1), record(2, 'web'), record(3)];
    const value = Buffer.from(`${lines.join('\n')}\n`);
    const { records, poison } = decodeMessage('logs.prod.payments', 2, 77, value, options);
    assert.equal(poison.length, 0);
    assert.deepEqual(records.map((r) => lineOf(r).toString()), lines);
    assert.deepEqual(records.map((r) => r.index), [0, 1, 2]);
    assert.equal(records[1]?.fields.namespace, 'web');
    assert.equal(records[0]?.fields.eventId, 'id-1');
    assert.equal(records[0].fields.timeMs, Date.UTC(2026, 10, 22, 4, 17, 19, 123));
    assert.equal(records[0].offset, 77);
  });

  it('sends lines that are not records to the dead letter with a reason, keeping the good ones', () => {
    const huge = JSON.stringify({ pad: 'x'.repeat(5000) });
    const value = Buffer.from(`${record(1)}\nnot json\n[1,2]\n{"@timestamp":"nope","event_id":"a","kubernetes":{"namespace":"n","cluster":"c"}}\n{"event_id":"b"}\n${huge}\n`);
    const { records, poison } = decodeMessage('t', 0, 5, value, options);
    assert.equal(records.length, 1);
    assert.deepEqual(
      poison.map((p) => p.reason),
      [DeadLetterReason.INVALID_JSON, DeadLetterReason.INVALID_JSON, DeadLetterReason.MISSING_FIELD, DeadLetterReason.MISSING_FIELD, DeadLetterReason.TOO_LARGE],
    );
    assert.equal(poison[0]?.line.toString(), 'not json');
  });

  it('treats an empty or null value as poison', () => {
    assert.equal(decodeMessage('t', 0, 1, null, options).poison[0]?.reason, DeadLetterReason.INVALID_JSON);
    assert.equal(decodeMessage('t', 0, 1, Buffer.alloc(0), options).poison.length, 1);
  });

  it('accepts a value without the trailing newline', () => {
    assert.equal(decodeMessage('t', 0, 1, Buffer.from(record(9)), options).records.length, 1);
  });

  it('reads each record\'s fields as JSON.parse and Date.parse see them, whatever came before it', () => {
    const timestamps = [
      '2026-11-22T04:17:19.123456789Z',
      '2026-11-22T04:17:19.999999999999Z',
      '2026-11-22T04:17:19.5Z',
      '2026-11-22T04:17:19.05Z',
      '2026-11-22T04:17:19Z',
      '2026-11-22T04:17:20.000001Z',
      '2026-11-22T04:17:19.123+02:00',
      '2026-11-22T04:17:19.123z',
      '2026-11-22T04:17:19.1x3Z',
      '2026-11-22T04:17:19.Z',
      '2026-02-30T00:00:00.000Z',
      '2026-13-01T00:00:00.000Z',
      '1999-12-31T23:59:59.999Z',
      '2026-11-22T04:17:1\u0039.250Z',
      'yesterday',
    ];
    const namespaces = ['payments', 'payments', 'web', 'caf\u00e9', 'web'];
    const lines: string[] = [];
    timestamps.forEach((ts, i) => {
      const namespace = namespaces[i % namespaces.length] ?? 'x';
      lines.push(`{"@timestamp":"${ts}","event_id":"e\\"${String(i)}","kubernetes":{"cluster":"c${String(i % 2)}","namespace":"${namespace}","pod":"p${String(i)}"}}`);
    });
    const { records, poison } = decodeMessage('t', 0, 3, Buffer.from(lines.join('\n')), options);
    const byIndex = new Map(records.map((r) => [r.index, r]));
    lines.forEach((line, i) => {
      const doc = JSON.parse(line) as { '@timestamp': string; event_id: string; kubernetes: { cluster: string; namespace: string; pod: string } };
      const expected = Date.parse(doc['@timestamp']);
      const got = byIndex.get(i);
      if (Number.isNaN(expected)) {
        assert.equal(got, undefined, `${doc['@timestamp']} is no time`);
        assert.ok(poison.some((p) => p.index === i && p.reason === DeadLetterReason.MISSING_FIELD));
        return;
      }
      assert.ok(got, `record ${String(i)} decoded`);
      assert.equal(got.fields.timeMs, expected, doc['@timestamp']);
      assert.equal(got.fields.eventId, doc.event_id);
      assert.equal(got.fields.cluster, doc.kubernetes.cluster);
      assert.equal(got.fields.namespace, doc.kubernetes.namespace);
      assert.equal(got.fields.pod, doc.kubernetes.pod);
      assert.equal(got.fields.container, '');
    });
    assert.ok(records.length >= 10, `${String(records.length)} valid times among the samples`);
  });
});

describe('parseTimestamp', () => {
  it('equals Date.parse on the runtimes\' form and around it', () => {
    const texts: string[] = [];
    for (const year of ['0999', '1000', '1969', '2024', '2026', '9999']) {
      for (let month = 0; month <= 13; month++) {
        for (let day = 0; day <= 32; day++) {
          texts.push(`${year}-${pad(month)}-${pad(day)}T04:17:19.123456789Z`);
        }
      }
    }
    for (const fraction of ['', '.', '.1', '.12', '.123', '.1234', '.999999999', '.0123456789', '.1234567890', '.00000000001', '.1x']) texts.push(`2026-11-22T04:17:19${fraction}Z`);
    for (const time of ['00:00:00', '23:59:59', '0x:17:19', '04:x7:19', '04:17:x9', '04:17:\u00cc9', '24:00:00', '23:60:00', '23:59:60', '4:17:19', '04:17']) texts.push(`2026-11-22T${time}Z`);
    texts.push('2026-11-22t04:17:19Z', '2026-11-22 04:17:19Z', '2026-11-22T04:17:19+09:00', '2026-11-22T04:17:19.5+00:00', '+002026-11-22T04:17:19Z', '2026-11-22', '', 'Z', 'not a time', `2026-11-22T04:17:19.${'1'.repeat(30)}Z`);
    // Instants spread over years 1000-9999 (leap years, century rules), as ISO strings with nanoseconds.
    for (let n = 0; n < 5_000; n++) {
      const ms = Date.UTC(1000, 0, 1) + Math.floor(((n * 2_654_435_761) % 4_294_967_296) / 4_294_967_296 * (Date.UTC(9999, 11, 31) - Date.UTC(1000, 0, 1)));
      texts.push(new Date(ms).toISOString().replace('Z', `${String(n % 1000).padStart(3, '0')}456Z`));
    }
    for (const text of texts) assert.equal(parseTimestamp(text), Date.parse(text), text);
  });
});

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

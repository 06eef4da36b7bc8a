import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import type { DeadLetter, DeadLetterQueue } from '../../../aggregator/dead-letter.js';
import { AggregatorMetrics } from '../../../aggregator/metrics.js';
import { DeadLetterReason, sinkRecord, type Batch, type SendResult, type Sink, type SinkRecord } from '../../../aggregator/sink.js';
import { SinkRunner, type SinkRunnerOptions } from '../../../aggregator/sink-runner.js';
import { SinkError, ErrorCode } from '../../../shared/errors.js';
import { createLogger } from '../../../shared/logger.js';
import { waitFor } from '../../helpers/stack.js';

function rec(offset: number, index = 0, namespace = 'a'): SinkRecord {
  return sinkRecord({ topic: 't', partition: 0, offset, index }, Buffer.from(`{"n":${String(offset)}}`), {
    timeMs: Date.now(),
    eventId: `${String(offset)}-${String(index)}`,
    cluster: 'c',
    namespace,
    pod: 'p',
    container: 'c',
  });
}

/** A sink scripted by a function of the batch and the attempt number; records every call. */
class ScriptedSink implements Sink {
  readonly name = 'fake';
  readonly calls: Batch[] = [];
  readonly released: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  constructor(private readonly script: (batch: Batch, call: number) => SendResult | Promise<SendResult>) {}
  start(): Promise<void> {
    return Promise.resolve();
  }
  async send(batch: Batch): Promise<SendResult> {
    this.calls.push(batch);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setImmediate(r));
      return await this.script(batch, this.calls.length - 1);
    } finally {
      this.inFlight--;
    }
  }
  release(topic: string, partition: number): void {
    this.released.push(`${topic}/${String(partition)}`);
  }
  healthcheck(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function harness(sink: Sink, options: Partial<SinkRunnerOptions> = {}) {
  const acks: [string, number, number][] = [];
  const letters: DeadLetter[] = [];
  const deadLetters = { send: (l: readonly DeadLetter[]) => (letters.push(...l), Promise.resolve()) } as unknown as DeadLetterQueue;
  const runner = new SinkRunner(
    sink,
    { maxBatchBytes: 1 << 20, maxBatchRecords: 1_000, maxBatchAgeMs: 60_000, concurrency: 2, retryInitialDelayMs: 1, retryMaxDelayMs: 5, ...options },
    { deadLetters, metrics: new AggregatorMetrics(new Registry(), { progress: () => [], heldBytes: () => 0, sinkNames: ['fake'] }), logger: createLogger({ name: 'test', level: 'silent' }), onAck: (t, p, e) => acks.push([t, p, e]) },
  );
  return { runner, acks, letters };
}

describe('SinkRunner', () => {
  it('cuts batches only between messages and acknowledges each range in order', async () => {
    const sink = new ScriptedSink(() => ({ status: 'delivered' }));
    const { runner, acks } = harness(sink, { maxBatchRecords: 3 });
    // Message 10 holds 2 records, 11 holds 2, 12 holds 1: the limit is reached inside message 11,
    // yet the cut comes after it (a batch may overshoot by the rest of one message).
    runner.append('t', 0, 10, 13, [rec(10, 0), rec(10, 1), rec(11, 0), rec(11, 1), rec(12, 0)]);
    runner.sealAll();
    await runner.drained();
    assert.deepEqual(sink.calls.map((b) => [b.firstOffset, b.endOffset, b.records.length]), [
      [10, 12, 4],
      [12, 13, 1],
    ]);
    for (const batch of sink.calls) assert.ok(batch.records.every((r) => r.offset >= batch.firstOffset && r.offset < batch.endOffset));
    assert.deepEqual(acks, [
      ['t', 0, 12],
      ['t', 0, 13],
    ]);
    await runner.close();
  });

  it('retries only the pending records and dead-letters the rejected ones before acknowledging', async () => {
    const sink = new ScriptedSink((batch, call) => {
      if (call === 0) {
        const [first, second, third] = batch.records;
        if (!first || !second || !third) throw new Error('expected 3 records');
        return {
          status: 'retryable',
          error: new SinkError('429', { code: ErrorCode.SINK_UNAVAILABLE, retriable: true }),
          pending: [second],
          rejected: [{ record: third, reason: DeadLetterReason.REJECTED, detail: 'mapper_parsing_exception: bad' }],
        };
      }
      return { status: 'delivered' };
    });
    const { runner, acks, letters } = harness(sink);
    runner.append('t', 0, 0, 3, [rec(0), rec(1), rec(2)]);
    runner.sealAll();
    await runner.drained();
    assert.deepEqual(sink.calls.map((b) => b.records.map((r) => r.offset)), [[0, 1, 2], [1]]);
    assert.deepEqual(sink.calls[1] && [sink.calls[1].firstOffset, sink.calls[1].endOffset], [0, 3], 'a retry keeps the batch range');
    assert.deepEqual(letters.map((l) => [l.offset, l.reason, l.sink]), [[2, 'rejected', 'fake']]);
    assert.deepEqual(acks, [['t', 0, 3]]);
    await runner.close();
  });

  it('sends a wholly rejected batch to the dead letter and moves on', async () => {
    const sink = new ScriptedSink(() => ({ status: 'rejected', error: new SinkError('no', { code: ErrorCode.SINK_REJECTED }) }));
    const { runner, acks, letters } = harness(sink);
    runner.append('t', 0, 0, 2, [rec(0), rec(1)]);
    runner.sealAll();
    await runner.drained();
    assert.equal(letters.length, 2);
    assert.deepEqual(acks, [['t', 0, 2]]);
    await runner.close();
  });

  it('acknowledges records its routing filter dropped, with an empty batch', async () => {
    const sink = new ScriptedSink(() => ({ status: 'delivered' }));
    const { runner, acks } = harness(sink, { filter: (f) => f.namespace === 'keep' });
    runner.append('t', 0, 0, 2, [rec(0, 0, 'drop'), rec(1, 0, 'drop')]);
    runner.sealAll();
    await runner.drained();
    assert.equal(sink.calls[0]?.records.length, 0);
    assert.deepEqual(acks, [['t', 0, 2]]);
    await runner.close();
  });

  it('never has two sends of one partition in flight, and bounds partitions in flight by concurrency', async () => {
    const sink = new ScriptedSink(() => ({ status: 'delivered' }));
    const { runner, acks } = harness(sink, { maxBatchRecords: 1, concurrency: 2 });
    for (let p = 0; p < 4; p++) {
      runner.append('t', p, 0, 5, [0, 1, 2, 3, 4].map((o) => ({ ...rec(o), partition: p })));
    }
    runner.sealAll();
    await runner.drained();
    assert.equal(acks.length, 20);
    assert.ok(sink.maxInFlight <= 2, `max in flight ${String(sink.maxInFlight)}`);
    for (let p = 0; p < 4; p++) {
      const ends = acks.filter((a) => a[1] === p).map((a) => a[2]);
      assert.deepEqual(ends, [1, 2, 3, 4, 5]);
    }
    await runner.close();
  });

  it('seals a batch when it reaches its age', async () => {
    const sink = new ScriptedSink(() => ({ status: 'delivered' }));
    const { runner, acks } = harness(sink, { maxBatchAgeMs: 20 });
    runner.append('t', 0, 0, 1, [rec(0)]);
    await waitFor('age-based flush', () => acks.length === 1, 5_000, 5);
    await runner.close();
  });

  it('on reset, drops unsent batches and releases the partitions at the sink', async () => {
    let unblock: (() => void) | undefined;
    const sink = new ScriptedSink(async () => {
      await new Promise<void>((r) => (unblock = r));
      return { status: 'delivered' };
    });
    const { runner, acks } = harness(sink, { maxBatchRecords: 1 });
    runner.append('t', 0, 0, 3, [rec(0), rec(1), rec(2)]);
    runner.sealAll();
    const release = await waitFor('first send in flight', () => unblock, 5_000, 5);
    const resetDone = runner.reset();
    release();
    await resetDone;
    assert.deepEqual(sink.released, ['t/0']);
    assert.deepEqual(acks, [], 'a send that completes after a reset is not acknowledged');
    assert.equal(sink.calls.length, 1);
    await runner.close();
  });

  it('over a rebalance, keeps the batches of the partitions it keeps (the interrupted one first) and drops the others', async () => {
    let unblock: (() => void) | undefined;
    const sink = new ScriptedSink(async (_batch, call) => {
      if (call === 0) await new Promise<void>((r) => (unblock = r));
      return { status: 'delivered' };
    });
    const { runner, acks } = harness(sink, { maxBatchRecords: 1, concurrency: 1 });
    runner.append('t', 0, 0, 2, [rec(0), rec(1)]);
    runner.append('t', 1, 0, 1, [{ ...rec(0), partition: 1 }]);
    runner.sealAll();
    const release = await waitFor('first send in flight', () => unblock, 5_000, 5);
    const suspended = runner.suspend();
    release(); // it completes after the abort: not acknowledged, still first in its lane
    await suspended;
    runner.append('t', 0, 2, 3, [rec(2)]);
    runner.sealAll(); // a send would start here, synchronously (the sink records the call before its first await)
    assert.equal(sink.calls.length, 1, 'nothing is sent while suspended');
    runner.retain((_topic, partition) => partition === 0);
    assert.deepEqual(sink.released, ['t/1']);
    runner.resume();
    await runner.drained();
    assert.deepEqual(
      sink.calls.slice(1).map((b) => [b.partition, b.firstOffset, b.endOffset]),
      [
        [0, 0, 1],
        [0, 1, 2],
        [0, 2, 3],
      ],
    );
    assert.deepEqual(acks, [
      ['t', 0, 1],
      ['t', 0, 2],
      ['t', 0, 3],
    ]);
    await runner.close();
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { aggregatorConfigSchema } from '../../../aggregator/config.js';

function s3Sink(name: string, bucket: string, prefix?: string): Record<string, unknown> {
  return { name, type: 's3', s3: { bucket, ...(prefix === undefined ? {} : { prefix }) } };
}

function problems(sinks: Record<string, unknown>[]): { path: string; message: string }[] {
  const parsed = aggregatorConfigSchema.safeParse({ kafka: { brokers: ['127.0.0.1:9092'], topics: ['logs'] }, sinks });
  return parsed.success ? [] : parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
}

describe('aggregator config', () => {
  it('rejects two S3 sinks writing one bucket and prefix, naming both', () => {
    const found = problems([s3Sink('archive', 'logs-bucket'), s3Sink('es-like', 'other'), s3Sink('copy', 'logs-bucket', 'logs')]);
    assert.equal(found.length, 1);

    const [problem] = found;
    assert.ok(problem);
    assert.equal(problem.path, 'sinks.2.s3.prefix');
    assert.match(problem.message, /"archive" \(sinks\[0\]\) and "copy" \(sinks\[2\]\) both write bucket "logs-bucket" under prefix "logs"/);
  });

  it('accepts S3 sinks on one bucket under different prefixes', () => {
    assert.deepEqual(problems([s3Sink('a', 'logs-bucket', 'a'), s3Sink('b', 'logs-bucket', 'b')]), []);
  });

  it('detects replays by default, within bounds', () => {
    const parsed = aggregatorConfigSchema.parse({ kafka: { brokers: ['127.0.0.1:9092'], topics: ['logs'] }, sinks: [s3Sink('a', 'logs-bucket')] });
    assert.deepEqual(parsed.replayDetection, { enabled: true, forgetAfterMs: 86_400_000, maxOriginsPerPartition: 4_096 });
  });
});

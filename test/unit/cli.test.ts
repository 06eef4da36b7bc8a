import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { EXIT_CONFIG, parseCli } from '../../shared/cli.js';
import { secretSchema } from '../../shared/secrets.js';

const schema = z.strictObject({
  port: z.number().int().min(1).max(65535).default(9102),
  brokers: z.array(z.string()).min(1),
  password: secretSchema.optional(),
});

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { stream, text: () => text };
}

const dir = mkdtempSync(join(tmpdir(), 'logship-cli-'));

describe('parseCli', () => {
  it('returns the validated config for a good file', () => {
    const file = join(dir, 'good.yaml');
    writeFileSync(file, 'brokers: [k:9092]\n');
    const outcome = parseCli({ binary: 'logship-test', schema, argv: ['--config', file], env: {} });
    assert.deepEqual(outcome, { kind: 'run', config: { port: 9102, brokers: ['k:9092'] }, configFile: file });
  });

  it('exits non-zero on a bad config, listing every problem', () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'port: 70000\nbrokers: []\ncolour: blue\n');
    const err = capture();
    const outcome = parseCli({ binary: 'logship-test', schema, argv: ['--config', file], env: { LOGSHIP_PASSWORD__VALU: 'x' }, stderr: err.stream });
    assert.deepEqual(outcome, { kind: 'exit', code: EXIT_CONFIG });
    const text = err.text();
    assert.match(text, /4 problems/);
    for (const path of ['port', 'brokers', 'colour', 'password.valu']) assert.match(text, new RegExp(`- ${path.replace('.', '\\.')}: `));
    assert.match(text, /from LOGSHIP_PASSWORD__VALU/);
  });

  it('rejects unknown flags with usage', () => {
    const err = capture();
    const outcome = parseCli({ binary: 'logship-test', schema, argv: ['--confg', 'x'], env: {}, stderr: err.stream });
    assert.deepEqual(outcome, { kind: 'exit', code: EXIT_CONFIG });
    assert.match(err.text(), /usage: logship-test --config/);
  });

  it('prints the effective config with secrets redacted', () => {
    const file = join(dir, 'secret.yaml');
    writeFileSync(file, 'brokers: [k:9092]\n');
    const out = capture();
    const outcome = parseCli({ binary: 'logship-test', schema, argv: ['-c', file, '--print-config'], env: { LOGSHIP_PASSWORD__VALUE: 'hunter2' }, stdout: out.stream });
    assert.deepEqual(outcome, { kind: 'exit', code: 0 });
    assert.doesNotMatch(out.text(), /hunter2/);
    assert.deepEqual(JSON.parse(out.text()), { port: 9102, brokers: ['k:9092'], password: { value: '[redacted]' } });
  });
});

describe('logship-agent binary', () => {
  it('exits 2 on a bad config, listing every problem by path, before touching any server', async () => {
    const { spawnSync } = await import('node:child_process');
    const file = join(dir, 'agent-bad.yaml');
    writeFileSync(file, 'cluster: "bad name!"\nkafka:\n  brokers: [nohost]\n  lingerMs: -5\nfiles:\n  readBufferBytes: 12\nsurprise: true\n');
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'agent/main.ts', '--config', file], {
      encoding: 'utf8',
      env: { ...process.env, LOGSHIP_NODE_NAME: '', LOGSHIP_KAFKA__MAX_BATCH_BYTES: 'lots' },
      timeout: 60_000,
    });
    assert.equal(result.status, EXIT_CONFIG, result.stderr);
    for (const path of ['cluster', 'nodeName', 'kafka.brokers[0]', 'kafka.lingerMs', 'files.readBufferBytes', 'surprise', 'kafka.maxBatchBytes']) {
      assert.ok(result.stderr.includes(`- ${path}: `), `${path} missing from:\n${result.stderr}`);
    }
    assert.match(result.stderr, /from LOGSHIP_KAFKA__MAX_BATCH_BYTES/);
  });
});

describe('logship-aggregator binary', () => {
  it('exits 2 on a bad config, listing every problem by path, before touching any server', async () => {
    const { spawnSync } = await import('node:child_process');
    const file = join(dir, 'aggregator-bad.yaml');
    writeFileSync(
      file,
      [
        'kafka:',
        '  brokers: [k:9092]',
        '  topicPattern: "([unclosed"',
        '  heartbeatIntervalMs: 20000',
        'sinks:',
        '  - name: archive',
        '    type: s3',
        '  - name: archive',
        '    type: elasticsearch',
        '    elasticsearch: { connection: { nodes: [not-a-url] } }',
        '    s3: { bucket: b }',
        '',
      ].join('\n'),
    );
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'aggregator/main.ts', '--config', file], {
      encoding: 'utf8',
      env: { ...process.env, LOGSHIP_SINKS__0__BATCH__MAX_AGE_MS: 'soon' },
      timeout: 60_000,
    });
    assert.equal(result.status, EXIT_CONFIG, result.stderr);
    for (const path of ['kafka.topicPattern', 'kafka.heartbeatIntervalMs', 'sinks[0].s3', 'sinks[1].name', 'sinks[1].elasticsearch.connection.nodes[0]', 'sinks[1].s3', 'sinks[0].batch.maxAgeMs']) {
      assert.ok(result.stderr.includes(`- ${path}: `), `${path} missing from:\n${result.stderr}`);
    }
  });

  it('prints the Athena table for a bucket and prefix', async () => {
    const { spawnSync } = await import('node:child_process');
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'aggregator/main.ts', 'athena-ddl', '--bucket', 'acme-logs', '--prefix', 'prod/logs'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /CREATE EXTERNAL TABLE/);
    assert.match(result.stdout, /s3:\/\/acme-logs\/prod\/logs\/cluster=\$\{cluster\}\/namespace=\$\{namespace\}\/dt=\$\{dt\}\/hour=\$\{hour\}/);
  });
});

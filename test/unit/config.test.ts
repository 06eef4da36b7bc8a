import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { csvList, formatPath, loadConfig } from '../../shared/config.js';
import { renderConfigReference } from '../../shared/config-reference.js';
import { ConfigError, ErrorCode } from '../../shared/errors.js';
import { secretSchema } from '../../shared/secrets.js';

const schema = z
  .strictObject({
    logLevel: z.enum(['debug', 'info', 'warn']).default('info').describe('Log level.'),
    kafka: z
      .strictObject({
        brokers: csvList(z.string()).pipe(z.array(z.string()).min(1)).describe('Brokers.'),
        clientId: z.string().default('logship'),
        tls: z.strictObject({ enabled: z.boolean().default(false) }).prefault({}),
        password: secretSchema.optional(),
      })
      .describe('Kafka connection.'),
    sinks: z
      .array(z.strictObject({ name: z.string(), flushIntervalMs: z.number().int().min(100).default(1000), maxBatchBytes: z.number().int().positive().default(1_048_576) }))
      .default([]),
    labels: z.record(z.string(), z.string()).default({}),
  })
  .superRefine((c, ctx) => {
    const names = new Set<string>();
    c.sinks.forEach((s, i) => {
      if (names.has(s.name)) ctx.addIssue({ code: 'custom', path: ['sinks', i, 'name'], message: `duplicate sink name "${s.name}"` });
      names.add(s.name);
    });
  });

const dir = mkdtempSync(join(tmpdir(), 'logship-config-'));
let n = 0;
function yamlFile(text: string): string {
  const file = join(dir, `c${n++}.yaml`);
  writeFileSync(file, text);
  return file;
}

function problemsOf(fn: () => unknown): { path: string; message: string; source?: string }[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return [...error.problems];
  }
  assert.fail('expected a ConfigError');
}

describe('loadConfig', () => {
  it('reads a good file and fills defaults', () => {
    const file = yamlFile('kafka:\n  brokers: [a:9092, b:9092]\nsinks:\n  - name: s3\n    flushIntervalMs: 500\n');
    const config = loadConfig(schema, { file, env: {} });
    assert.deepEqual(config, {
      logLevel: 'info',
      kafka: { brokers: ['a:9092', 'b:9092'], clientId: 'logship', tls: { enabled: false } },
      sinks: [{ name: 's3', flushIntervalMs: 500, maxBatchBytes: 1_048_576 }],
      labels: {},
    });
  });

  it('applies LOGSHIP_ environment overrides by path, typed by the schema', () => {
    const file = yamlFile('kafka:\n  brokers: [a:9092]\nsinks:\n  - name: s3\n');
    const config = loadConfig(schema, {
      file,
      env: {
        LOGSHIP_LOG_LEVEL: 'debug',
        LOGSHIP_KAFKA__BROKERS: 'x:1,y:2',
        LOGSHIP_KAFKA__TLS__ENABLED: 'true',
        LOGSHIP_SINKS__0__FLUSH_INTERVAL_MS: '250',
        LOGSHIP_KAFKA__PASSWORD__VALUE: '12345',
        LOGSHIP_LABELS: '{team: payments}',
        UNRELATED: 'ignored',
      },
    });
    assert.equal(config.logLevel, 'debug');
    assert.deepEqual(config.kafka.brokers, ['x:1', 'y:2']);
    assert.equal(config.kafka.tls.enabled, true);
    assert.equal(config.sinks[0]?.flushIntervalMs, 250);
    // A secret that looks like a number stays the exact string it was.
    assert.equal(config.kafka.password?.value, '12345');
    assert.deepEqual(config.labels, { team: 'payments' });
  });

  it('works from the environment alone, without a file', () => {
    const config = loadConfig(schema, { env: { LOGSHIP_KAFKA__BROKERS: 'k:9092' } });
    assert.deepEqual(config.kafka.brokers, ['k:9092']);
  });

  it('rejects unknown keys at every depth, by path', () => {
    const file = yamlFile('kafka:\n  brokers: [a:1]\n  brokrs: [b:1]\nsinks:\n  - name: s3\n    flushIntervalMS: 5\nextra: 1\n');
    const problems = problemsOf(() => loadConfig(schema, { file, env: {} }));
    assert.deepEqual(
      problems.map((p) => [p.path, p.message]).sort(),
      [
        ['extra', 'unknown setting'],
        ['kafka.brokrs', 'unknown setting'],
        ['sinks[0].flushIntervalMS', 'unknown setting'],
      ],
    );
    assert.ok(problems.every((p) => p.source === file));
  });

  it('lists every problem at once: wrong types, bounds, missing values, cross-field rules', () => {
    const file = yamlFile(
      'logLevel: loud\nkafka:\n  clientId: 7\nsinks:\n  - name: a\n    flushIntervalMs: 5\n  - name: a\n    maxBatchBytes: -1\n',
    );
    const error = (() => {
      try {
        loadConfig(schema, { file, env: {} });
      } catch (e) {
        return e as ConfigError;
      }
      return undefined;
    })();
    assert.ok(error instanceof ConfigError);
    assert.equal(error.code, ErrorCode.CONFIG_INVALID);
    const paths = error.problems.map((p) => p.path).sort();
    assert.deepEqual(paths, ['kafka.brokers', 'kafka.clientId', 'logLevel', 'sinks[0].flushIntervalMs', 'sinks[1].maxBatchBytes']);
    assert.match(error.message, /5 problems/);
    assert.match(error.message, /sinks\[0\]\.flushIntervalMs: .*>=100/);
    assert.match(error.message, /- kafka\.brokers: required \(array\)/);
  });

  it('checks cross-field rules once the shape is right', () => {
    const file = yamlFile('kafka:\n  brokers: [a:1]\nsinks:\n  - name: a\n  - name: a\n');
    const problems = problemsOf(() => loadConfig(schema, { file, env: {} }));
    assert.deepEqual(problems.map((p) => [p.path, p.message]), [['sinks[1].name', 'duplicate sink name "a"']]);
  });

  it('names the environment variable behind a bad or unknown override', () => {
    const file = yamlFile('kafka:\n  brokers: [a:1]\n');
    const problems = problemsOf(() =>
      loadConfig(schema, { file, env: { LOGSHIP_KAFKA__TLS__ENABLED: 'maybe', LOGSHIP_SINKS__0__FLUSH_INTERVAL_MS: 'soon', LOGSHIP_KAFAK__BROKERS: 'x:1' } }),
    );
    assert.deepEqual(
      problems.map((p) => [p.path, p.source]).sort(),
      [
        ['kafak', 'LOGSHIP_KAFAK__BROKERS'],
        ['kafka.tls.enabled', 'LOGSHIP_KAFKA__TLS__ENABLED'],
        ['sinks[0].flushIntervalMs', 'LOGSHIP_SINKS__0__FLUSH_INTERVAL_MS'],
      ],
    );
    assert.match(problems.find((p) => p.path === 'kafka.tls.enabled')?.message ?? '', /true or false/);
  });

  it('reports YAML syntax errors with their line', () => {
    const file = yamlFile('kafka:\n  brokers: [a:1\nsinks: []\n');
    const problems = problemsOf(() => loadConfig(schema, { file, env: {} }));
    assert.ok(problems.length >= 1);
    assert.match(problems[0]?.message ?? '', /line \d+/);
  });

  it('rejects a file that is not a mapping', () => {
    const file = yamlFile('- a\n- b\n');
    const problems = problemsOf(() => loadConfig(schema, { file, env: { LOGSHIP_KAFKA__BROKERS: 'a:1' } }));
    assert.deepEqual(problems.map((p) => p.message), ['the file must hold a mapping of settings, not a list']);
  });

  it('says so when the file is missing', () => {
    try {
      loadConfig(schema, { file: join(dir, 'nope.yaml'), env: {} });
      assert.fail('expected an error');
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.code, ErrorCode.CONFIG_UNREADABLE);
      assert.match(error.message, /file not found/);
    }
  });

  it('rejects both forms of a secret at once', () => {
    const file = yamlFile('kafka:\n  brokers: [a:1]\n  password:\n    value: x\n    file: /etc/x\n');
    const problems = problemsOf(() => loadConfig(schema, { file, env: {} }));
    assert.deepEqual(problems.map((p) => [p.path, p.message]), [['kafka.password', 'set either value or file, not both']]);
  });
});

describe('formatPath', () => {
  it('writes array indices in brackets', () => {
    assert.equal(formatPath(['sinks', 1, 'flushIntervalMs']), 'sinks[1].flushIntervalMs');
    assert.equal(formatPath([]), '');
  });
});

describe('renderConfigReference', () => {
  it('lists every setting with its default, env name and description', () => {
    const doc = renderConfigReference('Test', schema);
    assert.match(doc, /\| `logLevel` \| "debug" \\\| "info" \\\| "warn" \| `"info"` \| `LOGSHIP_LOG_LEVEL` \| Log level\. \|/);
    assert.match(doc, /`kafka\.clientId` .* `LOGSHIP_KAFKA__CLIENT_ID`/);
    assert.match(doc, /`sinks\[\]\.flushIntervalMs` \| integer \(>= 100.*`1000`/);
  });
});

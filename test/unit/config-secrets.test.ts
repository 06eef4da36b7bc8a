/**
 * Every secret setting of both binaries, found from their schemas (not a hand-kept list), is redacted
 * in `--print-config` and never appears in a configuration error, whether it came from the file or
 * from a `LOGSHIP_…__VALUE` override.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { stringify } from 'yaml';
import type { z } from 'zod';
import { agentConfigSchema } from '../../agent/config.js';
import { aggregatorConfigSchema } from '../../aggregator/config.js';
import { parseCli } from '../../shared/cli.js';
import { secretPaths, type SecretPath } from '../../shared/config-secrets.js';

const dir = mkdtempSync(join(tmpdir(), 'logship-secrets-'));

/** A minimal valid config per binary, with every list and map holding one item so every secret has a place. */
const BASES: Record<string, { schema: z.ZodType; config: Record<string, unknown> }> = {
  agent: { schema: agentConfigSchema, config: { kafka: { brokers: ['127.0.0.1:9092'] }, cluster: 'c', nodeName: 'n' } },
  aggregator: {
    schema: aggregatorConfigSchema,
    config: {
      kafka: { brokers: ['127.0.0.1:9092'], topics: ['logs'] },
      sinks: [
        { name: 's3', type: 's3', s3: { bucket: 'logs-bucket' } },
        { name: 'es', type: 'elasticsearch', elasticsearch: { connection: { nodes: ['http://127.0.0.1:9200'] } } },
      ],
    },
  },
};

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { stream, text: () => text };
}

/** The concrete path of a secret in the base config (first list item, a map key `k`), or undefined. */
function concrete(path: SecretPath, config: Record<string, unknown>): (string | number)[] | undefined {
  const out: (string | number)[] = [];
  for (const part of path) {
    if (part === '[]') out.push(0);
    else if (part === '*') out.push('k');
    else out.push(part);
  }
  // Only secrets whose parents the base config holds (a list item of the right type).
  let node: unknown = config;
  for (const part of out.slice(0, -2)) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[part];
  }
  return node === undefined ? undefined : out;
}

function set(target: Record<string, unknown>, path: (string | number)[], value: unknown): void {
  let node: Record<string | number, unknown> = target;
  for (const part of path.slice(0, -1)) {
    node[part] ??= {};
    node = node[part] as Record<string | number, unknown>;
  }
  node[path.at(-1) as string | number] = value;
}

const envName = (path: (string | number)[]): string =>
  `LOGSHIP_${path.map((p) => String(p).replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('__')}__VALUE`;

describe('secret settings', () => {
  for (const [binary, { schema, config }] of Object.entries(BASES)) {
    it(`${binary}: every secret is found in the schema and redacted in --print-config and errors`, () => {
      const paths = secretPaths(schema);
      assert.ok(paths.length >= (binary === 'aggregator' ? 4 : 1), `${binary} has secret settings: ${JSON.stringify(paths)}`);
      for (const path of paths) {
        const where = concrete(path, config);
        if (where === undefined) continue;
        const fromFile = `file-${randomToken()}`;
        const fromEnv = `env-${randomToken()}`;
        for (const [source, sentinel] of [['file', fromFile], ['env', fromEnv]] as const) {
          const doc = structuredClone(config);
          const env: NodeJS.ProcessEnv = {};
          // The settings a secret goes with (a SASL user and mechanism, an access key id, a user name).
          const parent = where.slice(0, -1);
          const key = where.at(-1);
          if (parent.at(-1) === 'sasl') {
            set(doc, [...parent, 'mechanism'], 'plain');
            set(doc, [...parent, 'username'], 'u');
          }
          if (key === 'secretAccessKey') set(doc, [...parent, 'accessKeyId'], 'AKIDEXAMPLE');
          if (key === 'password' && parent.at(-1) !== 'sasl') set(doc, [...parent, 'username'], 'u');
          if (source === 'file') set(doc, [...where, 'value'], sentinel);
          else env[envName(where)] = sentinel;
          const file = join(dir, `${binary}-${where.join('.')}-${source}.yaml`);
          writeFileSync(file, stringify(doc));
          const out = capture();
          const printed = parseCli({ binary, schema, argv: ['--config', file, '--print-config'], env, stdout: out.stream, stderr: out.stream });
          assert.deepEqual(printed, { kind: 'exit', code: 0 }, `${where.join('.')} from ${source}: ${out.text()}`);
          assert.ok(!out.text().includes(sentinel), `${where.join('.')} from ${source} printed in clear`);
          assert.match(out.text(), /\[redacted\]/);
          // An error elsewhere, plus a bad value next to the secret: the message must not quote it.
          set(doc, ['logLevel'], sentinel);
          writeFileSync(file, stringify(doc));
          const err = capture();
          parseCli({ binary, schema, argv: ['--config', file], env: { ...env, LOGSHIP_LOG_LEVEL: sentinel }, stdout: err.stream, stderr: err.stream });
          assert.match(err.text(), /logLevel/);
          assert.ok(!err.text().includes(sentinel), `${where.join('.')} from ${source} in an error: ${err.text()}`);
        }
      }
    });
  }

  it('finds the aggregator\'s S3 secret key (it was printed in clear before)', () => {
    assert.ok(secretPaths(aggregatorConfigSchema).some((p) => p.join('.') === 'sinks.[].s3.connection.secretAccessKey'));
  });
});

function randomToken(): string {
  return Math.random().toString(36).slice(2, 12);
}

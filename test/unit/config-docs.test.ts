import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { z } from 'zod';
import { agentConfigSchema } from '../../agent/config.js';
import { aggregatorConfigSchema } from '../../aggregator/config.js';
import { envNameFor, MAP_KEY_PLACEHOLDER } from '../../shared/config-reference.js';
import { AGENT_EXAMPLE_YAML, AGGREGATOR_EXAMPLE_YAML, CONFIG_DOC_PATH, renderConfigurationDoc } from '../../scripts/gen-config-docs.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const GENERATOR = join(REPO_ROOT, 'scripts', 'gen-config-docs.ts');

/**
 * Every leaf setting path of a schema, found by walking the zod schema itself (not the JSON Schema the
 * renderer uses), so a setting the renderer skipped is noticed. List items are `name[]`, map values
 * `name.<key>`.
 */
function leafPaths(schema: z.ZodType, path: string[] = []): string[] {
  if (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable || schema instanceof z.ZodDefault || schema instanceof z.ZodPrefault) {
    return leafPaths(schema.unwrap() as z.ZodType, path);
  }
  if (schema instanceof z.ZodPipe) {
    // A preprocess step is a pipe from a transform into the schema that validates.
    return leafPaths((schema.in instanceof z.ZodTransform ? schema.out : schema.in) as z.ZodType, path);
  }
  if (schema instanceof z.ZodObject) {
    return Object.entries(schema.shape as Record<string, z.ZodType>).flatMap(([key, child]) => leafPaths(child, [...path, key]));
  }
  if (schema instanceof z.ZodRecord) {
    const inner = leafPaths(schema.valueType as z.ZodType, [...path, MAP_KEY_PLACEHOLDER]);
    // A map of plain values is itself the leaf.
    return inner.length === 1 && inner[0] === [...path, MAP_KEY_PLACEHOLDER].join('.') ? [path.join('.')] : inner;
  }
  if (schema instanceof z.ZodArray) {
    const element = schema.element as z.ZodType;
    const last = path.at(-1) ?? '';
    const inner = leafPaths(element, [...path.slice(0, -1), `${last}[]`]);
    return inner.length === 1 && inner[0] === [...path.slice(0, -1), `${last}[]`].join('.') ? [path.join('.')] : inner;
  }
  return [path.join('.')];
}

function runGenerator(args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, ['--import', 'tsx', GENERATOR, ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('docs/configuration.md', () => {
  const dir = mkdtempSync(join(tmpdir(), 'logship-config-docs-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is exactly what the generator produces from the schemas now (run `npm run docs:config`)', () => {
    const onDisk = readFileSync(CONFIG_DOC_PATH, 'utf8');
    assert.equal(onDisk, renderConfigurationDoc());
  });

  it('documents every leaf setting of the agent schema, with its environment variable', () => {
    const doc = readFileSync(CONFIG_DOC_PATH, 'utf8');
    const agentPart = doc.slice(doc.indexOf('\n## Agent\n'), doc.indexOf('\n## Aggregator\n'));
    const leaves = leafPaths(agentConfigSchema);
    assert.ok(leaves.length > 50, `found only ${leaves.length} settings`);
    for (const path of ['kafka.sasl.password.file', 'parse.multiline.containers.<key>.startPattern', 'files.namespaces.exclude', 'shutdown.timeoutMs']) {
      assert.ok(leaves.includes(path), `walker missed ${path}`);
    }
    const missing = leaves.filter((path) => !agentPart.includes(`| \`${path}\` |`) || !agentPart.includes(`\`${envNameFor(path)}\``));
    assert.deepEqual(missing, []);
  });

  it('documents both binaries, with minimal examples that validate', () => {
    const doc = readFileSync(CONFIG_DOC_PATH, 'utf8');
    assert.match(doc, /\n## Agent\n/);
    assert.match(doc, /\n## Aggregator\n/);
    assert.match(doc, /`sinks\[\]\.s3\.bucket`/);
    assert.ok(doc.includes(AGENT_EXAMPLE_YAML));
    assert.ok(doc.includes(AGGREGATOR_EXAMPLE_YAML));
    const agent = agentConfigSchema.safeParse(parse(AGENT_EXAMPLE_YAML));
    assert.ok(agent.success, agent.error?.message);
    const aggregator = aggregatorConfigSchema.safeParse(parse(AGGREGATOR_EXAMPLE_YAML));
    assert.ok(aggregator.success, aggregator.error?.message);
  });

  it('--check passes on the committed file and fails on a stale one', () => {
    const good = runGenerator(['--check']);
    assert.equal(good.status, 0, good.output);

    const stale = join(dir, 'configuration.md');
    writeFileSync(stale, readFileSync(CONFIG_DOC_PATH, 'utf8').replace('Level of the agent', 'Verbosity of the agent'));
    const bad = runGenerator(['--check', stale]);
    assert.equal(bad.status, 1, bad.output);
    assert.match(bad.output, /out of date/);

    const written = runGenerator([stale]);
    assert.equal(written.status, 0, written.output);
    assert.equal(readFileSync(stale, 'utf8'), renderConfigurationDoc());
  });
});

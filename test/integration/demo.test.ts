/**
 * `npm run demo` as a newcomer runs it: the real agent and two aggregators on the stack, synthetic pod
 * logs with partial lines and a rotation; exit 0, a last line of JSON saying every line written is
 * in S3 and in Elasticsearch and nothing was dead-lettered, and nothing of the run left behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DemoSummary } from '../../scripts/demo.js';
import { REPO_ROOT } from '../../scripts/stack/context.js';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { createKafka } from '../../shared/kafka.js';
import { countDocuments, readS3Objects, testS3Client } from '../helpers/aggregator.js';
import { elasticsearchConfig, kafkaConfig, testLogger } from '../helpers/stack.js';

/** The demo waits 5 min at most for its data; past this it is interrupted (it cleans up on SIGINT). */
const DEMO_TIMEOUT_MS = 8 * 60_000;

async function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'demo.ts')], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const interrupt = setTimeout(() => child.kill('SIGINT'), DEMO_TIMEOUT_MS);
  const kill = setTimeout(() => child.kill('SIGKILL'), DEMO_TIMEOUT_MS + 60_000);
  try {
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, stdout, stderr };
  } finally {
    clearTimeout(interrupt);
    clearTimeout(kill);
  }
}

describe('npm run demo', () => {
  it('ships every line written to S3 and Elasticsearch exactly once, dead-letters nothing, and cleans up after itself', async () => {
    const { code, stdout, stderr } = await runDemo();
    const context = `\n--- stdout (end)\n${stdout.slice(-4_000)}\n--- stderr (end)\n${stderr.slice(-2_000)}`;
    const lastLine = stdout.trimEnd().split('\n').at(-1) ?? '';
    let result: DemoSummary;
    try {
      result = JSON.parse(lastLine) as DemoSummary;
    } catch {
      assert.fail(`the demo's last line is not JSON: ${lastLine}${context}`);
    }
    assert.equal(code, 0, `the demo exits 0${context}`);
    assert.equal(result.ok, true);
    assert.ok(result.lines_written > 0, 'lines were written');
    assert.equal(result.kafka_records, result.lines_written, 'one Kafka record per line written');
    assert.equal(result.s3_rows, result.lines_written, 'one S3 row per line written');
    assert.equal(result.es_docs, result.lines_written, 'one Elasticsearch document per line written');
    assert.equal(result.dead_letters, 0, 'clean input: nothing dead-lettered');
    assert.equal(result.messages_intact, true, 'messages arrive as written, long lines merged back');
    assert.equal(result.enriched, 1, 'every record carries the pod labels from the API server');
    assert.ok(result.s3_objects > 0);
    assert.equal(result.kept, false);

    // Nothing of the run is left on the stack: no S3 objects, indices or topics.
    const s3 = testS3Client();
    const es = createElasticsearchClient(elasticsearchConfig());
    const admin = createKafka(kafkaConfig({ clientId: 'logship-it-demo' }), testLogger()).admin();
    try {
      assert.deepEqual(await readS3Objects(s3, result.run_id), [], 'the run\'s S3 prefix is empty');
      assert.equal(await countDocuments(es, `${result.run_id}-*`), 0, 'the run\'s indices are gone');
      await admin.connect();
      assert.deepEqual((await admin.listTopics()).filter((t) => t.includes(result.run_id)), [], 'the run\'s topics are gone');
    } finally {
      s3.destroy();
      await es.close();
      await admin.disconnect();
    }
  });
});

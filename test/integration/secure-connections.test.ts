/**
 * Agent and aggregator through Kafka's TLS + SASL/SCRAM listener (certificate signed by the stack's
 * CA), with the S3 secret from the environment and the SASL password from a file: lines land in S3,
 * and no secret appears anywhere in either binary's output, at debug level, including a failed login.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import { agentConfigFile, appendLines, cri, makeRoot, podDir, startAgentProcess } from '../helpers/agent.js';
import { deleteS3Prefix, readS3Objects, RecordProducer, startAggregatorProcess, testS3Client } from '../helpers/aggregator.js';
import type { LogshipProcess } from '../helpers/process.js';
import { stack, uniqueName, waitFor } from '../helpers/stack.js';

const LINES = 500;

describe('secure connections: Kafka TLS + SASL/SCRAM, secrets never logged', () => {
  const name = uniqueName('it-secure');
  const topic = `${name}.ns-sec`;
  const producer = new RecordProducer();
  const processes: LogshipProcess[] = [];
  let s3: S3Client;
  const secure = stack().kafka.secure;
  const saslPassword = readFileSync(secure.passwordFile, 'utf8').trim();
  const s3Secret = readFileSync(stack().s3.secretAccessKeyFile, 'utf8').trim();

  function secureKafka(passwordFile: string): Record<string, unknown> {
    return {
      brokers: secure.brokers,
      tls: { enabled: true, caFile: secure.caFile },
      sasl: { mechanism: secure.mechanism, username: secure.username, password: { file: passwordFile } },
    };
  }

  before(async () => {
    s3 = testS3Client();
    await producer.connect();
    await producer.createTopics([{ topic, partitions: 2 }]);
  });

  after(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await producer.deleteTopics([topic, `${name}-deadletter`]);
    await producer.close();
    await deleteS3Prefix(s3, name);
    s3.destroy();
  });

  it('ships through the secure listener and keeps every secret out of the logs', async () => {
    const root = makeRoot();
    const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
    const agentConfig = agentConfigFile({
      root,
      stateDir,
      topicPrefix: name,
      extra: { logLevel: 'debug', kafka: { ...secureKafka(secure.passwordFile), clientId: 'logship-agent-secure', topicTemplate: `${name}.{namespace}` } },
    });
    const s3Endpoint = stack().s3;
    const aggregatorConfig = join(mkdtempSync(join(tmpdir(), 'logship-aggregator-config-')), 'aggregator.yaml');
    writeFileSync(
      aggregatorConfig,
      stringify({
        logLevel: 'debug',
        ops: { host: '127.0.0.1', port: 0 },
        kafka: { ...secureKafka(secure.passwordFile), groupId: `${name}-group`, topics: [topic], maxWaitTimeMs: 100, commitIntervalMs: 500 },
        deadLetter: { topic: `${name}-deadletter` },
        sinks: [
          {
            name: 'archive',
            type: 's3',
            batch: { maxAgeMs: 500 },
            // The secret key comes from the environment (LOGSHIP_SINKS__0__S3__CONNECTION__SECRET_ACCESS_KEY__VALUE).
            s3: { bucket: s3Endpoint.bucket, prefix: name, connection: { endpoint: s3Endpoint.endpoint, forcePathStyle: true, accessKeyId: s3Endpoint.accessKeyId } },
          },
        ],
      }),
    );
    const agent = startAgentProcess(agentConfig);
    const aggregator = startAggregatorProcess(aggregatorConfig, { LOGSHIP_SINKS__0__S3__CONNECTION__SECRET_ACCESS_KEY__VALUE: s3Secret });
    processes.push(agent, aggregator);
    await Promise.all([agent.opsUrl, aggregator.opsUrl]);

    const file = join(podDir(root, 'ns-sec', 'pod-1', '11111111-2222-4333-8444-555555555555', 'app').dir, '0.log');
    appendLines(file, Array.from({ length: LINES }, (_, i) => cri(`secure line ${String(i)}`)));
    await waitFor(`${String(LINES)} rows in S3 through TLS + SCRAM`, async () => (await readS3Objects(s3, name)).reduce((n, o) => n + o.lines.length, 0) >= LINES, 90_000, 500);

    // A wrong password: the login fails, visibly, without the password in the output.
    const wrongFile = join(mkdtempSync(join(tmpdir(), 'logship-wrong-')), 'password');
    const wrongPassword = `wrong-${uniqueName('pw')}`;
    writeFileSync(wrongFile, wrongPassword);
    const badAgent = startAgentProcess(
      agentConfigFile({ root: makeRoot(), stateDir: mkdtempSync(join(tmpdir(), 'logship-agent-state-')), topicPrefix: name, extra: { logLevel: 'debug', kafka: { ...secureKafka(wrongFile), topicTemplate: `${name}.{namespace}` } } }),
    );
    processes.push(badAgent);
    await waitFor('the failed SASL login in the agent\'s output', () => /SASL|authentication/i.test(badAgent.logs()), 60_000, 200);

    assert.equal(await agent.stop(), 0);
    assert.equal(await aggregator.stop(), 0);
    await badAgent.stop();
    const output = [agent.logs(), aggregator.logs(), badAgent.logs()].join('\n');
    assert.match(output, /agent started/);
    assert.match(output, /aggregator started/);
    for (const [what, secret] of [
      ['SASL password', saslPassword],
      ['S3 secret key', s3Secret],
      ['wrong SASL password', wrongPassword],
    ] as const) {
      assert.ok(!output.includes(secret), `${what} appears in the logs`);
    }
  });
});

/**
 * scripts/images.ts reads the image config (ENV, WORKDIR, USER, EXPOSE, ENTRYPOINT, CMD) from the
 * Dockerfile, following each target stage's FROM chain: the assembled images must match it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dockerfileImageConfig } from '../../../scripts/images.js';

describe('dockerfileImageConfig', () => {
  it("reads the project's Dockerfile: agent and aggregator on the runtime stage", () => {
    const agent = dockerfileImageConfig('agent');
    assert.deepEqual(agent, {
      env: { NODE_ENV: 'production', KAFKAJS_NO_PARTITIONER_WARNING: '1' },
      workingDir: '/app',
      user: '65532:65532',
      exposedPorts: ['9102/tcp'],
      entrypoint: ['node', '/app/agent.mjs'],
      cmd: ['--config', '/etc/logship/config/agent.yaml'],
    });
    const aggregator = dockerfileImageConfig('aggregator');
    assert.deepEqual(aggregator.entrypoint, ['node', '/app/aggregator.mjs']);
    assert.deepEqual(aggregator.cmd, ['--config', '/etc/logship/config/aggregator.yaml']);
    assert.deepEqual(aggregator.exposedPorts, ['9103/tcp']);
    assert.equal(aggregator.user, '65532:65532');
  });

  it('takes the nearest stage’s value, joins continued lines and ignores the build stage', () => {
    const dockerfile = [
      'ARG NODE_IMAGE=node:22.1.0-slim',
      'FROM ${NODE_IMAGE} AS build',
      'ENV BUILD_ONLY=1',
      'USER 1000',
      'FROM ${NODE_IMAGE} AS runtime',
      'ENV A=1 \\',
      '    B="two words"',
      'WORKDIR /srv',
      'USER 10',
      'FROM runtime AS app',
      '# a comment',
      'USER 20:20',
      'EXPOSE 80 53/udp',
      'ENTRYPOINT ["node", "main.js"]',
      '',
    ].join('\n');
    assert.deepEqual(dockerfileImageConfig('app', dockerfile), {
      env: { A: '1', B: 'two words' },
      workingDir: '/srv',
      user: '20:20',
      exposedPorts: ['80/tcp', '53/udp'],
      entrypoint: ['node', 'main.js'],
      cmd: [],
    });
    assert.throws(() => dockerfileImageConfig('missing', dockerfile), /no stage named missing/);
  });
});

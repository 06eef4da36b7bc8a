import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '../../../agent/config.js';

const BASE = { cluster: 'c', nodeName: 'n', kafka: { brokers: ['127.0.0.1:9092'] } };

describe('agent config: idle', () => {
  it('defaults: reclaim after 5 s, page out after 30 s and again every 5 min of quiet', () => {
    const config = agentConfigSchema.parse(BASE);
    assert.deepEqual(config.idle, { reclaimAfterMs: 5_000, pageOutAfterMs: 30_000, pageOutRepeatMs: 300_000 });
  });

  it('turns the page-out or its repetition off with 0', () => {
    assert.equal(agentConfigSchema.safeParse({ ...BASE, idle: { pageOutAfterMs: 0, pageOutRepeatMs: 0 } }).success, true);
  });

  it('rejects a page-out (or its repetition) sooner than the release it follows, naming each field', () => {
    const result = agentConfigSchema.safeParse({ ...BASE, idle: { reclaimAfterMs: 5_000, pageOutAfterMs: 1_000, pageOutRepeatMs: 10 } });
    assert.equal(result.success, false);
    assert.deepEqual(result.error.issues.map((issue) => issue.path.join('.')).sort(), ['idle.pageOutAfterMs', 'idle.pageOutRepeatMs']);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { recordFilter, routingSchema } from '../../../aggregator/routing.js';
import type { RecordFields } from '../../../aggregator/sink.js';

function fields(namespace: string, cluster = 'prod'): RecordFields {
  return { timeMs: 0, eventId: 'e', cluster, namespace, pod: 'p', container: 'c' };
}

describe('recordFilter', () => {
  it('takes everything when no rule is set', () => {
    assert.equal(recordFilter(routingSchema.parse({})), undefined);
  });

  it('applies namespace include and exclude globs, exclude winning', () => {
    const filter = recordFilter(routingSchema.parse({ namespaces: { include: ['pay*', 'web'], exclude: ['payments-canary'] } }));
    assert.ok(filter);
    assert.equal(filter(fields('payments')), true);
    assert.equal(filter(fields('web')), true);
    assert.equal(filter(fields('payments-canary')), false);
    assert.equal(filter(fields('kube-system')), false);
  });

  it('combines namespace and cluster rules', () => {
    const filter = recordFilter(routingSchema.parse({ clusters: { exclude: ['staging-*'] } }));
    assert.ok(filter);
    assert.equal(filter(fields('a', 'prod')), true);
    assert.equal(filter(fields('a', 'staging-1')), false);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  defaultStatePrefix,
  EMPTY_PARTITION_VALUE,
  escapePartitionValue,
  hourIndex,
  incarnationObjectKey,
  locationTemplate,
  objectKey,
  PARTITION_COLUMNS,
  partitionPath,
  partitionValues,
  stateKey,
  legacyStateKey,
  tableLocation,
  timePartition,
} from '../../../aggregator/s3-layout.js';

const at = (iso: string): number => Date.parse(iso);

describe('timePartition', () => {
  it('takes the UTC day and hour, zero-padded', () => {
    assert.deepEqual(timePartition(at('2026-11-22T04:17:19.123Z')), { dt: '2026-11-22', hour: '04' });
    assert.deepEqual(timePartition(at('2026-01-05T23:00:00Z')), { dt: '2026-01-05', hour: '23' });
  });

  it('puts the last millisecond of an hour in that hour and the next one in the next', () => {
    assert.deepEqual(timePartition(at('2026-11-22T04:59:59.999Z')), { dt: '2026-11-22', hour: '04' });
    assert.deepEqual(timePartition(at('2026-11-22T05:00:00.000Z')), { dt: '2026-11-22', hour: '05' });
  });

  it('changes the day at UTC midnight, whatever the local offset of the timestamp was', () => {
    assert.deepEqual(timePartition(at('2026-11-22T23:59:59.999Z')), { dt: '2026-11-22', hour: '23' });
    assert.deepEqual(timePartition(at('2026-11-23T00:00:00.000Z')), { dt: '2026-11-23', hour: '00' });
    // 08:30 in Seoul is 23:30 the day before in UTC.
    assert.deepEqual(timePartition(at('2026-11-23T08:30:00+09:00')), { dt: '2026-11-22', hour: '23' });
    assert.deepEqual(timePartition(at('2026-12-31T23:59:59.999Z')), { dt: '2026-12-31', hour: '23' });
    assert.deepEqual(timePartition(at('2027-01-01T00:00:00Z')), { dt: '2027-01-01', hour: '00' });
    assert.deepEqual(timePartition(at('2028-02-29T12:00:00Z')), { dt: '2028-02-29', hour: '12' });
  });

  it('has no partition for times without a 4-digit year', () => {
    assert.equal(timePartition(Number.NaN), undefined);
    assert.equal(timePartition(Number.POSITIVE_INFINITY), undefined);
    assert.equal(timePartition(Date.UTC(10_000, 0, 1)), undefined);
    assert.equal(timePartition(-62_167_219_200_001), undefined);
    assert.deepEqual(timePartition(-62_167_219_200_000), { dt: '0000-01-01', hour: '00' });
    assert.deepEqual(timePartition(0), { dt: '1970-01-01', hour: '00' });
  });

  it('groups by hour index exactly as it names hours', () => {
    const t = at('2026-11-22T04:59:59.999Z');
    assert.equal(hourIndex(t), hourIndex(at('2026-11-22T04:00:00Z')));
    assert.equal(hourIndex(t) + 1, hourIndex(t + 1));
    assert.equal(hourIndex(-1), -1, 'floor, not truncation, before the epoch');
  });
});

describe('escapePartitionValue', () => {
  it('keeps DNS-like names as they are', () => {
    for (const v of ['payments', 'kube-system', 'prod-apne2', 'a.b_c-1', 'UPPER']) assert.equal(escapePartitionValue(v), v);
  });

  it('percent-encodes path separators, key=value signs and everything else outside [A-Za-z0-9._-]', () => {
    assert.equal(escapePartitionValue('a/b'), 'a%2Fb');
    assert.equal(escapePartitionValue('x=y'), 'x%3Dy');
    assert.equal(escapePartitionValue('50%'), '50%25');
    assert.equal(escapePartitionValue('a b+c'), 'a%20b%2Bc');
    assert.equal(escapePartitionValue('../..'), '..%2F..');
    assert.equal(escapePartitionValue('é'), '%C3%A9');
    assert.equal(escapePartitionValue('日'), '%E6%97%A5');
    assert.equal(escapePartitionValue('\n'), '%0A');
  });

  it('is injective on the inputs that matter: an escaped value never looks like another raw one', () => {
    assert.notEqual(escapePartitionValue('a%2Fb'), escapePartitionValue('a/b'));
    assert.equal(escapePartitionValue(''), EMPTY_PARTITION_VALUE);
  });
});

describe('object and state keys', () => {
  const values = partitionValues({ cluster: 'prod-apne2', namespace: 'payments', timeMs: at('2026-11-22T04:17:19.123Z') });

  it('follows the DESIGN layout, without zero-padding offsets', () => {
    assert.ok(values);
    assert.equal(
      objectKey('logs', values, 'logs.prod-apne2.payments', 3, 1200),
      'logs/cluster=prod-apne2/namespace=payments/dt=2026-11-22/hour=04/logs.prod-apne2.payments+3+1200.ndjson.gz',
    );
    assert.equal(objectKey('', values, 't', 0, 0), 'cluster=prod-apne2/namespace=payments/dt=2026-11-22/hour=04/t+0+0.ndjson.gz');
    assert.equal(objectKey('a/b', values, 't', 0, 7), 'a/b/cluster=prod-apne2/namespace=payments/dt=2026-11-22/hour=04/t+0+7.ndjson.gz');
  });

  it('names the topic\'s incarnation in the alternate key, in the same folder', () => {
    assert.ok(values);
    const key = objectKey('logs', values, 't', 3, 1200);
    assert.equal(incarnationObjectKey(key, '4d0c6f1e-8a7b-4c2d-9e3f-0a1b2c3d4e5f'), 'logs/cluster=prod-apne2/namespace=payments/dt=2026-11-22/hour=04/t+3+1200+4d0c6f1e-8a7b-4c2d-9e3f-0a1b2c3d4e5f.ndjson.gz');
    assert.equal(incarnationObjectKey(key, 'a/b'), 'logs/cluster=prod-apne2/namespace=payments/dt=2026-11-22/hour=04/t+3+1200+a%2Fb.ndjson.gz');
  });

  it('cannot be steered by hostile partition values: the path keeps exactly four levels', () => {
    const hostile = partitionValues({ cluster: 'c/../../x', namespace: 'ns/dt=1999-01-01', timeMs: 0 });
    assert.ok(hostile);
    const path = partitionPath(hostile);
    assert.equal(path, 'cluster=c%2F..%2F..%2Fx/namespace=ns%2Fdt%3D1999-01-01/dt=1970-01-01/hour=00');
    assert.equal(path.split('/').length, PARTITION_COLUMNS.length);
  });

  it('keeps state beside the partition folders', () => {
    assert.equal(defaultStatePrefix('logs'), 'logs/_state');
    assert.equal(defaultStatePrefix(''), '_state');
    assert.equal(stateKey('logs/_state', 's3', 'logs.prod.payments', 12), 'logs/_state/s3/logs.prod.payments+12.json');
    assert.notEqual(stateKey('logs/_state', 'archive', 'logs.prod.payments', 12), stateKey('logs/_state', 's3', 'logs.prod.payments', 12));
    assert.equal(legacyStateKey('logs/_state', 'logs.prod.payments', 12), 'logs/_state/logs.prod.payments+12.json');
  });
});

describe('Athena location template', () => {
  it('is the object layout with ${column} placeholders, so a projected partition is where the sink writes', () => {
    const template = locationTemplate('logship', 'logs');
    assert.equal(template, 's3://logship/logs/cluster=${cluster}/namespace=${namespace}/dt=${dt}/hour=${hour}');
    const values = partitionValues({ cluster: 'c1', namespace: 'ns1', timeMs: at('2026-11-22T04:00:00Z') });
    assert.ok(values);
    const filled = template.replace(/\$\{(\w+)\}/g, (_m, column: string) => values[column as keyof typeof values]);
    const key = objectKey('logs', values, 'topic', 0, 5);
    assert.equal(`s3://logship/${key}`, `${filled}/topic+0+5.ndjson.gz`);
  });

  it('locates the table at the prefix folder', () => {
    assert.equal(tableLocation('logship', 'logs'), 's3://logship/logs/');
    assert.equal(tableLocation('logship', ''), 's3://logship/');
  });
});

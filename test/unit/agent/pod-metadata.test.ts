import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import {
  ANNOTATION_EXCLUDE,
  ANNOTATION_EXCLUDE_CONTAINERS,
  ANNOTATION_MULTILINE,
  decideWatchRestart,
  isResourceExpired,
  MIN_CLEAN_WATCH_MS,
  PodMetadataCache,
  type MetadataHit,
  type MetadataLookup,
} from '../../../agent/pod-metadata.js';
import { ContainerLinkIndex } from '../../../agent/container-links.js';
import type { PodLogPath } from '../../../agent/pod-path.js';
import { KubernetesField } from '../../../shared/record.js';

const NODE = 'node-1';
const CLUSTER = 'test-cluster';
const GRACE_MS = 1000;

interface PodSpec {
  uid: string;
  name?: string;
  namespace?: string;
  node?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function pod({ uid, name = `pod-${uid}`, namespace = 'payments', node = NODE, labels = { app: 'api' }, annotations = {} }: PodSpec): V1Pod {
  return {
    metadata: { uid, name, namespace, labels, annotations, resourceVersion: '1' },
    spec: {
      nodeName: node,
      initContainers: [{ name: 'init', image: 'registry.example/init:1' }],
      containers: [
        { name: 'api', image: 'registry.example/api:2' },
        { name: 'sidecar', image: 'registry.example/proxy:3' },
      ],
    },
    status: {
      containerStatuses: [
        { name: 'api', containerID: 'containerd://aaa', image: 'registry.example/api:2', imageID: '', ready: true, restartCount: 0 },
        {
          name: 'sidecar',
          containerID: '',
          image: 'registry.example/proxy:3',
          imageID: '',
          ready: false,
          restartCount: 1,
          lastState: { terminated: { containerID: 'containerd://old-sidecar', exitCode: 1 } },
        },
      ],
    },
  };
}

function namespace(name: string, labels: Record<string, string>): V1Namespace {
  return { metadata: { name, labels, resourceVersion: '1' } };
}

function path(uid: string, container = 'api', podName = `pod-${uid}`, ns = 'payments'): PodLogPath {
  return { namespace: ns, pod: podName, podUid: uid, container, restartCount: 0, file: `/var/log/pods/${ns}_${podName}_${uid}/${container}/0.log` };
}

function instance(uid: string, container: string, restartCount: number): PodLogPath {
  return { ...path(uid, container), restartCount, file: `/var/log/pods/payments_pod-${uid}_${uid}/${container}/${restartCount}.log` };
}

function setup(maxCachedPods?: number): { cache: PodMetadataCache; clock: { t: number } } {
  const clock = { t: 1_000_000 };
  const cache = new PodMetadataCache({ nodeName: NODE, cluster: CLUSTER, deletedPodGraceMs: GRACE_MS, maxCachedPods, now: () => clock.t });
  return { cache, clock };
}

function hit(lookup: MetadataLookup): MetadataHit {
  if (lookup.kind !== 'hit') assert.fail(`expected a hit, got a fallback for ${lookup.metadata[KubernetesField.POD_UID]}`);
  return lookup;
}

describe('PodMetadataCache', () => {
  it('answers a known pod with its labels, annotations, container id, image and namespace labels', () => {
    const { cache } = setup();
    cache.replaceNamespaces([namespace('payments', { team: 'pay' })]);
    cache.replacePods([pod({ uid: 'u1', annotations: { note: 'x', 'kubectl.kubernetes.io/last-applied-configuration': '{"huge":true}' } })]);

    const { metadata, excluded } = hit(cache.lookup(path('u1')));
    assert.equal(excluded, false);
    assert.deepEqual(metadata, {
      [KubernetesField.CLUSTER]: CLUSTER,
      [KubernetesField.NODE]: NODE,
      [KubernetesField.NAMESPACE]: 'payments',
      [KubernetesField.POD]: 'pod-u1',
      [KubernetesField.POD_UID]: 'u1',
      [KubernetesField.CONTAINER]: 'api',
      [KubernetesField.CONTAINER_ID]: 'containerd://aaa',
      [KubernetesField.IMAGE]: 'registry.example/api:2',
      [KubernetesField.LABELS]: { app: 'api' },
      [KubernetesField.ANNOTATIONS]: { note: 'x' },
      [KubernetesField.NAMESPACE_LABELS]: { team: 'pay' },
    });
    assert.ok(Object.isFrozen(metadata) && Object.isFrozen(metadata[KubernetesField.LABELS]), 'shared objects are frozen');
  });

  it('reuses one lookup result per (pod, container) until the pod changes', () => {
    const { cache } = setup();
    cache.replacePods([pod({ uid: 'u1' })]);
    const first = cache.lookup(path('u1'));
    assert.equal(cache.lookup(path('u1')), first, 'same object on every line');
    assert.notEqual(cache.lookup(path('u1', 'sidecar')), first);
    assert.equal(cache.lookup(path('u1', 'sidecar')), cache.lookup(path('u1', 'sidecar')));

    cache.applyPod('MODIFIED', pod({ uid: 'u1', labels: { app: 'api', track: 'canary' } }));
    const after = hit(cache.lookup(path('u1')));
    assert.notEqual(after, first);
    assert.deepEqual(after.metadata[KubernetesField.LABELS], { app: 'api', track: 'canary' });
  });

  it('gives no container id to an instance the status does not place with certainty, and init container images', () => {
    const { cache } = setup();
    cache.replacePods([pod({ uid: 'u1' })]);
    // restartCount 1, no current id, a terminated id: which instance ran it is not certain.
    assert.equal(hit(cache.lookup(path('u1', 'sidecar'))).metadata[KubernetesField.CONTAINER_ID], undefined);
    assert.equal(hit(cache.lookup(instance('u1', 'sidecar', 1))).metadata[KubernetesField.CONTAINER_ID], undefined);
    const init = hit(cache.lookup(path('u1', 'init'))).metadata;
    assert.equal(init[KubernetesField.IMAGE], 'registry.example/init:1');
    assert.equal(init[KubernetesField.CONTAINER_ID], undefined);
  });

  it('keys container ids by restart count: each <n>.log gets the id of the instance that writes it', () => {
    const { cache } = setup();
    const restarted = (restartCount: number, current: string, last?: string): V1Pod => {
      const p = pod({ uid: 'u1' });
      p.status = {
        containerStatuses: [
          { name: 'api', containerID: current, image: 'registry.example/api:2', imageID: '', ready: true, restartCount, ...(last ? { lastState: { terminated: { containerID: last, exitCode: 1 } } } : {}) },
        ],
      };
      return p;
    };
    cache.replacePods([restarted(0, 'containerd://i0')]);
    const id = (n: number): unknown => hit(cache.lookup(instance('u1', 'api', n))).metadata[KubernetesField.CONTAINER_ID];
    assert.equal(id(0), 'containerd://i0');
    // 1.log appears before the status names its instance: no id rather than the first instance's.
    assert.equal(id(1), undefined);
    cache.applyPod('MODIFIED', restarted(1, 'containerd://i1', 'containerd://i0'));
    assert.deepEqual([id(0), id(1), id(2)], ['containerd://i0', 'containerd://i1', undefined]);
    // CrashLoopBackOff: the status names the instance that ended, as current and as last state.
    cache.applyPod('MODIFIED', restarted(2, 'containerd://i2', 'containerd://i2'));
    assert.deepEqual([id(1), id(2), id(3)], ['containerd://i1', 'containerd://i2', undefined]);
    // Instances the status no longer names keep the id learned earlier.
    cache.applyPod('MODIFIED', restarted(3, 'containerd://i3', 'containerd://i2'));
    assert.deepEqual([id(0), id(1), id(2), id(3)], ['containerd://i0', 'containerd://i1', 'containerd://i2', 'containerd://i3']);
  });

  it('takes the id from the kubelet symlink while the status does not name the instance, with the node runtime prefix', () => {
    const clock = { t: 1_000_000 };
    const hex = (c: string): string => c.repeat(64);
    let names = [`pod-u1_payments_api-${hex('a')}.log`];
    const targets = new Map([
      [`pod-u1_payments_api-${hex('a')}.log`, '/var/log/pods/payments_pod-u1_u1/api/0.log'],
      [`pod-u1_payments_api-${hex('b')}.log`, '/var/log/pods/payments_pod-u1_u1/api/1.log'],
    ]);
    let listings = 0;
    const links = new ContainerLinkIndex({
      dir: '/var/log/containers',
      now: () => clock.t,
      minRescanMs: 200,
      readdir: () => (listings++, names),
      readlink: (p) => targets.get(p.slice('/var/log/containers/'.length)) ?? '',
    });
    const cache = new PodMetadataCache({ nodeName: NODE, cluster: CLUSTER, deletedPodGraceMs: GRACE_MS, now: () => clock.t, containerLinks: links });
    const p = pod({ uid: 'u1' });
    p.status = { containerStatuses: [{ name: 'sidecar', containerID: 'containerd://side', image: '', imageID: '', ready: true, restartCount: 0 }] };
    cache.replacePods([p]);
    const api0 = hit(cache.lookup(instance('u1', 'api', 0)));
    assert.equal(api0.metadata[KubernetesField.CONTAINER_ID], `containerd://${hex('a')}`);
    // 1.log has no symlink yet: no id, and the folder is not listed again within 200 ms.
    const api1 = hit(cache.lookup(instance('u1', 'api', 1)));
    assert.equal(api1.metadata[KubernetesField.CONTAINER_ID], undefined);
    const before = listings;
    names = [...targets.keys()];
    assert.equal(cache.lookup(instance('u1', 'api', 1)), api1, 'the same hit object while the id is unknown');
    assert.equal(listings, before);
    clock.t += 200;
    assert.equal(hit(cache.lookup(instance('u1', 'api', 1))).metadata[KubernetesField.CONTAINER_ID], `containerd://${hex('b')}`);
    assert.equal(hit(cache.lookup(instance('u1', 'api', 0))), api0, 'a hit with an id is reused');
  });

  it('answers an unknown pod with a reused fallback built from the path only', () => {
    const { cache } = setup();
    cache.replaceNamespaces([namespace('payments', { team: 'pay' })]);
    const lookup = cache.lookup(path('nope', 'api', 'ghost'));
    assert.equal(lookup.kind, 'fallback');
    assert.deepEqual(lookup.metadata, {
      [KubernetesField.CLUSTER]: CLUSTER,
      [KubernetesField.NODE]: NODE,
      [KubernetesField.NAMESPACE]: 'payments',
      [KubernetesField.POD]: 'ghost',
      [KubernetesField.POD_UID]: 'nope',
      [KubernetesField.CONTAINER]: 'api',
      [KubernetesField.LABELS]: {},
      [KubernetesField.ANNOTATIONS]: {},
      [KubernetesField.NAMESPACE_LABELS]: {},
    });
    assert.equal(cache.lookup(path('nope', 'api', 'ghost')), lookup);

    cache.applyPod('ADDED', pod({ uid: 'nope', name: 'ghost' }));
    assert.equal(cache.lookup(path('nope', 'api', 'ghost')).kind, 'hit', 'a pod that arrives replaces its fallback');
  });

  it('marks whole pods and listed containers as excluded', () => {
    const { cache } = setup();
    cache.replacePods([
      pod({ uid: 'all', annotations: { [ANNOTATION_EXCLUDE]: 'true' } }),
      pod({ uid: 'some', annotations: { [ANNOTATION_EXCLUDE_CONTAINERS]: ' sidecar , other,' } }),
      pod({ uid: 'none', annotations: { [ANNOTATION_EXCLUDE]: 'false' } }),
    ]);
    assert.equal(hit(cache.lookup(path('all', 'api'))).excluded, true);
    assert.equal(hit(cache.lookup(path('all', 'sidecar'))).excluded, true);
    assert.equal(hit(cache.lookup(path('some', 'api'))).excluded, false);
    assert.equal(hit(cache.lookup(path('some', 'sidecar'))).excluded, true);
    assert.equal(hit(cache.lookup(path('none', 'api'))).excluded, false);
  });

  it('gives annotation values of known pods only, never inherited properties', () => {
    const { cache } = setup();
    cache.replacePods([pod({ uid: 'u1', annotations: { [ANNOTATION_MULTILINE]: 'java' } })]);
    assert.equal(cache.annotation('u1', ANNOTATION_MULTILINE), 'java');
    assert.equal(cache.annotation('u1', 'constructor'), undefined);
    assert.equal(cache.annotation('u1', 'missing'), undefined);
    assert.equal(cache.annotation('unknown', ANNOTATION_MULTILINE), undefined);
  });

  it('keeps a deleted pod for the grace period, then falls back and evicts it', () => {
    const { cache, clock } = setup();
    cache.replacePods([pod({ uid: 'u1' }), pod({ uid: 'u2' })]);
    cache.applyPod('DELETED', pod({ uid: 'u1' }));
    clock.t += GRACE_MS - 1;
    assert.equal(cache.lookup(path('u1')).kind, 'hit', 'within the grace period');
    assert.equal(cache.evictExpired(), 0);
    clock.t += 1;
    assert.equal(cache.lookup(path('u1')).kind, 'fallback', 'after the grace period, even before the sweep');
    assert.equal(cache.annotation('u1', 'anything'), undefined);
    assert.equal(cache.lookup(path('u2')).kind, 'hit');
    assert.equal(cache.podCount, 1);
  });

  it('evicts expired pods on the sweep', () => {
    const { cache, clock } = setup();
    cache.replacePods([pod({ uid: 'u1' }), pod({ uid: 'u2' })]);
    cache.applyPod('DELETED', pod({ uid: 'u1' }));
    clock.t += GRACE_MS;
    assert.equal(cache.evictExpired(), 1);
    assert.equal(cache.podCount, 1);
  });

  it('treats pods missing from a relist as deleted (grace period), and keeps the deletion time of already deleted ones', () => {
    const { cache, clock } = setup();
    cache.replacePods([pod({ uid: 'u1' }), pod({ uid: 'u2' }), pod({ uid: 'u3' })]);
    cache.applyPod('DELETED', pod({ uid: 'u3' }));
    clock.t += 600;
    cache.replacePods([pod({ uid: 'u2' })]);
    assert.equal(cache.lookup(path('u1')).kind, 'hit');
    clock.t += 400;
    assert.equal(cache.lookup(path('u3')).kind, 'fallback', 'u3 was deleted 1000 ms ago');
    assert.equal(cache.lookup(path('u1')).kind, 'hit', 'u1 went missing 400 ms ago');
    clock.t += 600;
    assert.equal(cache.lookup(path('u1')).kind, 'fallback');
    assert.equal(cache.lookup(path('u2')).kind, 'hit');
  });

  it('ignores pods bound to another node', () => {
    const { cache } = setup();
    cache.replacePods([pod({ uid: 'other', node: 'node-2' })]);
    cache.applyPod('ADDED', pod({ uid: 'other2', node: 'node-2' }));
    assert.equal(cache.lookup(path('other')).kind, 'fallback');
    assert.equal(cache.lookup(path('other2')).kind, 'fallback');
    assert.equal(cache.podCount, 0);
  });

  it('updates namespace labels of cached pods when the namespace changes or arrives late', () => {
    const { cache } = setup();
    cache.replacePods([pod({ uid: 'u1' }), pod({ uid: 'u2', namespace: 'other' })]);
    assert.deepEqual(hit(cache.lookup(path('u1'))).metadata[KubernetesField.NAMESPACE_LABELS], {});
    const other = cache.lookup(path('u2', 'api', 'pod-u2', 'other'));

    cache.replaceNamespaces([namespace('payments', { team: 'pay' }), namespace('other', {})]);
    assert.deepEqual(hit(cache.lookup(path('u1'))).metadata[KubernetesField.NAMESPACE_LABELS], { team: 'pay' });

    const before = cache.lookup(path('u1'));
    cache.applyNamespace('MODIFIED', namespace('payments', { team: 'pay' }));
    assert.equal(cache.lookup(path('u1')), before, 'unchanged labels keep the built metadata');

    cache.applyNamespace('MODIFIED', namespace('payments', { team: 'pay', tier: 'gold' }));
    assert.deepEqual(hit(cache.lookup(path('u1'))).metadata[KubernetesField.NAMESPACE_LABELS], { team: 'pay', tier: 'gold' });
    assert.deepEqual(hit(cache.lookup(path('u2', 'api', 'pod-u2', 'other'))).metadata, hit(other).metadata, 'other namespaces untouched');
  });

  it('evicts deleted namespaces after the grace period', () => {
    const { cache, clock } = setup();
    cache.replaceNamespaces([namespace('a', { x: '1' }), namespace('b', {})]);
    cache.applyNamespace('DELETED', namespace('a', { x: '1' }));
    cache.replaceNamespaces([namespace('a', { x: '1' })]);
    assert.equal(cache.namespaceCount, 2);
    clock.t += GRACE_MS;
    cache.evictExpired();
    assert.equal(cache.namespaceCount, 1, 'b, missing from the relist, is gone; a came back');
  });

  it('bounds the cache by evicting the oldest deleted pods first, never existing ones', () => {
    const { cache, clock } = setup(3);
    cache.replacePods([pod({ uid: 'a' }), pod({ uid: 'b' })]);
    cache.applyPod('DELETED', pod({ uid: 'a' }));
    clock.t += 10;
    cache.applyPod('DELETED', pod({ uid: 'b' }));
    cache.applyPod('ADDED', pod({ uid: 'c' }));
    cache.applyPod('ADDED', pod({ uid: 'd' }));
    assert.equal(cache.podCount, 3);
    assert.equal(cache.lookup(path('a')).kind, 'fallback', 'oldest deleted pod evicted');
    assert.equal(cache.lookup(path('b')).kind, 'hit');
    cache.applyPod('ADDED', pod({ uid: 'e' }));
    cache.applyPod('ADDED', pod({ uid: 'f' }));
    assert.deepEqual(['c', 'd', 'e', 'f'].map((u) => cache.lookup(path(u)).kind), ['hit', 'hit', 'hit', 'hit'], 'existing pods are kept even above the cap');
    assert.equal(cache.lookup(path('b')).kind, 'fallback');
  });
});

describe('decideWatchRestart', () => {
  const gone = { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 410, reason: 'Expired', message: 'too old resource version: 1 (4242)' };

  it('relists at once when the server says 410 Gone in an ERROR event', () => {
    assert.deepEqual(decideWatchRestart({ kind: 'status', status: gone }), { action: 'relist', reason: 'gone' });
    assert.deepEqual(decideWatchRestart({ kind: 'status', status: { message: 'too old resource version: 5 (9)' } }), { action: 'relist', reason: 'gone' });
  });

  it('relists at once when the request itself failed with 410', () => {
    assert.deepEqual(decideWatchRestart({ kind: 'failed', error: Object.assign(new Error('Gone'), { statusCode: 410 }) }), { action: 'relist', reason: 'gone' });
    assert.deepEqual(decideWatchRestart({ kind: 'failed', error: Object.assign(new Error('HTTP-Code: 410'), { code: 410, body: gone }) }), { action: 'relist', reason: 'gone' });
  });

  it('backs off on any other failure or error status', () => {
    const backoff = { action: 'backoff', reason: 'error' };
    assert.deepEqual(decideWatchRestart({ kind: 'failed', error: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) }), backoff);
    assert.deepEqual(decideWatchRestart({ kind: 'failed', error: Object.assign(new Error('Forbidden'), { code: 403, body: { code: 403, reason: 'Forbidden' } }) }), backoff);
    assert.deepEqual(decideWatchRestart({ kind: 'status', status: { code: 500, reason: 'InternalError', message: 'etcd down' } }), backoff);
    assert.deepEqual(decideWatchRestart({ kind: 'failed', error: undefined }), backoff);
  });

  it('resumes after a normal server-side close, but not in a hot loop', () => {
    assert.deepEqual(decideWatchRestart({ kind: 'closed', events: 3, durationMs: 10 }), { action: 'resume' });
    assert.deepEqual(decideWatchRestart({ kind: 'closed', events: 0, durationMs: 300_000 }), { action: 'resume' });
    assert.deepEqual(decideWatchRestart({ kind: 'closed', events: 0, durationMs: MIN_CLEAN_WATCH_MS - 1 }), { action: 'backoff', reason: 'error' });
  });

  it('recognises expiry only from 410 signs', () => {
    assert.equal(isResourceExpired(gone), true);
    assert.equal(isResourceExpired({ reason: 'Gone' }), true);
    assert.equal(isResourceExpired({ code: '410' }), false);
    assert.equal(isResourceExpired('410'), false);
    assert.equal(isResourceExpired(null), false);
    assert.equal(isResourceExpired({ code: 404, reason: 'NotFound' }), false);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { instanceKeyOf, parseContainerLinkName, parsePodLogPath } from '../../../agent/pod-path.js';

const ROOT = '/var/log/pods';
const UID = '7f3c1e2a-9b4d-4c8e-a1f0-2d6e8b9c0a11';

describe('parsePodLogPath', () => {
  it('splits namespace, pod, uid, container and restart count', () => {
    const file = `${ROOT}/payments_api-7f9c-x2_${UID}/api/0.log`;
    assert.deepEqual(parsePodLogPath(file, ROOT), { namespace: 'payments', pod: 'api-7f9c-x2', podUid: UID, container: 'api', restartCount: 0, file });
  });

  it('keeps dots and dashes of pod names and reads the restart number', () => {
    const file = `${ROOT}/kube-system_coredns.v1-5d78c9869d-abcde_${UID}/coredns/12.log`;
    assert.deepEqual(parsePodLogPath(file, ROOT), {
      namespace: 'kube-system',
      pod: 'coredns.v1-5d78c9869d-abcde',
      podUid: UID,
      container: 'coredns',
      restartCount: 12,
      file,
    });
  });

  it('accepts a root with a trailing slash and a static pod whose uid is a hash', () => {
    const file = `${ROOT}/kube-system_etcd-node-1_0a1b2c3d4e5f60718293a4b5c6d7e8f9/etcd/0.log`;
    assert.equal(parsePodLogPath(file, `${ROOT}/`)?.podUid, '0a1b2c3d4e5f60718293a4b5c6d7e8f9');
  });

  it('rejects rotated, compressed and other non-log files', () => {
    const dir = `${ROOT}/payments_api_${UID}/api`;
    for (const name of ['0.log.20261122-041719', '0.log.20261122-041719.gz', '0.log.gz', 'x.log', '.log', '01.log', '-1.log', '0.LOG', '0.log.tmp']) {
      assert.equal(parsePodLogPath(`${dir}/${name}`, ROOT), undefined, name);
    }
  });

  it('rejects the wrong depth, a malformed directory name and files outside the root', () => {
    const cases = [
      `${ROOT}/payments_api_${UID}/0.log`,
      `${ROOT}/payments_api_${UID}/api/sub/0.log`,
      `${ROOT}/payments_api_${UID}//0.log`,
      `${ROOT}/payments_api/api/0.log`,
      `${ROOT}/payments_api_${UID}_extra/api/0.log`,
      `${ROOT}/_api_${UID}/api/0.log`,
      `${ROOT}/payments__${UID}/api/0.log`,
      `${ROOT}/payments_api_/api/0.log`,
      `/var/log/podsX/payments_api_${UID}/api/0.log`,
      `/var/log/containers/api-7f9c-x2_payments_api-0123456789abcdef.log`,
      ROOT,
    ];
    for (const file of cases) assert.equal(parsePodLogPath(file, ROOT), undefined, file);
  });
});

describe('parseContainerLinkName', () => {
  const id = '0123456789abcdef'.repeat(4);

  it('reads pod, namespace, container and the id without runtime prefix', () => {
    assert.deepEqual(parseContainerLinkName(`web-7d4b9c-x2x.z_payments_app-server-${id}.log`), {
      pod: 'web-7d4b9c-x2x.z',
      namespace: 'payments',
      container: 'app-server',
      containerId: id,
    });
  });

  it('rejects names that are not whole kubelet symlink names', () => {
    const cases = [
      `web_payments_app-${id.slice(1)}.log`, // cut at 255 characters by the kubelet: incomplete id
      `web_payments_app-${id.toUpperCase()}.log`,
      `web_payments_app-${id}.log.1`,
      `web_app-${id}.log`,
      `web_payments_app_${id}.log`,
      'README',
    ];
    for (const name of cases) assert.equal(parseContainerLinkName(name), undefined, name);
  });
});

describe('instanceKeyOf', () => {
  it('keeps the last three parts of a pod log path whatever folder holds it', () => {
    assert.equal(instanceKeyOf(`/var/log/pods/payments_web_${UID}/app/3.log`), `payments_web_${UID}/app/3.log`);
    assert.equal(instanceKeyOf(`/host/var/log/pods/payments_web_${UID}/app/0.log`), `payments_web_${UID}/app/0.log`);
    assert.equal(instanceKeyOf(`/var/log/pods/payments_web_${UID}/app/0.log.20261122-041719`), undefined);
    assert.equal(instanceKeyOf('0.log'), undefined);
  });
});

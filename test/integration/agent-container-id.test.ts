import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { ContainerLinkIndex } from '../../agent/container-links.js';
import { PodMetadataStore, type MetadataLookup } from '../../agent/pod-metadata.js';
import { parsePodLogPath, type PodLogPath } from '../../agent/pod-path.js';
import { createKubeClients } from '../../shared/kube.js';
import { KubernetesField } from '../../shared/record.js';
import { createNamespace, createPod } from '../helpers/kube.js';
import { kubernetesConfig, testLogger, uniqueName, waitFor } from '../helpers/stack.js';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const kube = createKubeClients(kubernetesConfig());
const hex = (c: string): string => c.repeat(64);

function containerIdOf(lookup: MetadataLookup): string | undefined {
  assert.equal(lookup.kind, 'hit');
  return lookup.metadata[KubernetesField.CONTAINER_ID];
}

describe('container ids per container instance, against the real API server and real kubelet-style symlinks', () => {
  it('takes the id of a new instance from its /var/log/containers symlink until the status names it, never another instance\'s', async (t) => {
    const node = uniqueName('node-cid');
    const namespace = uniqueName('it-cid');
    await createNamespace(t, namespace, {});
    const image = 'registry.invalid/app:1';
    // Another pod of the node whose status tells the runtime (`containerd://`).
    await createPod(t, namespace, 'running', node, { containers: [{ name: 'main', image }] });
    await kube.core.patchNamespacedPodStatus(
      { name: 'running', namespace, body: { status: { containerStatuses: [{ name: 'main', containerID: `containerd://${hex('9')}`, image, imageID: '', ready: true, restartCount: 0 }] } } },
      mergePatch,
    );
    // The pod under test: Pending, no container status (as in the second after the kubelet started it).
    const uid = await createPod(t, namespace, 'fresh', node, { containers: [{ name: 'main', image }] });

    const dir = mkdtempSync(join(tmpdir(), 'logship-cid-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const podsRoot = join(dir, 'pods');
    const linksRoot = join(dir, 'containers');
    mkdirSync(join(podsRoot, `${namespace}_fresh_${uid}`, 'main'), { recursive: true });
    mkdirSync(linksRoot);
    const instance = (n: number, id: string | undefined): PodLogPath => {
      const file = join(podsRoot, `${namespace}_fresh_${uid}`, 'main', `${n}.log`);
      writeFileSync(file, '2026-12-07T14:00:00.000000000Z stdout F line\n');
      if (id !== undefined) symlinkSync(file, join(linksRoot, `fresh_${namespace}_main-${id}.log`));
      const parsed = parsePodLogPath(file, podsRoot);
      assert.ok(parsed);
      return parsed;
    };
    const log0 = instance(0, hex('a'));
    // A symlink of another pod and a file that is not a kubelet symlink: ignored.
    writeFileSync(join(linksRoot, 'README'), 'not a link');
    symlinkSync('/nonexistent/x/0.log', join(linksRoot, `other_${namespace}_main-${hex('f')}.log`));

    const store = new PodMetadataStore(kube, {
      nodeName: node,
      cluster: 'it-cluster',
      deletedPodGraceMs: 60_000,
      logger: testLogger(),
      containerLinks: new ContainerLinkIndex({ dir: linksRoot, minRescanMs: 50 }),
    });
    t.after(() => store.close());
    store.start();
    assert.equal(await store.waitForFirstSync(30_000), true);

    await waitFor('the id of 0.log from its symlink', () => containerIdOf(store.lookup(log0)) === `containerd://${hex('a')}`);

    // The container restarts: 1.log appears before its symlink and before the status names it.
    const log1 = instance(1, undefined);
    assert.equal(containerIdOf(store.lookup(log1)), undefined, 'no id rather than the first instance\'s');
    symlinkSync(log1.file, join(linksRoot, `fresh_${namespace}_main-${hex('b')}.log`));
    await waitFor('the id of 1.log from its symlink', () => containerIdOf(store.lookup(log1)) === `containerd://${hex('b')}`);

    // The status catches up, then names a third instance whose file has no symlink: 2.log gets its id
    // from the status, and the earlier files keep theirs after their symlinks are gone.
    await kube.core.patchNamespacedPodStatus(
      {
        name: 'fresh',
        namespace,
        body: {
          status: {
            containerStatuses: [
              { name: 'main', containerID: `containerd://${hex('c')}`, image, imageID: '', ready: true, restartCount: 2, lastState: { terminated: { containerID: `containerd://${hex('b')}`, exitCode: 1 } } },
            ],
          },
        },
      },
      mergePatch,
    );
    const log2 = instance(2, undefined);
    await waitFor('the id of 2.log from the status', () => containerIdOf(store.lookup(log2)) === `containerd://${hex('c')}`);
    rmSync(linksRoot, { recursive: true });
    mkdirSync(linksRoot);
    assert.equal(containerIdOf(store.lookup(log1)), `containerd://${hex('b')}`);
    assert.equal(containerIdOf(store.lookup(instance(3, undefined))), undefined);
  });
});

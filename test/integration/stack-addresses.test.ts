/**
 * The stack hands out no address in the private ranges real networks use (10/8, 172.16/12,
 * 192.168/16): asked of the running API server, not of the code. The `kubernetes` Service (whose IP
 * the kubelet puts into every pod's KUBERNETES_SERVICE_HOST), every Service's ClusterIPs, the
 * ServiceCIDRs and allocated IPAddresses, every node's addresses and every pod's and host's IPs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { kubectl } from '../../scripts/node-logship.js';
import { SERVICE_CIDR } from '../../scripts/stack/kubernetes.js';
import { inPrivateRange } from '../helpers/addresses.js';
import { testKube } from '../helpers/kube.js';

describe('addresses in the stack (real API server)', () => {
  it('the helper knows the private ranges', () => {
    for (const ip of ['10.96.0.1', '172.16.0.1', '172.31.255.255', '192.168.1.1', '10.0.0.0/8', '0.0.0.0/0']) assert.equal(inPrivateRange(ip), true, ip);
    for (const ip of ['127.0.0.1', '172.15.255.255', '172.32.0.0', '192.0.2.2', '198.18.0.1', SERVICE_CIDR, '::1']) assert.equal(inPrivateRange(ip), false, ip);
  });

  it('the kubernetes Service, every ClusterIP, ServiceCIDR and IPAddress lie outside the private ranges', async () => {
    const kube = testKube();
    const master = await kube.core.readNamespacedService({ namespace: 'default', name: 'kubernetes' });
    const masterIps = master.spec?.clusterIPs ?? [];
    assert.ok(masterIps.length > 0, 'the kubernetes Service has a ClusterIP');
    assert.equal(masterIps[0], `${SERVICE_CIDR.split('/')[0]?.replace(/\.0$/, '.1')}`, `the first address of ${SERVICE_CIDR}`);

    const offending: string[] = [];
    for (const svc of (await kube.core.listServiceForAllNamespaces()).items) {
      for (const ip of svc.spec?.clusterIPs ?? []) if (inPrivateRange(ip)) offending.push(`Service ${svc.metadata?.namespace}/${svc.metadata?.name} ${ip}`);
      for (const ip of svc.spec?.externalIPs ?? []) if (inPrivateRange(ip)) offending.push(`Service ${svc.metadata?.namespace}/${svc.metadata?.name} external ${ip}`);
    }
    const cidrs = JSON.parse((await kubectl(['get', 'servicecidrs', '-o', 'json'])).stdout) as { items: { metadata: { name: string }; spec: { cidrs?: string[] } }[] };
    assert.ok(cidrs.items.some((c) => c.metadata.name === 'kubernetes' && c.spec.cidrs?.includes(SERVICE_CIDR)), `the default ServiceCIDR holds ${SERVICE_CIDR}`);
    for (const c of cidrs.items) for (const cidr of c.spec.cidrs ?? []) if (inPrivateRange(cidr)) offending.push(`ServiceCIDR ${c.metadata.name} ${cidr}`);
    const addresses = JSON.parse((await kubectl(['get', 'ipaddresses', '-o', 'json'])).stdout) as { items: { metadata: { name: string } }[] };
    for (const a of addresses.items) if (inPrivateRange(a.metadata.name)) offending.push(`IPAddress ${a.metadata.name}`);
    assert.deepEqual(offending, []);
  });

  it('every node address and every pod and host IP lie outside the private ranges', async () => {
    const kube = testKube();
    const offending: string[] = [];
    for (const node of (await kube.core.listNode()).items) {
      for (const a of node.status?.addresses ?? []) if (inPrivateRange(a.address)) offending.push(`Node ${node.metadata?.name} ${a.type} ${a.address}`);
      for (const cidr of node.spec?.podCIDRs ?? []) if (inPrivateRange(cidr)) offending.push(`Node ${node.metadata?.name} podCIDR ${cidr}`);
    }
    const pods = (await kube.core.listPodForAllNamespaces()).items;
    for (const pod of pods) {
      const name = `Pod ${pod.metadata?.namespace}/${pod.metadata?.name}`;
      for (const ip of [...(pod.status?.podIPs ?? []), ...(pod.status?.hostIPs ?? [])].map((p) => p.ip)) if (inPrivateRange(ip)) offending.push(`${name} ${ip}`);
    }
    assert.deepEqual(offending, []);
  });
});

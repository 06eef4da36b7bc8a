/**
 * The manifests an operator applies (k8s/, rbac/), against the stack's real API server: every object
 * accepted by a server-side dry-run; the configs in the ConfigMaps valid with the environment the
 * containers get; what each ServiceAccount may do, as SubjectAccessReviews and as real requests with
 * its own token; and the agent, authenticated by nothing but its ServiceAccount's token, enriching
 * lines.
 *
 * The stack runs no controllers: a deleted namespace stays Terminating forever, so every run wraps the
 * manifests in a namespace and name suffix of its own (test/helpers/deploy.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { V1Container, V1DaemonSet, V1Deployment, V1PodSpec, V1Volume } from '@kubernetes/client-node';
import type { z } from 'zod';
import { agentConfigSchema, type AgentConfig } from '../../agent/config.js';
import { aggregatorConfigSchema, type AggregatorConfig } from '../../aggregator/config.js';
import { loadConfig } from '../../shared/config.js';
import { createKubeClients } from '../../shared/kube.js';
import { RecordFlag, type LogRecord } from '../../shared/record.js';
import { agentConfigFile, appendLines, cri, makeRoot, metricValue, podDir, RecordCollector, startAgentProcess, type AgentProcess } from '../helpers/agent.js';
import {
  findObject,
  K8S_DIR,
  kubectl,
  kubectlOk,
  kustomize,
  RBAC_DIR,
  serviceAccountToken,
  serviceAccountUser,
  subjectAccessReview,
  tokenKubeconfig,
  wrapKustomization,
  type KubeObject,
} from '../helpers/deploy.js';
import { deleteNamespaceNow } from '../../scripts/stack/namespaces.js';
import { createNamespace, createPod, testKube } from '../helpers/kube.js';
import { uniqueName, waitFor } from '../helpers/stack.js';

const BASE = join(K8S_DIR, 'base');
const EXAMPLE = join(K8S_DIR, 'overlays', 'example');
const COMPONENTS = join(K8S_DIR, 'components');
/** Components that need nothing but the core API (the prometheus-operator one needs its CRDs). */
const CORE_COMPONENTS = ['aggregator-hpa', 'agent-run-as-root', 'aggregator-s3-static-keys'].map((c) => join(COMPONENTS, c));
const AGENT = 'logship-agent';
const AGGREGATOR = 'logship-aggregator';

// ---- reading the rendered workloads --------------------------------------------------------------

function podSpec(workload: KubeObject): V1PodSpec {
  const spec = (workload as unknown as V1DaemonSet | V1Deployment).spec?.template.spec;
  assert.ok(spec, `${workload.kind}/${workload.metadata.name} has a pod template`);
  return spec;
}

function mainContainer(spec: V1PodSpec): V1Container {
  const container = spec.containers[0];
  assert.ok(container);
  return container;
}

function volume(spec: V1PodSpec, name: string): V1Volume {
  const found = spec.volumes?.find((v) => v.name === name);
  assert.ok(found, `volume ${name}`);
  return found;
}

/** The volume mounted at `path` in the container. */
function volumeAt(spec: V1PodSpec, container: V1Container, path: string): V1Volume {
  const mount = container.volumeMounts?.find((m) => m.mountPath === path);
  assert.ok(mount, `${container.name} mounts something at ${path}`);
  return volume(spec, mount.name);
}

/**
 * The environment the container gets, as the kubelet builds it: `env` values, `envFrom` ConfigMaps;
 * values the kubelet resolves at run time (downward API, Secrets) become placeholders.
 */
function containerEnv(objects: readonly KubeObject[], container: V1Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    const name = source.configMapRef?.name;
    assert.ok(name, 'envFrom names a ConfigMap');
    Object.assign(env, (findObject(objects, 'ConfigMap', name) as KubeObject & { data?: Record<string, string> }).data);
  }
  for (const variable of container.env ?? []) {
    if (variable.value !== undefined) env[variable.name] = variable.value;
    else if (variable.valueFrom?.fieldRef) env[variable.name] = 'ip-192-0-2-10.example.internal';
    else if (variable.valueFrom?.secretKeyRef) env[variable.name] = `secret-${variable.valueFrom.secretKeyRef.name}-${variable.valueFrom.secretKeyRef.key}`;
  }
  return env;
}

/**
 * Loads the binary's config the way the container does: the file named by `--config` out of the
 * ConfigMap mounted there, with the container's environment. Throws the binary's own ConfigError.
 */
function loadContainerConfig<S extends z.ZodType>(t: TestContext, objects: readonly KubeObject[], workload: KubeObject, schema: S): z.output<S> {
  const spec = podSpec(workload);
  const container = mainContainer(spec);
  const args = container.args ?? [];
  const configPath = args[args.indexOf('--config') + 1];
  assert.ok(configPath, `${workload.metadata.name} is started with --config`);
  const configMap = volumeAt(spec, container, posix.dirname(configPath)).configMap?.name;
  assert.ok(configMap, `${configPath} comes from a ConfigMap`);
  const text = (findObject(objects, 'ConfigMap', configMap) as KubeObject & { data?: Record<string, string> }).data?.[posix.basename(configPath)];
  assert.ok(text, `ConfigMap ${configMap} holds ${posix.basename(configPath)}`);
  const dir = mkdtempSync(join(tmpdir(), 'logship-k8s-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, posix.basename(configPath));
  writeFileSync(file, text);
  return loadConfig(schema, { file, env: containerEnv(objects, container) });
}

/** A secret `{ file }` setting points into a mounted Secret volume. */
function assertSecretFile(spec: V1PodSpec, container: V1Container, file: string | undefined, setting: string): void {
  assert.ok(file, `${setting} is read from a file`);
  const secret = volumeAt(spec, container, dirname(file)).secret;
  assert.ok(secret?.secretName, `${setting} (${file}) lies in a mounted Secret`);
  assert.ok(container.volumeMounts?.find((m) => m.mountPath === dirname(file))?.readOnly, `${dirname(file)} is mounted read-only`);
}

function assertHardened(container: V1Container, what: string): void {
  const sc = container.securityContext;
  assert.equal(sc?.readOnlyRootFilesystem, true, `${what}: read-only root filesystem`);
  assert.equal(sc.allowPrivilegeEscalation, false, `${what}: no privilege escalation`);
  assert.equal(sc.privileged, false, `${what}: not privileged`);
  assert.deepEqual(sc.capabilities?.drop, ['ALL'], `${what}: every capability dropped`);
}

function checkAgent(t: TestContext, objects: readonly KubeObject[], expectRoot: boolean): AgentConfig {
  const daemonSet = findObject(objects, 'DaemonSet');
  const spec = podSpec(daemonSet);
  const container = mainContainer(spec);
  const config = loadContainerConfig(t, objects, daemonSet, agentConfigSchema);

  assert.equal(config.nodeName, 'ip-192-0-2-10.example.internal', 'nodeName from the downward API');
  assert.equal(container.env?.find((e) => e.name === 'LOGSHIP_NODE_NAME')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
  assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
  assert.ok(spec.priorityClassName, 'has a priority class');
  findObject(objects, 'PriorityClass', spec.priorityClassName);
  assert.equal(spec.serviceAccountName, findObject(objects, 'ServiceAccount', spec.serviceAccountName).metadata.name);
  assert.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault');
  assertHardened(container, 'agent');

  // The log folders: read-only hostPaths at the node's own paths (the symlinks in one point into the other).
  for (const path of ['/var/log/pods', '/var/log/containers']) {
    const v = volumeAt(spec, container, path);
    assert.equal(v.hostPath?.path, path, `${path} is the node's ${path}`);
    assert.equal(container.volumeMounts?.find((m) => m.mountPath === path)?.readOnly, true, `${path} read-only`);
  }
  assert.equal(config.files.root, '/var/log/pods');
  // Checkpoints: a hostPath folder, handed to the agent's user by the init container.
  const state = volumeAt(spec, container, config.checkpoints.dir);
  assert.equal(state.hostPath?.type, 'DirectoryOrCreate');
  const init = spec.initContainers?.[0];
  assert.ok(init, 'an init container prepares the state folder');
  assert.ok(init.volumeMounts?.some((m) => m.name === state.name && m.mountPath === config.checkpoints.dir), 'the init container mounts the state folder');
  const uid = spec.securityContext.runAsUser;
  const gid = spec.securityContext.runAsGroup;
  assert.deepEqual(init.command, ['chown', '-R', `${String(uid)}:${String(gid)}`, config.checkpoints.dir], 'the state folder is handed to the agent\'s uid:gid');
  assert.deepEqual(init.securityContext?.capabilities, { drop: ['ALL'], add: ['CHOWN'] }, 'the init container holds CAP_CHOWN only');
  assert.equal(init.securityContext.readOnlyRootFilesystem, true);
  if (expectRoot) {
    assert.equal(uid, 0);
  } else {
    assert.equal(spec.securityContext.runAsNonRoot, true);
    assert.ok(uid !== undefined && uid > 0, 'the agent runs non-root');
    assert.deepEqual(spec.securityContext.supplementalGroups, [0], 'group 0 reads the runtime\'s root:root 0640 log files');
  }
  checkOps(daemonSet, container, config.ops.port);
  assert.ok(config.shutdown.timeoutMs < (spec.terminationGracePeriodSeconds ?? 30) * 1000, 'graceful shutdown fits in the grace period');
  assert.ok(config.kafka.sasl, 'Kafka SASL on');
  assertSecretFile(spec, container, config.kafka.sasl.password.file, 'kafka.sasl.password');
  return config;
}

function checkAggregator(t: TestContext, objects: readonly KubeObject[]): AggregatorConfig {
  const deployment = findObject(objects, 'Deployment');
  const spec = podSpec(deployment);
  const container = mainContainer(spec);
  const config = loadContainerConfig(t, objects, deployment, aggregatorConfigSchema);
  assert.equal(spec.automountServiceAccountToken, false, 'no API token in the aggregator\'s pods');
  const account = findObject(objects, 'ServiceAccount', spec.serviceAccountName);
  assert.equal((account as KubeObject & { automountServiceAccountToken?: boolean }).automountServiceAccountToken, false);
  assert.equal(spec.securityContext?.runAsNonRoot, true);
  assert.ok((spec.securityContext.runAsUser ?? 0) > 0);
  assert.equal(spec.securityContext.seccompProfile?.type, 'RuntimeDefault');
  assertHardened(container, 'aggregator');
  checkOps(deployment, container, config.ops.port);
  assert.ok(config.shutdown.timeoutMs < (spec.terminationGracePeriodSeconds ?? 30) * 1000, 'graceful shutdown fits in the grace period');
  assert.ok(config.kafka.sasl, 'Kafka SASL on');
  assertSecretFile(spec, container, config.kafka.sasl.password.file, 'kafka.sasl.password');
  const es = config.sinks.find((s) => s.type === 'elasticsearch')?.elasticsearch?.connection;
  assertSecretFile(spec, container, es?.apiKey?.file, 'elasticsearch apiKey');
  const pdb = findObject(objects, 'PodDisruptionBudget') as KubeObject & { spec: { maxUnavailable?: number; selector: { matchLabels: Record<string, string> } } };
  assert.equal(pdb.spec.maxUnavailable, 1);
  assert.deepEqual(pdb.spec.selector.matchLabels, (deployment as unknown as V1Deployment).spec?.selector.matchLabels, 'the PDB selects the aggregator');
  return config;
}

/** Probes and scrape annotations use the port the config listens on. */
function checkOps(workload: KubeObject, container: V1Container, port: number): void {
  const metrics = container.ports?.find((p) => p.name === 'metrics');
  assert.equal(metrics?.containerPort, port, 'the metrics port is the config\'s ops.port');
  assert.equal(container.livenessProbe?.httpGet?.path, '/healthz');
  assert.equal(container.livenessProbe.httpGet.port, 'metrics');
  assert.equal(container.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(container.readinessProbe.httpGet.port, 'metrics');
  const annotations = (workload as unknown as V1DaemonSet).spec?.template.metadata?.annotations ?? {};
  assert.equal(annotations['prometheus.io/scrape'], 'true');
  assert.equal(annotations['prometheus.io/port'], String(port));
  assert.ok(container.resources?.requests?.memory && container.resources.limits?.memory, `${container.name} has memory requests and limits`);
}

/** Applies the rendered Namespace for real (its Pod Security labels included), then dry-runs everything. */
async function dryRun(t: TestContext, dir: string, namespace: string, extraLabels: Record<string, string> = {}): Promise<KubeObject[]> {
  const objects = await kustomize(dir);
  const ns = findObject(objects, 'Namespace', namespace);
  const existing = await kubectl(['get', 'namespace', namespace]);
  if (existing.code !== 0) {
    await createNamespace(t, namespace, { ...ns.metadata.labels, ...extraLabels });
  }
  const result = await kubectlOk(['apply', '--dry-run=server', '-k', dir]);
  const lines = result.stdout.trim().split('\n');
  assert.equal(lines.length, objects.length, `every object answered:\n${result.stdout}`);
  for (const line of lines) assert.match(line, /(created|configured|unchanged) \(server dry run\)$/);
  return objects;
}

// ---- access checks ------------------------------------------------------------------------------

interface Access {
  verb: string;
  resource: string;
  group?: string;
  subresource?: string;
  /** Namespaced request in this namespace; cluster-wide (all namespaces) when absent. */
  namespace?: string;
}

const AGENT_NEEDS: Access[] = [
  { verb: 'list', resource: 'pods' },
  { verb: 'watch', resource: 'pods' },
  { verb: 'get', resource: 'pods', namespace: 'kube-system' },
  { verb: 'list', resource: 'namespaces' },
  { verb: 'watch', resource: 'namespaces' },
  { verb: 'get', resource: 'namespaces' },
];

const NOBODY_GETS: Access[] = [
  { verb: 'create', resource: 'pods', namespace: 'default' },
  { verb: 'update', resource: 'pods', namespace: 'default' },
  { verb: 'patch', resource: 'pods', namespace: 'default' },
  { verb: 'delete', resource: 'pods', namespace: 'default' },
  { verb: 'deletecollection', resource: 'pods', namespace: 'default' },
  { verb: 'get', resource: 'pods', subresource: 'log', namespace: 'default' },
  { verb: 'create', resource: 'pods', subresource: 'exec', namespace: 'default' },
  { verb: 'create', resource: 'pods', subresource: 'eviction', namespace: 'default' },
  { verb: 'create', resource: 'namespaces' },
  { verb: 'patch', resource: 'namespaces' },
  { verb: 'delete', resource: 'namespaces' },
  { verb: 'get', resource: 'secrets', namespace: 'default' },
  { verb: 'list', resource: 'secrets' },
  { verb: 'watch', resource: 'secrets' },
  { verb: 'get', resource: 'configmaps', namespace: 'default' },
  { verb: 'list', resource: 'configmaps' },
  { verb: 'get', resource: 'nodes' },
  { verb: 'list', resource: 'nodes' },
  { verb: 'get', resource: 'nodes', subresource: 'proxy' },
  { verb: 'list', resource: 'services' },
  { verb: 'list', resource: 'endpointslices', group: 'discovery.k8s.io' },
  { verb: 'create', resource: 'events', namespace: 'default' },
  { verb: 'list', resource: 'deployments', group: 'apps' },
  { verb: 'patch', resource: 'daemonsets', group: 'apps', namespace: 'default' },
  { verb: 'create', resource: 'serviceaccounts', subresource: 'token', namespace: 'default' },
  { verb: 'list', resource: 'clusterroles', group: 'rbac.authorization.k8s.io' },
  { verb: 'create', resource: 'clusterrolebindings', group: 'rbac.authorization.k8s.io' },
  { verb: 'bind', resource: 'clusterroles', group: 'rbac.authorization.k8s.io' },
  { verb: 'escalate', resource: 'clusterroles', group: 'rbac.authorization.k8s.io' },
  { verb: 'impersonate', resource: 'users' },
  { verb: 'impersonate', resource: 'serviceaccounts', namespace: 'default' },
  { verb: '*', resource: '*', group: '*' },
];

function describeAccess(a: Access): string {
  const resource = `${a.group ? `${a.group}/` : ''}${a.resource}${a.subresource ? `/${a.subresource}` : ''}`;
  return `${a.verb} ${resource} ${a.namespace === undefined ? '(all namespaces)' : `(namespace ${a.namespace})`}`;
}

/** The HTTP status of a failed client call, or 200 when it succeeded. */
async function statusOf(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
    return 200;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'number') return code;
    throw error;
  }
}

// ---- tests ----------------------------------------------------------------------------------------

describe('k8s/ and rbac/ against the real API server', () => {
  it('renders base and example overlay; each container\'s config is valid with the environment the pod gives it and matches its mounts, ports and probes', async (t) => {
    const base = await kustomize(BASE);
    const example = await kustomize(EXAMPLE);
    const withComponents = await kustomize(
      wrapKustomization((fn) => t.after(fn), { resources: [EXAMPLE], components: CORE_COMPONENTS, namespace: 'logship', nameSuffix: '' }),
    );
    const kinds = (objects: readonly KubeObject[]): string[] => objects.map((o) => o.kind).sort();
    assert.deepEqual(kinds(base), ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'ConfigMap', 'ConfigMap', 'ConfigMap', 'DaemonSet', 'Deployment', 'Namespace', 'PodDisruptionBudget', 'PriorityClass', 'ServiceAccount', 'ServiceAccount']);
    for (const objects of [base, example]) {
      for (const o of objects) if (o.kind !== 'Namespace' && !o.kind.startsWith('Cluster') && o.kind !== 'PriorityClass') assert.equal(o.metadata.namespace, 'logship', `${o.kind}/${o.metadata.name}`);
    }

    const agent = checkAgent(t, example, false);
    const aggregator = checkAggregator(t, example);
    checkAgent(t, base, false);
    checkAggregator(t, base);
    // The overlay's site values reached the configs.
    assert.equal(agent.cluster, 'prod-apne2');
    assert.equal(agent.kafka.brokers.length, 3);
    assert.equal(aggregator.sinks[0]?.s3?.bucket, 'example-corp-logship-apne2');
    assert.equal(aggregator.sinks[0].s3.connection.region, 'ap-northeast-2');
    assert.deepEqual(aggregator.sinks[1]?.elasticsearch?.connection.nodes, ['https://logs.es.example.internal:9243']);
    assert.equal(aggregator.sinks[0].s3.connection.accessKeyId, undefined, 'S3 through the AWS credential chain (IRSA)');
    assert.match(findObject(example, 'ServiceAccount', AGGREGATOR).metadata.annotations?.['eks.amazonaws.com/role-arn'] ?? '', /^arn:aws:iam::/);
    for (const name of [AGENT, AGGREGATOR]) {
      const image = mainContainer(podSpec(findObject(example, name === AGENT ? 'DaemonSet' : 'Deployment'))).image;
      assert.equal(image, `registry.example.com/platform/${name}:0.1.0`);
    }

    // The optional components: the agent as root (0600 log files), static S3 keys from a Secret, the HPA.
    checkAgent(t, withComponents, true);
    const withKeys = checkAggregator(t, withComponents);
    assert.equal(withKeys.sinks[0]?.s3?.connection.accessKeyId, 'secret-logship-s3-access-key-id');
    assert.equal(withKeys.sinks[0].s3.connection.secretAccessKey?.value, 'secret-logship-s3-secret-access-key');
    const hpa = findObject(withComponents, 'HorizontalPodAutoscaler') as KubeObject & { spec: { metrics: { external?: { metric: { name: string } } }[] } };
    assert.equal(hpa.spec.metrics[0]?.external?.metric.name, 'logship_aggregator_consumer_lag');
    assert.equal((findObject(withComponents, 'Deployment') as unknown as V1Deployment).spec?.replicas, undefined, 'with the HPA the Deployment leaves replicas to it');

    // The Prometheus Operator component renders Services whose selectors and ports match the pods.
    const monitored = await kustomize(wrapKustomization((fn) => t.after(fn), { resources: [EXAMPLE], components: [join(COMPONENTS, 'prometheus-operator')], namespace: 'logship', nameSuffix: '' }));
    for (const [workloadKind, port] of [['DaemonSet', agent.ops.port], ['Deployment', aggregator.ops.port]] as const) {
      const labels = (findObject(monitored, workloadKind) as unknown as V1Deployment).spec?.template.metadata?.labels ?? {};
      const service = monitored.find((o) => {
        const s = o as KubeObject & { spec?: { selector?: Record<string, string>; ports?: { port: number; targetPort: string }[] } };
        return o.kind === 'Service' && Object.entries(s.spec?.selector ?? {}).every(([k, v]) => labels[k] === v) && s.spec?.ports?.[0]?.port === port;
      });
      assert.ok(service, `a metrics Service selects the ${workloadKind}'s pods on port ${port}`);
    }
    assert.equal(monitored.filter((o) => o.kind === 'ServiceMonitor').length, 2);
    t.diagnostic(`base: ${base.length} objects; example overlay: ${example.length}; with the core components: ${withComponents.length}`);
  });

  it('every object of base, example overlay and the core components passes a server-side dry-run', async (t) => {
    const namespace = uniqueName('it-k8s-dry');
    const nameSuffix = `-${namespace.slice(-6)}`;
    const cleanup = (fn: () => void | Promise<void>): void => t.after(fn);
    const variants = {
      base: wrapKustomization(cleanup, { resources: [BASE], namespace, nameSuffix }),
      'overlays/example': wrapKustomization(cleanup, { resources: [EXAMPLE], namespace, nameSuffix }),
      'overlays/example + core components': wrapKustomization(cleanup, { resources: [EXAMPLE], components: CORE_COMPONENTS, namespace, nameSuffix }),
    };
    for (const [name, dir] of Object.entries(variants)) {
      const objects = await dryRun(t, dir, namespace);
      t.diagnostic(`${name}: ${objects.length} objects accepted (${objects.map((o) => o.kind).join(', ')})`);
    }
  });

  it('Pod Security: the aggregator meets "restricted"; the agent departs from it only by its hostPaths and the chown init container', async (t) => {
    const namespace = uniqueName('it-k8s-psa');
    const dir = wrapKustomization((fn) => t.after(fn), { resources: [EXAMPLE], namespace, nameSuffix: `-${namespace.slice(-6)}` });
    const objects = await kustomize(dir);
    // Warn (not enforce) at "restricted": the API server then lists every departure for each workload.
    await createNamespace(t, namespace, { 'pod-security.kubernetes.io/warn': 'restricted', 'pod-security.kubernetes.io/warn-version': 'latest' });
    const warnings = async (kind: string): Promise<string> => {
      const result = await kubectlOk(['apply', '--dry-run=server', '-f', '-'], JSON.stringify(findObject(objects, kind)));
      return result.stderr.trim();
    };
    assert.equal(await warnings('Deployment'), '', 'the aggregator meets the restricted level');
    const agent = await warnings('DaemonSet');
    // "…: check (detail), check (detail), …"
    const violations = [...agent.matchAll(/([A-Za-z][\w !=.-]*?) \(([^()]*)\)/g)].map((m) => ({ check: m[1] ?? '', detail: m[2] ?? '' }));
    assert.deepEqual(violations.map((v) => v.check).sort(), ['restricted volume types', 'runAsNonRoot != true', 'runAsUser=0', 'unrestricted capabilities'], agent);
    for (const { check, detail } of violations) {
      if (check === 'restricted volume types') assert.equal(detail, 'volumes "pod-logs", "container-logs", "state" use restricted volume type "hostPath"');
      else assert.match(detail, /^container "state-dir-owner" /, `only the init container departs from ${check}`);
    }
    t.diagnostic(`agent, against "restricted": ${agent.replace(/\s+/g, ' ')}`);
  });

  describe('rbac/ applied for real', () => {
    const namespace = uniqueName('it-rbac');
    const nameSuffix = `-${namespace.slice(-6)}`;
    const cleanups: (() => void | Promise<void>)[] = [];
    let agentAccount = '';
    let aggregatorAccount = '';

    before(async () => {
      const dir = wrapKustomization((fn) => cleanups.push(fn), { resources: [RBAC_DIR], namespace, nameSuffix });
      const objects = await kustomize(dir);
      agentAccount = findObject(objects, 'ServiceAccount', `${AGENT}${nameSuffix}`).metadata.name;
      aggregatorAccount = findObject(objects, 'ServiceAccount', `${AGGREGATOR}${nameSuffix}`).metadata.name;
      const binding = findObject(objects, 'ClusterRoleBinding') as KubeObject & { subjects: { name: string; namespace: string }[] };
      assert.deepEqual(binding.subjects.map((s) => `${s.namespace}/${s.name}`), [`${namespace}/${agentAccount}`]);
      await testKube().core.createNamespace({ body: { metadata: { name: namespace } } });
      cleanups.push(async () => {
        await deleteNamespaceNow(testKube().core, namespace).catch(() => undefined);
      });
      // Cluster-scoped objects first in the clean-up list's reverse order: they are what outlives the namespace.
      cleanups.push(async () => {
        await kubectl(['delete', '-k', dir, '--ignore-not-found', '--wait=false']);
      });
      await kubectlOk(['apply', '-k', dir]);
    });

    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup();
    });

    it('SubjectAccessReviews: the agent may get/list/watch pods and namespaces and nothing else; the aggregator may do nothing', async (t) => {
      const agent = serviceAccountUser(namespace, agentAccount);
      const aggregator = serviceAccountUser(namespace, aggregatorAccount);
      const rows: string[] = [];
      const width = Math.max(...[...AGENT_NEEDS, ...NOBODY_GETS].map((a) => describeAccess(a).length));
      rows.push(`${'request'.padEnd(width)}  agent  aggregator`);
      for (const access of [...AGENT_NEEDS, ...NOBODY_GETS]) {
        const attributes = { verb: access.verb, resource: access.resource, group: access.group ?? '', subresource: access.subresource, namespace: access.namespace ?? '' };
        const [forAgent, forAggregator] = await Promise.all([subjectAccessReview(agent, attributes), subjectAccessReview(aggregator, attributes)]);
        rows.push(`${describeAccess(access).padEnd(width)}  ${(forAgent.allowed ? 'yes' : 'no').padEnd(5)}  ${forAggregator.allowed ? 'yes' : 'no'}`);
        assert.equal(forAgent.allowed, AGENT_NEEDS.includes(access), `agent: ${describeAccess(access)} (${forAgent.reason})`);
        assert.equal(forAggregator.allowed, false, `aggregator: ${describeAccess(access)} (${forAggregator.reason})`);
      }
      for (const row of rows) t.diagnostic(row);
    });

    it('with their own tokens: the agent lists pods and namespaces and is refused secrets, configmaps, nodes and writes; the aggregator is refused everything', async (t) => {
      const cleanup = (fn: () => void | Promise<void>): void => t.after(fn);
      const agent = createKubeClients({ kubeconfig: tokenKubeconfig(cleanup, await serviceAccountToken(namespace, agentAccount)) }).core;
      const aggregator = createKubeClients({ kubeconfig: tokenKubeconfig(cleanup, await serviceAccountToken(namespace, aggregatorAccount)) }).core;
      const pod = { metadata: { name: 'forbidden' }, spec: { containers: [{ name: 'c', image: 'registry.invalid/c:1' }] } };
      const calls: [string, (core: typeof agent) => Promise<unknown>][] = [
        ['list pods (all namespaces, field selector spec.nodeName)', (c) => c.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=it-node', limit: 1 })],
        ['list namespaces', (c) => c.listNamespace({ limit: 1 })],
        ['read namespace default', (c) => c.readNamespace({ name: 'default' })],
        ['list secrets (all namespaces)', (c) => c.listSecretForAllNamespaces({ limit: 1 })],
        ['list configmaps in kube-system', (c) => c.listNamespacedConfigMap({ namespace: 'kube-system', limit: 1 })],
        ['list nodes', (c) => c.listNode({ limit: 1 })],
        ['create a pod', (c) => c.createNamespacedPod({ namespace, body: pod })],
        ['delete namespace default', (c) => c.deleteNamespace({ name: 'default', dryRun: 'All' })],
      ];
      const agentMay = new Set(['list pods (all namespaces, field selector spec.nodeName)', 'list namespaces', 'read namespace default']);
      for (const [what, call] of calls) {
        const [agentStatus, aggregatorStatus] = [await statusOf(() => call(agent)), await statusOf(() => call(aggregator))];
        t.diagnostic(`${what}: agent ${agentStatus}, aggregator ${aggregatorStatus}`);
        assert.equal(agentStatus, agentMay.has(what) ? 200 : 403, `agent: ${what}`);
        assert.equal(aggregatorStatus, 403, `aggregator: ${what}`);
      }
    });

    it('the agent, authenticated only by its ServiceAccount token, enriches lines with pod and namespace labels', async (t) => {
      const podNamespace = uniqueName('it-k8s-sa');
      const topicPrefix = uniqueName('it-k8s-sa');
      const topic = `${topicPrefix}.${podNamespace}`;
      const nodeName = uniqueName('it-k8s-node');
      const root = makeRoot();
      const stateDir = mkdtempSync(join(tmpdir(), 'logship-agent-state-'));
      const collector = new RecordCollector();
      const started: { agent?: AgentProcess } = {};
      t.after(async () => {
        await started.agent?.stop();
        await collector.stop([topic]);
        rmSync(root, { recursive: true, force: true });
        rmSync(stateDir, { recursive: true, force: true });
      });
      await collector.start([topic]);
      const kubeconfig = tokenKubeconfig((fn) => t.after(fn), await serviceAccountToken(namespace, agentAccount));
      const agent = startAgentProcess(agentConfigFile({ root, stateDir, topicPrefix, kubernetes: { enabled: true, kubeconfig }, extra: { nodeName } }));
      started.agent = agent;
      const opsUrl = await agent.opsUrl;

      await createNamespace(t, podNamespace, { team: 'payments', tier: 'gold' });
      const labels = { app: 'checkout', version: 'v7' };
      const uid = await createPod(t, podNamespace, 'checkout-5d9c', nodeName, { labels, containers: [{ name: 'app', image: 'registry.invalid/checkout:7' }] });
      const file = join(podDir(root, podNamespace, 'checkout-5d9c', uid, 'app').dir, '0.log');

      // One line at a time until one arrives with the pod's and the namespace's labels: the watches are in sync.
      let probe = 0;
      let pending: string | undefined;
      await waitFor(
        'a line enriched with the pod\'s and the namespace\'s labels',
        () => {
          if (pending === undefined) {
            pending = `probe-${probe++}`;
            appendLines(file, [cri(pending)]);
            return undefined;
          }
          const line = pending;
          const arrived = collector.records.find((r) => r.record.message === line)?.record;
          if (arrived === undefined) return undefined;
          pending = undefined;
          return arrived.kubernetes.pod_uid === uid && arrived.kubernetes.namespace_labels.team === 'payments' && arrived.log.flags === undefined;
        },
        60_000,
      );

      const hitsBefore = await metricValue(opsUrl, 'logship_agent_metadata_lookups_total', { result: 'hit' });
      const messages = Array.from({ length: 100 }, (_, i) => `sa-line-${i}`);
      appendLines(file, messages.map((m) => cri(m)));
      await waitFor('100 lines in Kafka', () => messages.every((m) => collector.records.some((r) => r.record.message === m)), 60_000);
      const records = messages.map((m) => collector.records.find((r) => r.record.message === m)?.record).filter((r): r is LogRecord => r !== undefined);
      for (const record of records) {
        assert.equal(record.kubernetes.pod, 'checkout-5d9c');
        assert.equal(record.kubernetes.pod_uid, uid);
        assert.equal(record.kubernetes.image, 'registry.invalid/checkout:7');
        assert.deepEqual(record.kubernetes.labels, labels, record.message);
        assert.deepEqual(record.kubernetes.namespace_labels, { 'kubernetes.io/metadata.name': podNamespace, team: 'payments', tier: 'gold' }, record.message);
        assert.equal(record.log.flags?.includes(RecordFlag.METADATA_FALLBACK) ?? false, false, record.message);
      }
      const hits = (await metricValue(opsUrl, 'logship_agent_metadata_lookups_total', { result: 'hit' })) - hitsBefore;
      assert.equal(hits, 100, 'every line a metadata hit');
      const logs = agent.logs();
      assert.match(logs, /"resource":"pods".*kubernetes metadata listed/);
      assert.match(logs, /"resource":"namespaces".*kubernetes metadata listed/);
      assert.doesNotMatch(logs, /forbidden/i, 'no request of the agent was refused');
      t.diagnostic(`agent as system:serviceaccount:${namespace}:${agentAccount}: ${records.length} lines enriched, ${hits} metadata hits, after ${probe} probe line(s)`);
    });
  });
});

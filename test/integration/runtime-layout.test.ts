/**
 * The image layout without Docker: the Dockerfile's runtime stage is the bundle of scripts/bundle.ts
 * and nothing else (no node_modules but koffi's native package). This test bundles into a clean
 * folder, checks that the bundle needs nothing but Node's built-in modules and its own files, then
 * starts both binaries from it the
 * way their pods start them (the uid, gid and groups of the manifests' securityContext, every
 * capability dropped, no_new_privs) against the stack, and watches them work: the agent reads a log
 * file that is root:root 0640 as a container runtime writes it and enriches its lines from the API
 * server and, once idle, pages out node's pages through koffi; the aggregator writes to S3 and
 * Elasticsearch.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { V1DaemonSet, V1Deployment, V1PodSecurityContext } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import { REPO_ROOT } from '../../scripts/stack/context.js';
import { cri, metricValue, RecordCollector } from '../helpers/agent.js';
import { countDocuments, deleteIndices, deleteS3Prefix, logRecord, readS3Objects, RecordProducer, testS3Client } from '../helpers/aggregator.js';
import type { Metafile } from 'esbuild';
import { bundleBinaries, NATIVE_PACKAGES_DIR } from '../../scripts/bundle.js';
import { findObject, K8S_DIR, kustomize, startBuiltBinary, type BuiltProcess, type RunAs } from '../helpers/deploy.js';
import { createElasticsearchClient } from '../../shared/elasticsearch.js';
import { elasticsearchConfig, stack, uniqueName, waitFor } from '../helpers/stack.js';

const IS_ROOT = process.getuid?.() === 0;

/**
 * Packages libraries only try to load, inside try/catch, falling back to their own JavaScript when
 * absent (as they are from the images, and were from `npm ci --omit=dev` before the bundle): node-fetch's
 * `encoding` (charset conversion it never needs here), ws's native `bufferutil` and `utf-8-validate`.
 */
const OPTIONAL_REQUIRES = new Set(['encoding', 'bufferutil', 'utf-8-validate']);

/** What the pod's securityContext makes of the process: runAsUser, runAsGroup, and supplementalGroups plus fsGroup. */
function runAsOf(context: V1PodSecurityContext | undefined): RunAs {
  assert.ok(context?.runAsUser !== undefined && context.runAsGroup !== undefined, 'the pod sets runAsUser and runAsGroup');
  const groups = new Set([...(context.supplementalGroups ?? []), ...(context.fsGroup === undefined ? [] : [context.fsGroup])]);
  return { uid: context.runAsUser, gid: context.runAsGroup, groups: [...groups].sort((a, b) => a - b) };
}

/** Every file under `dir`, relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** The env of a container of the rendered manifests that a test can pass on as it is (plain values). */
function plainEnv(workload: V1DaemonSet | V1Deployment): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of workload.spec?.template.spec?.containers[0]?.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return env;
}

describe('runtime layout: the bundle alone, started as the pods start them', () => {
  const work = mkdtempSync(join(tmpdir(), 'logship-runtime-'));
  const app = join(work, 'app');
  let metafile: Metafile;
  let daemonSet: V1DaemonSet;
  let deployment: V1Deployment;
  const cleanups: (() => void | Promise<void>)[] = [() => rmSync(work, { recursive: true, force: true })];

  before(async () => {
    // The folder is read by other users below (the binaries run as the pods' uid).
    chmodSync(work, 0o755);
    // Bundled as `npm run build` does, into the clean folder (created by the bundler) rather than the work tree's dist/.
    metafile = await bundleBinaries(app);
    chmodSync(app, 0o755);
    const rendered = await kustomize(join(K8S_DIR, 'base'));
    daemonSet = findObject(rendered, 'DaemonSet');
    deployment = findObject(rendered, 'Deployment');
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('holds the two bundled binaries and their chunks, which need nothing but Node\'s built-in modules', (t) => {
    const files = filesUnder(app);
    for (const binary of ['agent', 'aggregator']) assert.ok(files.includes(`${binary}.mjs`), `${binary}.mjs`);
    // One package besides: koffi's prebuilt native module (the agent's idle page-out), for this machine's platform.
    const nativePackages = [...new Set(files.filter((f) => f.startsWith('node_modules')).map((f) => f.split('/').slice(0, 3).join('/')))];
    assert.deepEqual(nativePackages, [`${NATIVE_PACKAGES_DIR}/koffi-${process.platform}-${process.arch}`], 'node_modules holds koffi\'s native package alone');
    assert.ok(files.some((f) => f.startsWith(nativePackages[0] ?? '-') && f.endsWith('.node')), 'with its prebuilt module');
    const modules = files.filter((f) => f.endsWith('.mjs'));
    // What esbuild left as imports: every library is inside the bundle, so only Node's own modules and the bundle's chunks remain.
    const builtins = new Set(builtinModules);
    for (const [output, { imports }] of Object.entries(metafile.outputs)) {
      for (const { path, external, kind } of imports) {
        if (external && OPTIONAL_REQUIRES.has(path)) assert.equal(kind, 'require-call', `${output}: ${path} is only ever tried`);
        else if (external) assert.ok(path.startsWith('node:') || builtins.has(path), `${output} imports ${path}, which is not a built-in module`);
        else assert.ok(existsSync(resolve(REPO_ROOT, path)), `${output} imports ${path}, which is not in the bundle`);
      }
    }
    // The Kubernetes client is a chunk of its own, loaded by the agent only, and holds the parts the agent names.
    const kubeChunk = modules.find((f) => f.startsWith('chunks/kube-library'));
    assert.ok(kubeChunk, 'a chunk for the Kubernetes client');
    const kubeBytes = statSync(join(app, kubeChunk)).size;
    assert.ok(kubeBytes < 4 * 2 ** 20, `the Kubernetes client chunk is ${kubeBytes} bytes: the library's unused APIs were left out`);
    const bytes = modules.reduce((sum, f) => sum + statSync(join(app, f)).size, 0);
    t.diagnostic(`bundle: ${modules.length} modules, ${(bytes / 2 ** 20).toFixed(1)} MiB; Kubernetes client chunk ${(kubeBytes / 2 ** 20).toFixed(1)} MiB`);
  });

  it('matches the Dockerfile: pinned Node 22 LTS base, production-only runtime stage, numeric non-root users', () => {
    const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
    assert.match(dockerfile, /^ARG NODE_IMAGE=node:22\.\d+\.\d+-bookworm-slim$/m, 'the base is an exact Node 22 release');
    const stages = dockerfile.split(/^FROM /m).slice(1);
    const stage = (name: string): string => {
      const found = stages.find((s) => new RegExp(`^\\S+ AS ${name}\\b`).test(s));
      assert.ok(found, `stage ${name}`);
      return found;
    };
    assert.doesNotMatch(stage('runtime'), /npm (ci|install)/, 'the runtime stage installs no packages');
    assert.deepEqual([...stage('runtime').matchAll(/^COPY (?:--from=(\S+) )?(\S+)/gm)].map((m) => `${m[1] ?? ''} ${m[2] ?? ''}`), ['build /src/dist/bundle'], 'only the bundle goes into the runtime stage');
    assert.match(stage('build'), /^RUN npm run build$/m, 'the build stage bundles with the project\'s own build script');
    for (const [target, workload] of [['agent', daemonSet], ['aggregator', deployment]] as const) {
      const user = /^USER (\d+):(\d+)$/m.exec(stage(target));
      assert.ok(user, `${target}: a numeric USER`);
      assert.notEqual(user[1], '0', `${target}: not root`);
      assert.equal(Number(user[1]), workload.spec?.template.spec?.securityContext?.runAsUser, `${target}: the image's user is the pod's`);
      assert.match(stage(target), new RegExp(`^ENTRYPOINT \\["node", "/app/${target}.mjs"\\]`, 'm'));
    }
    const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    assert.equal(ignored[0], '*', '.dockerignore starts by excluding everything');
    assert.ok(!ignored.includes('!node_modules') && !ignored.includes('!dist') && !ignored.includes('!test'), 'node_modules, dist and tests stay out of the build context');
  });

  it('the agent runs non-root in group 0, reads a root:root 0640 log file, checkpoints into its state folder and ships the lines', async (t) => {
    const runAs = runAsOf(daemonSet.spec?.template.spec?.securityContext);
    assert.ok(runAs.uid > 0 && runAs.groups.includes(0), 'the DaemonSet runs the agent non-root with group 0');
    const namespace = 'runtime';
    const topicPrefix = uniqueName('it-runtime');
    const topic = `${topicPrefix}.${namespace}`;
    const dir = mkdtempSync(join(work, 'agent-'));
    chmodSync(dir, 0o755);
    // The node's folders as containerd leaves them: root-owned folders 0755, log files root:root 0640.
    const root = join(dir, 'pods');
    const readable = join(root, `${namespace}_web-6f7d_0d5c7e3a-1b2c-4d5e-8f90-123456789abc`, 'app');
    mkdirSync(readable, { recursive: true, mode: 0o755 });
    const lines = Array.from({ length: 50 }, (_, i) => `runtime-line-${i}`);
    writeFileSync(join(readable, '0.log'), lines.map((m) => cri(m)).join(''), { mode: 0o640 });
    if (IS_ROOT) {
      // As older conmon releases (CRI-O) write them: 0600, readable by root only; the reason for components/agent-run-as-root.
      const ownerOnly = join(root, `${namespace}_crio-1a2b_6c1e2a4b-3c4d-4e5f-9a0b-cdef01234567`, 'app');
      mkdirSync(ownerOnly, { recursive: true, mode: 0o755 });
      writeFileSync(join(ownerOnly, '0.log'), cri('crio-line'), { mode: 0o600 });
    }
    // The state folder as the init container leaves it: owned by the agent's uid:gid.
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o755 });
    if (IS_ROOT) chownSync(state, runAs.uid, runAs.gid);
    // The service-account credentials as the kubelet mounts them: root-owned, readable through the pod's fsGroup.
    const kubeconfig = join(dir, 'kubeconfig');
    const admin = parse(readFileSync(stack().kubernetes.kubeconfig, 'utf8')) as { users: { user: { token: string } }[] };
    writeFileSync(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'stack', cluster: { server: stack().kubernetes.server, 'certificate-authority-data': readFileSync(stack().kubernetes.caFile).toString('base64') } }],
        users: [{ name: 'agent', user: { token: admin.users[0]?.user.token } }],
        contexts: [{ name: 'agent', context: { cluster: 'stack', user: 'agent' } }],
        'current-context': 'agent',
      }),
      { mode: 0o440 },
    );
    if (IS_ROOT) chownSync(kubeconfig, 0, runAs.gid);
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      stringify({
        cluster: 'it',
        nodeName: uniqueName('it-runtime-node'),
        ops: { host: '127.0.0.1', port: 0 },
        files: { root, pollIntervalMs: 100, rescanIntervalMs: 1_000 },
        kubernetes: { enabled: true, kubeconfig },
        kafka: { brokers: stack().kafka.brokers, clientId: 'logship-runtime-it', topicTemplate: `${topicPrefix}.{namespace}`, retryInitialDelayMs: 100, retryMaxDelayMs: 1_000 },
        checkpoints: { dir: state, intervalMs: 200 },
        idle: { reclaimAfterMs: 500, pageOutAfterMs: 1_000 },
        shutdown: { timeoutMs: 10_000 },
      }),
      { mode: 0o644 },
    );
    const collector = new RecordCollector();
    const started: { agent?: BuiltProcess } = {};
    t.after(async () => {
      await started.agent?.stop();
      await collector.stop([topic]);
    });
    await collector.start([topic]);
    const env: Record<string, string> = { ...plainEnv(daemonSet), HOME: '/nonexistent', NODE_ENV: 'production', KAFKAJS_NO_PARTITIONER_WARNING: '1' };
    const agent = startBuiltBinary(app, 'agent', config, env, IS_ROOT ? runAs : undefined);
    started.agent = agent;
    const opsUrl = await Promise.race([agent.opsUrl, agent.exited.then((code) => assert.fail(`the agent exited (${String(code)}):\n${agent.logs()}`))]);
    assert.equal((await fetch(`${opsUrl}/healthz`)).status, 200);
    await waitFor('the agent ready', async () => (await fetch(`${opsUrl}/readyz`)).status === 200, 30_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${agent.logs()}`);
    });
    await waitFor('the 50 lines in Kafka', () => lines.every((m) => collector.records.some((r) => r.record.message === m)), 60_000);
    await waitFor('the Kubernetes client loaded and listing', () => /kubernetes metadata listed/.test(agent.logs()), 30_000);
    let denied = 0;
    if (IS_ROOT) {
      denied = await waitFor('the 0600 file counted as permission denied', async () => {
        const value = await metricValue(opsUrl, 'logship_agent_errors_total', { reason: 'permission_denied' });
        return value > 0 ? value : undefined;
      });
      assert.equal(collector.records.filter((r) => r.record.message === 'crio-line').length, 0, 'a 0600 file stays unread without root');
    }
    // Quiet now: the idle page-out loads koffi's native module from the bundle's folder, as the image's user.
    const pagedOut = await waitFor('an idle page-out', async () => {
      const value = await metricValue(opsUrl, 'logship_agent_idle_reclaims_total', { step: 'page_out' });
      return value > 0 ? await metricValue(opsUrl, 'logship_agent_idle_paged_out_bytes_total') : undefined;
    }, 30_000);
    assert.equal(await metricValue(opsUrl, 'logship_agent_idle_reclaims_total', { step: 'page_out_failed' }), 0, agent.logs());
    assert.equal(await agent.stop(), 0, 'SIGTERM: a clean exit');
    const checkpoint = statSync(join(state, 'checkpoints.json'));
    if (IS_ROOT) assert.equal(checkpoint.uid, runAs.uid, 'checkpoints written by the agent\'s own uid');
    t.diagnostic(
      `agent from the clean folder as ${IS_ROOT ? `uid ${runAs.uid} gid ${runAs.gid} groups ${runAs.groups.join(',')}, no capabilities, no_new_privs` : `the test user (uid ${String(process.getuid?.())}: not root, no uid switch)`}; NODE_OPTIONS=${env.NODE_OPTIONS ?? ''}; 50/50 lines of the 0640 file shipped; permission_denied ${denied} (the 0600 file); idle page-out gave back ${(pagedOut / 2 ** 20).toFixed(1)} MiB`,
    );
  });

  it('the aggregator runs non-root, writes to S3 and Elasticsearch from the stack, and stops cleanly', async (t) => {
    const runAs = runAsOf(deployment.spec?.template.spec?.securityContext);
    assert.ok(runAs.uid > 0 && !runAs.groups.includes(0), 'the Deployment runs the aggregator non-root, without group 0');
    const name = uniqueName('it-runtime-agg');
    const topic = `${name}.logs`;
    const deadLetterTopic = `${name}.dlq`;
    const s3Prefix = `it/${name}`;
    const esPrefix = name;
    const producer = new RecordProducer();
    const s3 = testS3Client();
    const es = createElasticsearchClient(elasticsearchConfig());
    const started: { aggregator?: BuiltProcess } = {};
    t.after(async () => {
      await started.aggregator?.stop();
      await producer.deleteTopics([topic, deadLetterTopic]);
      await producer.close();
      await deleteS3Prefix(s3, s3Prefix);
      await deleteIndices(es, esPrefix);
      await es.close();
    });
    await producer.connect();
    await producer.createTopics([{ topic, partitions: 2 }]);
    const dir = mkdtempSync(join(work, 'aggregator-'));
    chmodSync(dir, 0o755);
    const config = join(dir, 'aggregator.yaml');
    const stackS3 = stack().s3;
    writeFileSync(
      config,
      stringify({
        ops: { host: '127.0.0.1', port: 0 },
        kafka: { brokers: stack().kafka.brokers, clientId: 'logship-runtime-it', groupId: name, topics: [topic], sessionTimeoutMs: 10_000, heartbeatIntervalMs: 1_000, maxWaitTimeMs: 100, commitIntervalMs: 500 },
        deadLetter: { topic: deadLetterTopic },
        sinks: [
          {
            name: 'archive',
            type: 's3',
            batch: { maxAgeMs: 500 },
            // No secret in the file: the key comes from the environment, as components/aggregator-s3-static-keys passes it.
            s3: { bucket: stackS3.bucket, prefix: s3Prefix, gzipLevel: 1, connection: { endpoint: stackS3.endpoint, region: stackS3.region, forcePathStyle: true, accessKeyId: stackS3.accessKeyId } },
          },
          {
            name: 'search',
            type: 'elasticsearch',
            batch: { maxAgeMs: 200 },
            elasticsearch: { connection: { nodes: [stack().elasticsearch.url] }, index: `${esPrefix}-{namespace}-{yyyy.MM.dd}`, templateName: esPrefix, numberOfReplicas: 0, refreshIntervalMs: 1_000 },
          },
        ],
        shutdown: { timeoutMs: 20_000 },
      }),
      { mode: 0o644 },
    );
    const secret = readFileSync(stackS3.secretAccessKeyFile, 'utf8').trim();
    const env: Record<string, string> = {
      ...plainEnv(deployment),
      HOME: '/nonexistent',
      NODE_ENV: 'production',
      KAFKAJS_NO_PARTITIONER_WARNING: '1',
      // This machine runs Node 20; the images run 22, for which the AWS SDK does not warn.
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      LOGSHIP_SINKS__0__S3__CONNECTION__SECRET_ACCESS_KEY__VALUE: secret,
    };
    const aggregator = startBuiltBinary(app, 'aggregator', config, env, IS_ROOT ? runAs : undefined);
    started.aggregator = aggregator;
    const opsUrl = await Promise.race([aggregator.opsUrl, aggregator.exited.then((code) => assert.fail(`the aggregator exited (${String(code)}):\n${aggregator.logs()}`))]);
    assert.equal((await fetch(`${opsUrl}/healthz`)).status, 200);
    // /readyz: the consumer runs and each sink's health check answers. The stack's Elasticsearch (the
    // integ-test distribution) serves no `/`, so the Elasticsearch sink's ping gets 405 there and its
    // check stays false; the documents landing below are its proof instead.
    const readiness = await waitFor(
      'the aggregator\'s consumer running and the S3 sink healthy',
      async () => {
        const body = (await (await fetch(`${opsUrl}/readyz`)).json()) as { checks: Record<string, boolean> };
        return body.checks.consumer && body.checks['sink:archive'] ? body.checks : undefined;
      },
      60_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${aggregator.logs()}`);
    });
    const now = Date.now();
    const records = Array.from({ length: 40 }, (_, i) => logRecord(i, 'runtime', now));
    await producer.send(topic, records, 10);
    await waitFor('40 documents in Elasticsearch', async () => (await countDocuments(es, `${esPrefix}-*`)) === 40, 60_000);
    const objects = await waitFor('40 lines in S3', async () => {
      const found = await readS3Objects(s3, s3Prefix);
      return found.reduce((n, o) => n + o.lines.length, 0) === 40 ? found : undefined;
    }, 60_000);
    assert.equal(await aggregator.stop(), 0, 'SIGTERM: a clean exit');
    assert.ok(!aggregator.logs().includes(secret), 'the S3 secret never logged');
    t.diagnostic(
      `aggregator from the clean folder as ${IS_ROOT ? `uid ${runAs.uid} gid ${runAs.gid} groups ${runAs.groups.join(',')}` : 'the test user'}; NODE_OPTIONS=${env.NODE_OPTIONS ?? ''}; 40 records -> ${objects.length} S3 object(s), 40 Elasticsearch documents; /readyz checks ${JSON.stringify(readiness)}`,
    );
  });
});

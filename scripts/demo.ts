/**
 * `npm run demo [-- --keep]`: logship's main job end to end on the local stack.
 *
 * 1. Brings the stack up (`stack up`: installs on a fresh machine, idempotent).
 * 2. Creates two labelled namespaces and four labelled pods bound to the demo's node in the stack's
 *    kube-apiserver.
 * 3. Starts one agent and two aggregator instances (one consumer group) from source, with generated
 *    config files: the agent enriches from the API server and produces to `demo.{cluster}.{namespace}`;
 *    the aggregators subscribe by regex and write to S3 (gzip NDJSON, Hive layout) and Elasticsearch.
 * 4. While they run, writes synthetic CRI logs the way a node does into a temporary
 *    `/var/log/pods`-style folder: a few thousand lines over five containers, long lines split into
 *    `P` chunks (some with the other stream's line between the chunks), stderr, and one kubelet
 *    rename rotation with the runtime still writing to the renamed file.
 * 5. Shows progress, waits (5 min deadline) until every line is in Kafka, S3 and Elasticsearch, then
 *    prints an Elasticsearch query and a DuckDB SQL query over the S3 objects, and a summary.
 * 6. Stops the binaries (SIGTERM), deletes everything the run created (unless `--keep`) and leaves
 *    the stack running. The last line of output is one JSON object; the exit status is 0 only when
 *    Kafka records = S3 rows = Elasticsearch documents = lines written, every message arrived as
 *    written (once), nothing was dead-lettered and every binary exited 0 on SIGTERM.
 *
 * The input is clean on purpose, so the dead-letter count must be 0; poison input is the tests' job.
 *
 * The pieces, in scripts/demo/: workload.ts (the pods and their lines), run-names.ts, kube-objects.ts
 * (namespaces and pods in the API server), configs.ts (the binaries' config files), binary.ts (running
 * the agent and aggregators), log-writer.ts (the node's CRI files, the rotation), landed.ts (reading
 * back Kafka, S3, Elasticsearch), queries.ts (the two example queries), checks.ts and report.ts (the
 * verdict and the summary), cleanup.ts, output.ts, and run.ts, which strings them together.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describeError } from '../shared/errors.js';
import type { DemoSummary, LiveCounts } from './demo/checks.js';
import { Cleanup, KEPT } from './demo/cleanup.js';
import { out, SECOND_MS } from './demo/output.js';
import { run } from './demo/run.js';
import { runNames } from './demo/run-names.js';
import { QUERY_APP } from './demo/workload.js';
import { REPO_ROOT } from './stack/context.js';
import { readEndpoints } from './stack/endpoints.js';

export type { DemoSummary } from './demo/checks.js';

function runStackUp(): Promise<number> {
  return new Promise((resolve, reject) => {
    // Its progress goes to stderr; its endpoints JSON (stdout) is not needed: the demo prints its own.
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'stack', 'cli.ts'), 'up'], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : 128)));
  });
}

async function main(argv: string[]): Promise<number> {
  const unknown = argv.filter((a) => a !== '--keep');
  if (unknown.length > 0) {
    process.stderr.write(`demo: unknown argument ${unknown.join(' ')}\nusage: npm run demo [-- --keep]\n`);
    return 2;
  }
  const keep = argv.includes('--keep');
  const startedMs = Date.now();
  // The machine may run Node 20; the AWS SDK's notice about its future Node 22 floor is noise here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  out.line('logship demo: bringing the stack up (installs it on first use)…');
  const stackCode = await runStackUp();
  if (stackCode !== 0) {
    process.stderr.write(`demo: the stack did not come up (exit ${stackCode})\n`);
    return stackCode;
  }
  const endpoints = readEndpoints();
  const names = runNames();
  out.line(`Run ${names.id}: Kafka ${endpoints.kafka.brokers.join(',')}, S3 ${endpoints.s3.endpoint} (bucket ${endpoints.s3.bucket}), Elasticsearch ${endpoints.elasticsearch.url}, Kubernetes ${endpoints.kubernetes.server}`);

  const cleanup = new Cleanup();
  let summary: DemoSummary | undefined;
  let failure: unknown;
  const live: LiveCounts = { lines_written: 0, kafka_records: 0, s3_objects: 0, s3_rows: 0, es_docs: 0 };
  // Registered first, so removed last; kept with --keep, and after a failure for its logs and configs.
  cleanup.add(`run folder ${names.dir}`, true, async () => {
    if (summary?.ok !== true) return KEPT;
    rmSync(names.dir, { recursive: true, force: true });
    return undefined;
  });
  try {
    summary = await run(endpoints, names, keep, abort.signal, cleanup, startedMs, live);
  } catch (error) {
    failure = error;
  }
  const cleaned = await cleanup.run(keep);

  out.line();
  if (failure !== undefined) out.line(`FAILED: ${abort.signal.aborted ? 'interrupted' : describeError(failure)}`);
  if (summary?.ok !== true && !keep) out.line(`The run's logs and configs are kept in ${names.dir} (logs/agent.log, logs/aggregator-*.log).`);
  if (cleaned.failed.length > 0) out.line(`Cleanup left: ${cleaned.failed.join('; ')}`);
  if (keep) {
    out.line('Kept for exploring (--keep):');
    out.line(`  Elasticsearch  curl -s '${endpoints.elasticsearch.url}/${names.indexPrefix}-*/_search?q=kubernetes.labels.app:${QUERY_APP}&size=3&pretty'`);
    out.line(`  S3             s3://${endpoints.s3.bucket}/${names.s3Prefix}/ at ${endpoints.s3.endpoint} (access key ${endpoints.s3.accessKeyId}, secret in ${endpoints.s3.secretAccessKeyFile})`);
    out.line(`  Kafka          ${endpoints.kafka.brokers.join(',')}: topics ${names.topics.join(', ')}, dead letters ${names.deadLetterTopic}, group ${names.groupId}`);
    out.line(`  Kubernetes     namespaces ${Object.values(names.namespaces).join(', ')} (kubeconfig ${endpoints.kubernetes.kubeconfig})`);
    out.line(`  files          ${names.dir}: agent.yaml, aggregator.yaml, var-log-pods/, logs/, s3/`);
    out.line('  Nothing removes them later by itself (`npm run stack -- down --purge` wipes all the stack\'s data).');
  } else {
    out.line(`Cleaned up: ${cleaned.done.join('; ')}.`);
  }
  out.line('The stack keeps running for the next demo or test; stop it with `npm run stack -- down`.');
  const seconds = Number(((Date.now() - startedMs) / SECOND_MS).toFixed(1));
  const final = summary ?? {
    ok: false,
    run_id: names.id,
    error: abort.signal.aborted ? 'interrupted' : failure === undefined ? 'unknown' : (describeError(failure).split('\n')[0] ?? ''),
    ...live,
    dead_letters: null,
    kept: keep,
  };
  out.line(JSON.stringify({ ...final, seconds }));
  return summary?.ok === true ? 0 : abort.signal.aborted ? 130 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`demo: ${describeError(error)}\n`);
    process.exit(1);
  },
);

/**
 * What integration tests need from the stack: its endpoints, connection configs for the project's
 * own client wrappers, unique resource names, and waiting for a condition with a deadline.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { REPO_ROOT, stackPaths, stopDaemon } from '../../scripts/stack/context.js';
import { readEndpoints, type StackEndpoints } from '../../scripts/stack/endpoints.js';
import { waitFor as waitUntil } from '../../scripts/wait-for.js';
import { elasticsearchConnectionSchema, type ElasticsearchConnectionConfig } from '../../shared/elasticsearch-connection.js';
import { kafkaConnectionSchema, type KafkaConnectionConfig } from '../../shared/kafka.js';
import { kubernetesConnectionSchema, type KubernetesConnectionConfig } from '../../shared/kube.js';
import { createLogger, type Logger, type LogLevel } from '../../shared/logger.js';
import { s3ConnectionSchema, type S3ConnectionConfig } from '../../shared/s3-connection.js';

let cached: StackEndpoints | undefined;

export function stack(): StackEndpoints {
  cached ??= readEndpoints();
  return cached;
}

export function kafkaConfig(overrides: Partial<KafkaConnectionConfig> = {}): KafkaConnectionConfig {
  return kafkaConnectionSchema.parse({ brokers: stack().kafka.brokers, clientId: 'logship-test', ...overrides });
}

export function s3Config(): S3ConnectionConfig & { bucket: string } {
  const s3 = stack().s3;
  const config = s3ConnectionSchema.parse({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: { value: readFileSync(s3.secretAccessKeyFile, 'utf8').trim() },
  });
  return { ...config, bucket: s3.bucket };
}

export function elasticsearchConfig(): ElasticsearchConnectionConfig {
  return elasticsearchConnectionSchema.parse({ nodes: [stack().elasticsearch.url] });
}

export function kubernetesConfig(): KubernetesConnectionConfig {
  return kubernetesConnectionSchema.parse({ kubeconfig: stack().kubernetes.kubeconfig });
}

/** A name no other test run uses: lower-case, DNS-label safe. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** A logger for tests: silent unless LOG_LEVEL is set. */
export function testLogger(): Logger {
  const level = process.env.LOG_LEVEL as LogLevel | undefined;
  return level === undefined || level === 'silent'
    ? createLogger({ name: 'test', level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) })
    : createLogger({ name: 'test', level, destination: 2 });
}

/**
 * Polls `probe` until it returns a value other than undefined/false, or throws after `timeoutMs` with
 * the description and the last value seen.
 */
export function waitFor<T>(description: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  return waitUntil(description, probe, timeoutMs, intervalMs);
}

/** Stops one server of the stack (by the PID the stack script recorded), for outage tests. */
export async function stopStackServer(name: 'kafka' | 'kube-apiserver' | 'minio'): Promise<void> {
  const stopped = await stopDaemon(stackPaths(), name, 30_000);
  if (!stopped) throw new Error(`${name} was not running`);
}

/** Brings the named part of the stack back (`stack up <name>`), waiting until it answers. */
export async function startStackServer(name: 'kafka' | 'kubernetes' | 'minio'): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'stack', 'cli.ts'), 'up', name], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`stack up ${name} failed (${String(code)}):\n${stderr}`);
}

/** Resident set size of a process, in bytes, from /proc. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match?.[1] ? Number(match[1]) * 1024 : 0;
}

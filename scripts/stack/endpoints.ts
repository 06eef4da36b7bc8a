/**
 * What `stack up` writes and `stack status` prints: how to reach each server. Tests and the demo read
 * it with {@link readEndpoints}. Secrets are not in it, only the files that hold them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { stackPaths } from './context.js';

export interface StackEndpoints {
  home: string;
  logs: string;
  kafka: {
    brokers: string[];
    version: string;
    /** The TLS + SASL/SCRAM listener (certificate signed by the stack's CA). */
    secure: { brokers: string[]; caFile: string; mechanism: string; username: string; passwordFile: string };
  };
  s3: { endpoint: string; region: string; bucket: string; accessKeyId: string; secretAccessKeyFile: string; forcePathStyle: true; version: string };
  elasticsearch: { url: string; version: string };
  kubernetes: { server: string; kubeconfig: string; caFile: string; version: string; etcd: string };
  /** The real node (scripts/stack/node.ts): pods tolerating `taint` run there, logs under `podLogsDir`. */
  node: { name: string; taint: string; containerdSocket: string; podLogsDir: string; containerLogMaxSize: string; containerLogMaxFiles: number };
}

export function readEndpoints(file = stackPaths().endpointsFile): StackEndpoints {
  if (!existsSync(file)) {
    throw new Error(`no stack endpoints at ${file}: run \`npm run stack -- up\` first`);
  }
  return JSON.parse(readFileSync(file, 'utf8')) as StackEndpoints;
}

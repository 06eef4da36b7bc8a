/** Versions of the servers the stack installs. Changing one here reinstalls it on the next `up`. */
export const VERSIONS = {
  kafka: '3.9.2',
  elasticsearch: '8.19.21',
  /** A pseudo-version: MinIO's repository publishes no semver tags. This is its last commit (2026-02-12). */
  minio: 'v0.0.0-20260212201848-7aac2a2c5b7c',
  kubernetes: 'v1.34.4',
  /** etcd is built from the version kube-apiserver itself depends on (go.etcd.io/etcd/server/v3). */
  etcd: 'v3.6.4',
} as const;

/** Loopback ports, away from the servers' defaults so a developer's own servers do not collide. */
export const PORTS = {
  kafka: 19092,
  kafkaController: 19093,
  /** The TLS + SASL/SCRAM listener. */
  kafkaSecure: 19094,
  minio: 19000,
  elasticsearch: 19200,
  elasticsearchTransport: 19300,
  etcdClient: 12379,
  etcdPeer: 12380,
  kubeApiserver: 16443,
  /** The node (scripts/stack/node.ts): kubelet API and health, controller-manager and scheduler health. */
  kubelet: 16250,
  kubeletHealthz: 16248,
  kubeControllerManager: 16257,
  kubeScheduler: 16259,
} as const;

export const HOST = '127.0.0.1';
export const S3_BUCKET = 'logship';

/** MinIO, the S3-compatible server, built from its source with `go install`; a bucket made ready. */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { ensureDir, httpGet, logFile, runLogged, startDaemon, waitUntilReady, writeFileAtomic, type StackPaths } from './context.js';
import { runWithProgress } from './progress.js';
import { HOST, PORTS, S3_BUCKET, VERSIONS } from './versions.js';

const NAME = 'minio';
export const MINIO_ACCESS_KEY = 'logship-stack';

export function minioBinary(paths: StackPaths): string {
  return join(paths.bin, `minio-${VERSIONS.minio}`);
}

export function minioEndpoint(): string {
  return `http://${HOST}:${PORTS.minio}`;
}

export function minioSecretFile(paths: StackPaths): string {
  return join(paths.run, NAME, 'secret-access-key');
}

export async function installMinio(paths: StackPaths): Promise<boolean> {
  const binary = minioBinary(paths);
  if (existsSync(binary)) return false;
  const gobin = ensureDir(join(paths.build, 'minio-bin'));
  await runWithProgress(`minio: building MinIO ${VERSIONS.minio} from source (go install)`, 'go', ['install', `github.com/minio/minio@${VERSIONS.minio}`], logFile(paths, 'install-minio'), {
    env: { ...process.env, GOBIN: gobin, GOFLAGS: '-buildvcs=false' },
  });
  ensureDir(paths.bin);
  await runLogged('mv', [join(gobin, 'minio'), binary], logFile(paths, 'install-minio'));
  return true;
}

/** The root secret is made once per stack home and kept in a 0600 file; it is never printed. */
function rootSecret(paths: StackPaths): string {
  const file = minioSecretFile(paths);
  if (!existsSync(file)) writeFileAtomic(file, randomBytes(24).toString('hex'), 0o600);
  return readFileSync(file, 'utf8').trim();
}

export function startMinio(paths: StackPaths): void {
  const dir = ensureDir(join(paths.run, NAME));
  startDaemon(paths, {
    name: NAME,
    command: minioBinary(paths),
    args: ['server', join(dir, 'data'), '--address', `${HOST}:${PORTS.minio}`, '--quiet', '--anonymous'],
    env: {
      MINIO_ROOT_USER: MINIO_ACCESS_KEY,
      MINIO_ROOT_PASSWORD: rootSecret(paths),
      MINIO_BROWSER: 'off',
      MINIO_UPDATE: 'off',
      MINIO_CALLHOME_ENABLE: 'off',
    },
    marker: `${HOST}:${PORTS.minio}`,
  });
}

export function stackS3Client(paths: StackPaths): S3Client {
  return new S3Client({
    endpoint: minioEndpoint(),
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: MINIO_ACCESS_KEY, secretAccessKey: rootSecret(paths) },
    maxAttempts: 1,
  });
}

/** Ready when MinIO says so, the bucket exists, and listing it works. */
export async function waitForMinio(paths: StackPaths, timeoutMs: number): Promise<void> {
  await waitUntilReady(paths, NAME, async () => (await httpGet(`${minioEndpoint()}/minio/health/ready`)).status === 200, timeoutMs);
  const s3 = stackS3Client(paths);
  try {
    try {
      await s3.send(new HeadBucketCommand({ Bucket: S3_BUCKET }));
    } catch {
      await s3.send(new CreateBucketCommand({ Bucket: S3_BUCKET }));
    }
    await s3.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, MaxKeys: 1 }));
  } finally {
    s3.destroy();
  }
}

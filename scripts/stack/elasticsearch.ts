/**
 * Elasticsearch 8.x from Maven Central's integ-test-zip distribution: a real, minimal node (no bundled
 * JDK, security off). It refuses to run as root, so as root it runs as the `logship-stack` user.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, cpSync, existsSync, mkdtempSync, readdirSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ensureDir, httpGet, logFile, startDaemon, StackError, waitUntilReady, writeFileAtomic, type StackPaths } from './context.js';
import { runWithProgress } from './progress.js';
import { HOST, PORTS, VERSIONS } from './versions.js';

const NAME = 'elasticsearch';
const SERVICE_USER = 'logship-stack';

export function elasticsearchHome(paths: StackPaths): string {
  return join(paths.home, `elasticsearch-${VERSIONS.elasticsearch}`);
}

export function elasticsearchUrl(): string {
  return `http://${HOST}:${PORTS.elasticsearch}`;
}

export async function installElasticsearch(paths: StackPaths): Promise<boolean> {
  const home = elasticsearchHome(paths);
  if (existsSync(join(home, 'bin', 'elasticsearch'))) return false;
  const log = logFile(paths, 'install-elasticsearch');
  const zip = join(ensureDir(paths.downloads), `elasticsearch-${VERSIONS.elasticsearch}.zip`);
  if (!existsSync(zip)) {
    await runWithProgress(
      `elasticsearch: downloading Elasticsearch ${VERSIONS.elasticsearch} (integ-test zip, Maven)`,
      'mvn',
      ['-q', '-B', 'dependency:copy', `-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:${VERSIONS.elasticsearch}:zip`, `-DoutputDirectory=${paths.downloads}`],
      log,
    );
  }
  const work = mkdtempSync(join(ensureDir(paths.build), 'es-'));
  try {
    await runWithProgress(`elasticsearch: unpacking ${basename(zip)}`, 'unzip', ['-q', zip, '-d', work], log);
    rmSync(home, { recursive: true, force: true });
    renameSync(join(work, `elasticsearch-${VERSIONS.elasticsearch}`), home);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return true;
}

/** A JDK for Elasticsearch: $ES_JAVA_HOME, $JAVA_HOME, or the one `java` on PATH belongs to. */
function javaHome(): string {
  const fromEnv = process.env.ES_JAVA_HOME ?? process.env.JAVA_HOME;
  if (fromEnv && existsSync(join(fromEnv, 'bin', 'java'))) return fromEnv;
  const java = execFileSync('sh', ['-c', 'command -v java'], { encoding: 'utf8' }).trim();
  if (!java) throw new StackError('no java on PATH for Elasticsearch (set ES_JAVA_HOME)');
  return dirname(dirname(realpathSync(java)));
}

function ensureServiceUser(): { uid: number; gid: number } {
  try {
    execFileSync('id', ['-u', SERVICE_USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', SERVICE_USER], { stdio: 'inherit' });
  }
  const uid = Number(execFileSync('id', ['-u', SERVICE_USER], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', SERVICE_USER], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

function chownTree(path: string, uid: number, gid: number): void {
  chownSync(path, uid, gid);
  if (!statSync(path).isDirectory()) return;
  for (const entry of readdirSync(path)) chownTree(join(path, entry), uid, gid);
}

export function startElasticsearch(paths: StackPaths): void {
  const dir = ensureDir(join(paths.run, NAME));
  const config = join(dir, 'config');
  if (!existsSync(join(config, 'jvm.options'))) cpSync(join(elasticsearchHome(paths), 'config'), config, { recursive: true });
  // Keep GC logs and heap dumps inside the run folder rather than the installation.
  writeFileAtomic(join(config, 'jvm.options.d', 'logship-stack.options'), ['-Xms1g', '-Xmx1g', `-XX:HeapDumpPath=${dir}`, ''].join('\n'));
  ensureDir(join(dir, 'data'));
  ensureDir(join(dir, 'logs'));
  ensureDir(join(dir, 'tmp'));
  const settings = [
    `-Ecluster.name=logship-stack`,
    `-Enode.name=stack-node`,
    '-Ediscovery.type=single-node',
    '-Expack.security.enabled=false',
    `-Enetwork.host=${HOST}`,
    `-Ehttp.port=${PORTS.elasticsearch}`,
    `-Etransport.port=${PORTS.elasticsearchTransport}`,
    `-Epath.data=${join(dir, 'data')}`,
    `-Epath.logs=${join(dir, 'logs')}`,
    // A test machine's disk may be fuller than a cluster's; never flip indices to read-only for that.
    '-Ecluster.routing.allocation.disk.threshold_enabled=false',
    '-Eaction.destructive_requires_name=false',
  ];
  const env = { ES_JAVA_HOME: javaHome(), ES_PATH_CONF: config, ES_TMPDIR: join(dir, 'tmp'), LOGSHIP_STACK_SERVER: NAME };
  const executable = join(elasticsearchHome(paths), 'bin', 'elasticsearch');
  if (process.getuid?.() === 0) {
    const { uid, gid } = ensureServiceUser();
    chownTree(dir, uid, gid);
    startDaemon(paths, {
      name: NAME,
      command: 'setpriv',
      args: [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', executable, ...settings],
      env,
      cwd: dir,
      marker: `-Ehttp.port=${PORTS.elasticsearch}`,
    });
  } else {
    startDaemon(paths, { name: NAME, command: executable, args: settings, env, cwd: dir, marker: `-Ehttp.port=${PORTS.elasticsearch}` });
  }
}

export async function waitForElasticsearch(paths: StackPaths, timeoutMs: number): Promise<void> {
  await waitUntilReady(
    paths,
    NAME,
    async () => {
      const res = await httpGet(`${elasticsearchUrl()}/_cluster/health?wait_for_status=yellow&timeout=2s`);
      return res.status === 200 && (JSON.parse(res.body) as { status?: string }).status !== 'red';
    },
    timeoutMs,
  );
}

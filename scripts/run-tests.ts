/**
 * The project's test command (`npm test`): brings the stack up (installing it on a fresh machine),
 * runs every test file with node:test, then runs them all once more under the images' Node.js
 * (scripts/image-node.ts, fetched once), which may be another major than the machine's: V8 12 (Node
 * 22) keeps freed heap pages where Node 20's V8 returns them (shared/v8-heap.ts), and only a run on
 * it shows whether the code, and the binaries the integration tests start, work there. `--unit` runs
 * only the unit tests (on both), without the stack. Extra arguments that name files run just those
 * files, on the machine's node only.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { delimiter, dirname, join, relative } from 'node:path';
import { imageNode, imageNodeVersion } from './image-node.js';
import { REPO_ROOT } from './stack/context.js';

const TEST_TIMEOUT_MS = 15 * 60_000;

/** The machine runs Node 20 (images run 22): the AWS SDK's notice about its future Node 22 floor is noise here. */
const TEST_ENV = { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };

function testFiles(dir: string): string[] {
  return readdirSync(join(REPO_ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.test.ts'))
    .map((e) => relative(REPO_ROOT, join(e.parentPath, e.name)))
    .sort();
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPO_ROOT, stdio: 'inherit', env: { ...process.env, ...TEST_ENV, ...env } });
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function main(argv: string[]): Promise<number> {
  const unitOnly = argv.includes('--unit');
  const named = argv.filter((a) => !a.startsWith('--'));
  const files = named.length > 0 ? named : [...testFiles('test/unit'), ...(unitOnly ? [] : testFiles('test/integration'))];
  const needsStack = files.some((f) => !f.startsWith('test/unit/'));
  if (needsStack) {
    const code = await run(process.execPath, ['--import', 'tsx', 'scripts/stack/cli.ts', 'up']);
    if (code !== 0) {
      process.stderr.write(`tests: the stack did not come up (exit ${code})\n`);
      return code;
    }
  }
  // One file at a time: integration tests share the servers, and some of them stop one for a while.
  const code = await run(process.execPath, nodeTestArgs(files));
  if (code !== 0 || named.length > 0) return code;
  const version = imageNodeVersion();
  if (process.version === `v${version}`) return code;
  const imageNodePath = imageNode(version, (message) => process.stderr.write(`tests: ${message}\n`));
  process.stderr.write(`tests: ${unitOnly ? 'the unit tests' : 'every test'} again, under the images' Node.js ${version}\n`);
  // First on PATH too: the binaries and tools the tests start run under it as well.
  return run(imageNodePath, nodeTestArgs(files), { PATH: `${dirname(imageNodePath)}${delimiter}${process.env.PATH ?? ''}` });
}

function nodeTestArgs(files: readonly string[]): string[] {
  return ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', `--test-timeout=${TEST_TIMEOUT_MS}`, ...files];
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`tests: ${String(error)}\n`);
    process.exit(1);
  },
);

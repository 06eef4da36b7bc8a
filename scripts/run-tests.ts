/**
 * The project's test command (`npm test`): brings the stack up (installing it on a fresh machine),
 * then runs every test file with node:test. `--unit` runs only the unit tests, without the stack.
 * Extra arguments that name files run just those files.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
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

function run(command: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPO_ROOT, stdio: 'inherit', env: { ...process.env, ...TEST_ENV } });
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
  return run(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', `--test-timeout=${TEST_TIMEOUT_MS}`, ...files]);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`tests: ${String(error)}\n`);
    process.exit(1);
  },
);

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../shared/logger.js';
import { ShutdownCoordinator } from '../../shared/shutdown.js';

const silent = createLogger({ name: 'test', level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

describe('ShutdownCoordinator', () => {
  it('aborts its signal first, then runs steps in registration order', async () => {
    const order: string[] = [];
    const coordinator = new ShutdownCoordinator({ deadlineMs: 5_000, logger: silent });
    coordinator.signal.addEventListener('abort', () => order.push('signal'));
    coordinator
      .register('stop reading', () => {
        order.push('stop reading');
      })
      .register('flush', async () => {
        await sleep(5);
        order.push('flush');
      })
      .register('checkpoint', () => {
        order.push('checkpoint');
      });
    const result = await coordinator.shutdown('test');
    assert.deepEqual(order, ['signal', 'stop reading', 'flush', 'checkpoint']);
    assert.deepEqual(result.completed, ['stop reading', 'flush', 'checkpoint']);
    assert.equal(result.exitCode, 0);
  });

  it('runs once however often it is asked', async () => {
    let runs = 0;
    const coordinator = new ShutdownCoordinator({ deadlineMs: 1_000, logger: silent }).register('count', () => {
      runs++;
    });
    const [a, b] = await Promise.all([coordinator.shutdown('one'), coordinator.shutdown('two')]);
    assert.equal(runs, 1);
    assert.equal(a, b);
    assert.equal(a.reason, 'one');
  });

  it('keeps going after a failing step and exits non-zero', async () => {
    const order: string[] = [];
    const coordinator = new ShutdownCoordinator({ deadlineMs: 1_000, logger: silent })
      .register('flush', () => {
        throw new Error('broker gone');
      })
      .register('close', () => {
        order.push('close');
      });
    const result = await coordinator.shutdown('test');
    assert.deepEqual(order, ['close']);
    assert.deepEqual(result.failed, [{ name: 'flush', error: 'Error: broker gone' }]);
    assert.equal(result.exitCode, 1);
  });

  it('gives up a step at its time share so that the steps after it still run before the deadline', async () => {
    const order: string[] = [];
    let flushAborted = false;
    const coordinator = new ShutdownCoordinator({ deadlineMs: 2_000, logger: silent })
      .register(
        'flush',
        (signal) =>
          new Promise<void>((resolve) => {
            // Never finishes by itself (an unreachable broker): only its signal ends it.
            signal.addEventListener('abort', () => {
              flushAborted = true;
              resolve();
            });
          }).then(() => new Promise<void>(() => undefined)),
        { reserveMs: 1_500 },
      )
      .register('checkpoint', () => {
        order.push('checkpoint');
      });
    const result = await coordinator.shutdown('test');
    assert.ok(flushAborted, "the step's signal aborted at its share");
    assert.deepEqual(order, ['checkpoint']);
    assert.deepEqual(result.completed, ['checkpoint']);
    assert.equal(result.failed[0]?.name, 'flush');
    assert.equal(result.timedOut, undefined, 'the deadline was not reached');
    assert.equal(result.exitCode, 1);
  });

  it('stops at the deadline, aborting the step in progress, and skips the rest', async () => {
    let stepSignal: AbortSignal | undefined;
    let lateRan = false;
    const coordinator = new ShutdownCoordinator({ deadlineMs: 50, logger: silent })
      .register('hangs', (signal) => {
        stepSignal = signal;
        return new Promise(() => undefined);
      })
      .register('late', () => {
        lateRan = true;
      });
    const result = await coordinator.shutdown('test');
    assert.equal(result.timedOut, 'hangs');
    assert.equal(result.exitCode, 1);
    assert.equal(lateRan, false);
    assert.equal(stepSignal?.aborted, true);
  });

  it('turns SIGTERM into an ordered shutdown and exit code in a real process', async () => {
    const program = `
      import { createLogger } from './shared/logger.ts';
      import { ShutdownCoordinator } from './shared/shutdown.ts';
      const logger = createLogger({ name: 't', level: 'silent' });
      const c = new ShutdownCoordinator({ deadlineMs: 2000, logger })
        .register('a', () => { process.stdout.write('step a\\n'); })
        .register('b', async () => { await new Promise((r) => setTimeout(r, 20)); process.stdout.write('step b\\n'); })
        .installSignalHandlers();
      const keepAlive = setInterval(() => undefined, 1000);
      c.signal.addEventListener('abort', () => clearInterval(keepAlive));
      process.stdout.write('ready\\n');
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    const ready = new Promise<void>((resolve) => {
      child.stdout.on('data', (chunk: string) => {
        out += chunk;
        if (out.includes('ready')) resolve();
      });
    });
    await ready;
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
    assert.equal(out, 'ready\nstep a\nstep b\n');
  });
});

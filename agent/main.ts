#!/usr/bin/env node
/** `logship-agent --config <file>`: tails this node's pod logs into Kafka. `logship-agent top`: a live view of a running agent. */
import { parseCli } from '../shared/cli.js';
import { describeError } from '../shared/errors.js';
import { setHeapGrowingPercent } from '../shared/v8-heap.js';
import { createLogger } from '../shared/logger.js';
import { ShutdownCoordinator } from '../shared/shutdown.js';
import { agentConfigSchema } from './config.js';
import { startAgent } from './pipeline.js';

/** Old generation limit at 2x the live heap: see shared/v8-heap.ts (measured in bench/agent.ts). */
const HEAP_GROWING_PERCENT = 100;

if (process.argv[2] === 'top') {
  const { topCommand } = await import('../shared/top/top.js');
  process.exit(await topCommand('logship-agent', 9102, process.argv.slice(3)));
}
setHeapGrowingPercent(HEAP_GROWING_PERCENT);
const outcome = parseCli({ binary: 'logship-agent', schema: agentConfigSchema });
if (outcome.kind === 'exit') {
  process.exitCode = outcome.code;
} else {
  const config = outcome.config;
  const logger = createLogger({ name: 'logship-agent', level: config.logLevel, base: { node: config.nodeName } });
  const shutdown = new ShutdownCoordinator({ deadlineMs: config.shutdown.timeoutMs, logger }).installSignalHandlers();
  startAgent(config, logger, shutdown).catch(async (error: unknown) => {
    logger.fatal({ err: error }, `agent failed to start: ${describeError(error)}`);
    const result = await shutdown.shutdown('start-up failure');
    process.exit(result.exitCode || 1);
  });
}

#!/usr/bin/env node
/**
 * `logship-aggregator --config <file>`: consumes the log topics and writes them to the sinks.
 * `logship-aggregator athena-ddl --bucket <b> [--prefix logs] [--table logs] [--database default]`
 * prints the Athena table for the S3 layout. `logship-aggregator top`: a live view of a running aggregator.
 */
import { parseArgs } from 'node:util';
import { EXIT_CONFIG, parseCli } from '../shared/cli.js';
import { describeError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { ShutdownCoordinator } from '../shared/shutdown.js';
import { athenaTableDdl } from './athena.js';
import { aggregatorConfigSchema } from './config.js';
import { startAggregator } from './pipeline.js';

function athenaCommand(args: string[]): number {
  try {
    const { values } = parseArgs({
      args,
      options: { bucket: { type: 'string' }, prefix: { type: 'string', default: 'logs' }, table: { type: 'string', default: 'logs' }, database: { type: 'string' } },
      strict: true,
    });
    if (values.bucket === undefined) throw new Error('--bucket is required');
    process.stdout.write(`${athenaTableDdl({ bucket: values.bucket, prefix: values.prefix, table: values.table, database: values.database })}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`logship-aggregator athena-ddl: ${describeError(error)}\nusage: logship-aggregator athena-ddl --bucket <bucket> [--prefix logs] [--table logs] [--database <db>]\n`);
    return EXIT_CONFIG;
  }
}

if (process.argv[2] === 'top') {
  const { topCommand } = await import('../shared/top/top.js');
  process.exit(await topCommand('logship-aggregator', 9103, process.argv.slice(3)));
}
if (process.argv[2] === 'athena-ddl') {
  process.exitCode = athenaCommand(process.argv.slice(3));
} else {
  const outcome = parseCli({ binary: 'logship-aggregator', schema: aggregatorConfigSchema });
  if (outcome.kind === 'exit') {
    process.exitCode = outcome.code;
  } else {
    const config = outcome.config;
    const logger = createLogger({ name: 'logship-aggregator', level: config.logLevel, base: { group: config.kafka.groupId } });
    const shutdown = new ShutdownCoordinator({ deadlineMs: config.shutdown.timeoutMs, logger }).installSignalHandlers();
    startAggregator(config, logger, shutdown).catch(async (error: unknown) => {
      logger.fatal({ err: error }, `aggregator failed to start: ${describeError(error)}`);
      const result = await shutdown.shutdown('start-up failure');
      process.exit(result.exitCode || 1);
    });
  }
}

/**
 * What both binaries do before anything else: read `--config <file>` (and `--print-config`), load and
 * validate the configuration, and on any problem print every one of them and exit non-zero.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';
import type { z } from 'zod';
import { ENV_PREFIX, loadConfig } from './config.js';
import { ConfigError } from './errors.js';
import { redactConfig, scrubSecrets, secretValuesInSources } from './config-secrets.js';
import { redactSecrets } from './logger.js';

export const EXIT_CONFIG = 2;

export interface CliOptions<S extends z.ZodType> {
  binary: string;
  schema: S;
  argv?: string[];
  env?: NodeJS.ProcessEnv;
  /** Where errors and `--print-config` go; stderr / stdout by default. */
  stderr?: NodeJS.WritableStream;
  stdout?: NodeJS.WritableStream;
}

export type CliOutcome<T> = { kind: 'run'; config: T; configFile?: string } | { kind: 'exit'; code: number };

export function parseCli<S extends z.ZodType>(options: CliOptions<S>): CliOutcome<z.output<S>> {
  const stderr = options.stderr ?? process.stderr;
  const stdout = options.stdout ?? process.stdout;
  let values: { config?: string; 'print-config'?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: options.argv ?? process.argv.slice(2),
      options: { config: { type: 'string', short: 'c' }, 'print-config': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    stderr.write(`${options.binary}: ${(error as Error).message}\n${usage(options.binary)}`);
    return { kind: 'exit', code: EXIT_CONFIG };
  }
  if (values.help) {
    stdout.write(usage(options.binary));
    return { kind: 'exit', code: 0 };
  }
  try {
    const config = loadConfig(options.schema, { file: values.config, env: options.env });
    if (values['print-config']) {
      stdout.write(`${JSON.stringify(redactSecrets(redactConfig(options.schema, config)), null, 2)}\n`);
      return { kind: 'exit', code: 0 };
    }
    return { kind: 'run', config, configFile: values.config };
  } catch (error) {
    if (error instanceof ConfigError) {
      // Problems name settings, not values; should a message quote one, a secret's is scrubbed anyway.
      const secrets = secretValuesInSources(options.schema, options.env ?? process.env, ENV_PREFIX, readDocument(values.config));
      stderr.write(`${options.binary}: ${scrubSecrets(error.message, secrets)}\n`);
      return { kind: 'exit', code: EXIT_CONFIG };
    }
    throw error;
  }
}

function usage(binary: string): string {
  return [
    `usage: ${binary} --config <file.yaml> [--print-config]`,
    '',
    '  --config, -c     configuration file (YAML); LOGSHIP_… environment variables override it',
    '  --print-config   print the effective configuration (secrets redacted) and exit',
    '',
  ].join('\n');
}

/** The config file's YAML as written, for scrubbing secrets from errors; undefined when unreadable. */
function readDocument(file: string | undefined): unknown {
  if (file === undefined) return undefined;
  try {
    return parse(readFileSync(file, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Credentials are given either inline (usually through a `LOGSHIP_…` environment override fed from a
 * Kubernetes Secret) or as a file path (a mounted Secret). Never from the YAML file in clear text by
 * convention; the schema helpers here make both forms available and resolve them at start.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, ErrorCode } from './errors.js';

/** The JSON Schema mark of a secret setting: how redaction finds every secret from the schema (config-secrets.ts). */
export const SECRET_MARK = 'x-logship-secret';

/** `{ value?, file? }` with at most one of them set. */
export const secretSchema = z
  .strictObject({
    value: z.string().min(1).optional().describe('The secret itself; prefer an environment override or `file`.'),
    file: z.string().min(1).optional().describe('Path of a file holding the secret (e.g. a mounted Secret); surrounding whitespace is trimmed.'),
  })
  .refine((s) => !(s.value !== undefined && s.file !== undefined), { message: 'set either value or file, not both' })
  .meta({ [SECRET_MARK]: true });

export type SecretRef = z.output<typeof secretSchema>;

/** Reads a secret's value; `undefined` when neither form is set. The path in errors is the setting's. */
export function resolveSecret(ref: SecretRef | undefined, settingPath: string): string | undefined {
  if (!ref) return undefined;
  if (ref.value !== undefined) return ref.value;
  if (ref.file === undefined) return undefined;
  try {
    return readFileSync(ref.file, 'utf8').trim();
  } catch (error) {
    throw new ConfigError([{ path: `${settingPath}.file`, message: `cannot read secret file ${ref.file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}` }], {
      code: ErrorCode.CONFIG_UNREADABLE,
      cause: error,
    });
  }
}

/** Reads a PEM or other file given by a TLS setting. */
export function readTlsFile(path: string | undefined, settingPath: string): string | undefined {
  return path === undefined ? undefined : resolveSecret({ file: path }, settingPath);
}

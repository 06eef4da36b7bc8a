/**
 * The stack's certificate authority and the serving certificates it signs, made once with openssl
 * under `run/pki` (0700). Several servers start in parallel: the CA is created once per process.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDir, logFile, runLogged, writeFileAtomic, type StackPaths } from './context.js';

let caReady: Promise<void> | undefined;

export function caFile(paths: StackPaths): string {
  return join(paths.pki, 'ca.crt');
}

function openssl(paths: StackPaths): (...args: string[]) => Promise<void> {
  const log = logFile(paths, 'pki');
  return (...args) => runLogged('openssl', args, log, { cwd: paths.pki });
}

export function ensureCa(paths: StackPaths): Promise<void> {
  caReady ??= (async () => {
    ensureDir(paths.pki, 0o700);
    if (!existsSync(caFile(paths))) {
      await openssl(paths)('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3650', '-subj', '/CN=logship-stack-ca');
    }
  })();
  return caReady;
}

/** A serving certificate `<name>.crt` / PKCS#8 key `<name>.key` signed by the CA, for the given subject alternative names. */
export async function ensureServerCertificate(paths: StackPaths, name: string, subjectAltNames: readonly string[]): Promise<{ cert: string; key: string }> {
  await ensureCa(paths);
  const cert = join(paths.pki, `${name}.crt`);
  const key = join(paths.pki, `${name}.key`);
  if (!existsSync(cert)) {
    const run = openssl(paths);
    writeFileAtomic(
      join(paths.pki, `${name}.ext`),
      ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth', `subjectAltName=${subjectAltNames.join(',')}`, ''].join('\n'),
    );
    await run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    await run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '3650', '-extfile', `${name}.ext`);
  }
  return { cert, key };
}

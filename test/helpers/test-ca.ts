/**
 * A throwaway certificate authority for TLS tests, made with the openssl CLI (Debian's
 * `openssl`, which `ca-certificates` in .ci/run depends on): a CA, and a server
 * certificate it signed for 127.0.0.1 and localhost. Everything lives in `dir`.
 *
 *   const ca = await makeTestCa(dir);
 *   // ca.caFile: what agents trust (ca_file); ca.certFile + ca.keyFile: what the server presents
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCa {
  /** PEM of the CA certificate. */
  caFile: string;
  /** PEM of the server certificate (subjectAltName IP:127.0.0.1, DNS:localhost). */
  certFile: string;
  /** PEM of the server's private key (0600). */
  keyFile: string;
}

export async function makeTestCa(dir: string, name = 'vmkit test'): Promise<TestCa> {
  const f = (n: string) => join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', `/CN=${name} CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await run('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost']);
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('server.ext')]);
  return { caFile: f('ca.pem'), certFile: f('server.pem'), keyFile: f('server.key') };
}

/** Why TLS tests that need the openssl CLI cannot run here, or false. */
export async function opensslMissing(): Promise<string | false> {
  try {
    await run('openssl', ['version']);
    return false;
  } catch {
    return 'the openssl CLI is not installed (apt-get install openssl)';
  }
}

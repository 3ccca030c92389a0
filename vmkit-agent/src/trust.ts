import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { setDefaultCACertificates } from 'node:tls';
import { ConfigError } from './config.ts';

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
/** A CA bundle larger than this is not what ca_file is for. */
const MAX_CA_FILE_BYTES = 1024 * 1024;

/**
 * Reads `ca_file` (--ca-file): one or more PEM certificates, each parsed, so a wrong
 * file is a configuration error now rather than a TLS failure at every dial.
 */
export async function readCaFile(file: string, what = 'ca_file'): Promise<string[]> {
  if (!isAbsolute(file)) throw new ConfigError(`${what} ${JSON.stringify(file)} must be an absolute path`);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${what} ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (Buffer.byteLength(text) > MAX_CA_FILE_BYTES) throw new ConfigError(`${what} ${file} is larger than ${MAX_CA_FILE_BYTES} bytes`);
  const certs = text.match(PEM_CERT) ?? [];
  if (certs.length === 0) throw new ConfigError(`${what} ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  for (const [i, pem] of certs.entries()) {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new ConfigError(`${what} ${file}: certificate ${i + 1} is refused: ${(err as Error).message}`);
    }
  }
  return certs;
}

/**
 * From now on this process's TLS clients (the agent WebSocket, enrollment and release
 * downloads through fetch) trust exactly `certs`, instead of the system's roots, as
 * curl's --cacert does. Process-wide on purpose: fetch takes no per-call CA, and the
 * agent's only TLS peer is its control plane.
 */
export function trustOnly(certs: string[]): void {
  setDefaultCACertificates(certs);
}

/** Reads `file` and trusts only its CAs. */
export async function trustCaFile(file: string, what?: string): Promise<string[]> {
  const certs = await readCaFile(file, what);
  trustOnly(certs);
  return certs;
}

import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createFileOnce } from '../create-once.ts';
import { generateSigningKeyPair, privateKeyFromPem, privateKeyToPem, signingKeyPairFrom } from '@vmkit/protocol';
import type { SigningKeyPair } from '@vmkit/protocol';

export const SIGNING_KEY_FILE = 'signing-key.pem';

/**
 * The control plane's Ed25519 command-signing key, `<dataDir>/signing-key.pem`
 * (PKCS#8, mode 0600), created on first start.
 */
export function loadOrCreateSigningKey(dataDir: string): { key: SigningKeyPair; created: boolean } {
  const file = join(dataDir, SIGNING_KEY_FILE);
  let pem: string | undefined;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (pem !== undefined) {
    chmodSync(file, 0o600);
    return { key: signingKeyPairFrom(privateKeyFromPem(pem)), created: false };
  }
  const key = generateSigningKeyPair();
  // Never overwrite a key another process wrote in the meantime; use the one that won.
  if (!createFileOnce(file, privateKeyToPem(key.privateKey), 0o600)) return loadOrCreateSigningKey(dataDir);
  return { key, created: true };
}

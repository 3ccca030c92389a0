import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
  // 'wx': never overwrite a key another process wrote in the meantime.
  writeFileSync(file, privateKeyToPem(key.privateKey), { mode: 0o600, flag: 'wx' });
  return { key, created: true };
}

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { createFileOnce } from '../create-once.ts';
import { generateEd25519KeyPair, sshFingerprint } from './ssh-key.ts';

export const HOST_KEY_FILE = 'ssh-gateway-host-key';

export interface GatewayHostKey {
  /** OpenSSH private key (what ssh2's server takes). */
  privateKey: string;
  /** `ssh-ed25519 AAAA...`, for a known_hosts line. */
  publicKey: string;
  /** `SHA256:...`, what `ssh` prints on first contact; users pin it. */
  fingerprint: string;
  created: boolean;
}

/**
 * The gateway's Ed25519 host key, made once and kept 0600 in the data directory: a
 * new key on every start would teach users to click through host key warnings.
 */
export function loadOrCreateHostKey(dataDir: string): GatewayHostKey {
  const file = join(dataDir, HOST_KEY_FILE);
  let privateKey: string;
  let created = false;
  try {
    privateKey = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    privateKey = generateEd25519KeyPair('vmkit ssh gateway').private;
    // Two control planes starting on one data dir keep the first key, and read it whole.
    created = createFileOnce(file, privateKey, 0o600);
    if (!created) privateKey = readFileSync(file, 'utf8');
  }
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new Error(`the SSH gateway host key ${file} cannot be read: ${parsed.message}`);
  const blob = parsed.getPublicSSH();
  return { privateKey, publicKey: `${parsed.type} ${blob.toString('base64')}`, fingerprint: sshFingerprint(blob), created };
}

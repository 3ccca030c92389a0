import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createFileOnce } from '../create-once.ts';

export const SECRET_KEY_FILE = 'secret-box.key';

/** Envelope version; a new algorithm or key layout gets a new prefix, old ones stay readable. */
const VERSION = 'v1';
const IV_BYTES = 12; // the size GCM is specified for; larger IVs are hashed down
const TAG_BYTES = 16;
const KEY_BYTES = 32;

/** Why a sealed secret could not be opened. Local to the control plane, never sent as is. */
export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

/**
 * Encryption at rest for provider credentials (cloud API tokens, DNS tokens, GitHub App
 * keys): AES-256-GCM under a key kept in `<dataDir>/secret-box.key` (0600), so a copy of
 * the database alone reveals nothing. Each seal uses a fresh random IV. The caller's
 * `context` (say `ws_1/compute/hetzner`) is bound as associated data, so a ciphertext
 * moved to another row or workspace does not open.
 *
 * Envelope: `v1.<key id>.<iv>.<tag>.<ciphertext>`, base64url parts; the key id (8 hex of
 * the key's SHA-256) tells "sealed under another key" apart from "tampered with".
 */
export class SecretBox {
  readonly keyId: string;
  readonly #encKey: Buffer;
  readonly #fingerprintKey: Buffer;
  readonly #masterKey: Buffer;

  constructor(masterKey: Buffer) {
    if (masterKey.length !== KEY_BYTES) throw new SecretBoxError(`the secret-box key must be ${KEY_BYTES} bytes`);
    this.keyId = createHash('sha256').update(masterKey).digest('hex').slice(0, 8);
    this.#masterKey = Buffer.from(masterKey);
    // Separate subkeys: the fingerprint key never touches a ciphertext and vice versa.
    this.#encKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'vmkit secret-box v1 aes-256-gcm', KEY_BYTES));
    this.#fingerprintKey = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'vmkit secret-box v1 fingerprint', KEY_BYTES));
  }

  /** The box for `<dataDir>`, creating its key file on first use. */
  static forDataDir(dataDir: string): SecretBox {
    return new SecretBox(loadOrCreateSecretKey(dataDir));
  }

  /**
   * The control plane's box: the key in `secretKeyFile` when one is given (several
   * processes on one database share it; the file must exist), else `<dataDir>`'s own.
   */
  static forConfig(config: { dataDir: string; secretKeyFile?: string | undefined }): SecretBox {
    if (config.secretKeyFile === undefined) return SecretBox.forDataDir(config.dataDir);
    const key = readKey(config.secretKeyFile);
    if (!key) throw new SecretBoxError(`the secret key file ${config.secretKeyFile} does not exist (make one with: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)`);
    return new SecretBox(key);
  }

  /**
   * A key of its own for `purpose` (HKDF-SHA256 of the secret-box key): every process
   * given the same secret-box key derives the same one, and it never opens a sealed secret.
   */
  subkey(purpose: string): Buffer {
    if (purpose.startsWith('vmkit secret-box v1 ')) throw new SecretBoxError('that purpose names one of the box\'s own keys');
    return Buffer.from(hkdfSync('sha256', this.#masterKey, Buffer.alloc(0), purpose, KEY_BYTES));
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#encKey, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [VERSION, this.keyId, b64(iv), b64(cipher.getAuthTag()), b64(ct)].join('.');
  }

  open(envelope: string, context: string): string {
    const parts = envelope.split('.');
    if (parts.length !== 5 || parts[0] !== VERSION) throw new SecretBoxError('the sealed secret is not a v1 envelope');
    const [, keyId, ivText, tagText, ctText] = parts as [string, string, string, string, string];
    if (keyId !== this.keyId) {
      throw new SecretBoxError(`the secret was sealed under key ${keyId}, but ${SECRET_KEY_FILE} holds key ${this.keyId}; restore the matching key file or set the secret again`);
    }
    const iv = Buffer.from(ivText, 'base64url');
    const tag = Buffer.from(tagText, 'base64url');
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw new SecretBoxError('the sealed secret is malformed');
    const decipher = createDecipheriv('aes-256-gcm', this.#encKey, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(Buffer.from(ctText, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretBoxError('the sealed secret failed its integrity check (tampered with, or stored for another context)');
    }
  }

  /**
   * A short stable name for a secret, to show instead of it ("which token is set?").
   * Keyed, so a fingerprint of a low-entropy secret cannot be brute-forced without the
   * key file.
   */
  fingerprint(secret: string): string {
    return `sha256:${createHmac('sha256', this.#fingerprintKey).update(secret, 'utf8').digest('hex').slice(0, 16)}`;
  }
}

/**
 * Reads `<dataDir>/secret-box.key`, or creates it (32 random bytes, base64, mode 0600).
 * Creation writes a temporary file and hard-links it into place, so a concurrent start
 * never sees a half-written key and never overwrites one another process made. A key
 * file that exists but is malformed is refused, never replaced: replacing it would make
 * every stored secret unreadable.
 */
export function loadOrCreateSecretKey(dataDir: string): Buffer {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, SECRET_KEY_FILE);
  const existing = readKey(file);
  if (existing) return existing;
  createFileOnce(file, `${randomBytes(KEY_BYTES).toString('base64')}\n`, 0o600);
  const key = readKey(file);
  if (!key) throw new SecretBoxError(`${file} vanished while it was being created`);
  return key;
}

function readKey(file: string): Buffer | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  // A key file someone made group- or world-readable is narrowed again, as the signing key is.
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== KEY_BYTES) throw new SecretBoxError(`${file} is not a ${KEY_BYTES}-byte base64 key; refusing to replace it (stored secrets depend on it)`);
  return key;
}

function b64(buf: Buffer): string {
  return buf.toString('base64url');
}

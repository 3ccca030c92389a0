import { createHash, createPublicKey } from 'node:crypto';
import ssh2 from 'ssh2';

/** An operator's public key as the gateway stores it. */
export interface SshPublicKey {
  type: string;
  /** The key blob (what an SSH client sends during public-key authentication). */
  blob: Buffer;
  comment: string | null;
  /** `SHA256:<base64 without padding>`, as `ssh-keygen -lf` prints it. */
  fingerprint: string;
  /** The normalized line: `type base64 [comment]`. */
  line: string;
}

/** What the gateway accepts: keys ssh2 can verify, nothing known to be weak (DSA, short RSA). */
const TYPES = new Set(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa']);
const MIN_RSA_BITS = 2048;
const MAX_LINE = 16 * 1024;
const MAX_COMMENT = 200;

export class SshKeyError extends Error {
  override name = 'SshKeyError';
}

/** The length of an `ssh-ed25519` key blob: the type name and the 32-byte key, each with its length. */
const ED25519_BLOB_LENGTH = 4 + 'ssh-ed25519'.length + 4 + 32;

/**
 * A new Ed25519 key pair in OpenSSH's formats (private key file, `authorized_keys` line).
 * ssh2's generator drops the leading zero bytes of the public key, so about one pair in
 * 256 is malformed: neither ssh2 nor OpenSSH can read it back (ssh2 issue #1513). Such a
 * pair is made again; each is checked by parsing both halves.
 */
export function generateEd25519KeyPair(comment: string): { private: string; public: string } {
  for (let attempt = 0; attempt < 32; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    const pub = ssh2.utils.parseKey(pair.public);
    const priv = ssh2.utils.parseKey(pair.private);
    if (pub instanceof Error || priv instanceof Error) continue;
    if (pub.getPublicSSH().length !== ED25519_BLOB_LENGTH || !priv.getPublicSSH().equals(pub.getPublicSSH())) continue;
    return { private: pair.private, public: pair.public };
  }
  throw new Error('could not generate a well-formed Ed25519 key pair');
}

export function sshFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The algorithm name inside a key blob (its first SSH string). */
function blobType(blob: Buffer): string | null {
  if (blob.length < 4) return null;
  const len = blob.readUInt32BE(0);
  if (len > 64 || blob.length < 4 + len) return null;
  return blob.subarray(4, 4 + len).toString('latin1');
}

/**
 * Parses one OpenSSH public key line (`ssh-ed25519 AAAA... comment`). Throws
 * SshKeyError with a sentence a person can act on. authorized_keys options
 * (`command="..."`, `from=...`) are refused: the gateway decides what a key may do.
 */
export function parseSshPublicKey(input: string): SshPublicKey {
  const text = input.trim();
  if (text === '') throw new SshKeyError('The public key is empty.');
  if (text.length > MAX_LINE) throw new SshKeyError(`The public key is longer than ${MAX_LINE} characters.`);
  if (/[\r\n]/.test(text)) throw new SshKeyError('Send one public key line, not several.');
  if (/-----BEGIN/.test(text)) throw new SshKeyError('This looks like a PEM file; send the OpenSSH public key line (the .pub file).');
  const m = /^(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(text);
  if (!m) throw new SshKeyError('Expected "<type> <base64> [comment]", as in a .pub file.');
  const [, type = '', b64 = '', rawComment] = m;
  if (!TYPES.has(type)) {
    throw new SshKeyError(`Key type "${type.slice(0, 40)}" is not accepted; use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (${MIN_RSA_BITS} bits or more).`);
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new SshKeyError('The key data is not base64.');
  const blob = Buffer.from(b64, 'base64');
  if (blob.toString('base64') !== b64) throw new SshKeyError('The key data is not canonical base64.');
  if (blobType(blob) !== type) throw new SshKeyError(`The key data is not a ${type} key.`);
  const parsed = ssh2.utils.parseKey(blob);
  if (parsed instanceof Error || parsed.isPrivateKey()) throw new SshKeyError(`The key data is not a valid ${type} public key.`);
  if (type === 'ssh-rsa') {
    const bits = createPublicKey(parsed.getPublicPEM()).asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new SshKeyError(`RSA keys need at least ${MIN_RSA_BITS} bits; this one has ${bits}.`);
  }
  const comment = rawComment?.trim() || null;
  if (comment !== null) {
    if (comment.length > MAX_COMMENT) throw new SshKeyError(`The comment is longer than ${MAX_COMMENT} characters.`);
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
    if (/[\u0000-\u001f\u007f-\u009f]/.test(comment)) throw new SshKeyError('The comment contains control characters.');
  }
  return {
    type,
    blob,
    comment,
    fingerprint: sshFingerprint(blob),
    line: comment === null ? `${type} ${b64}` : `${type} ${b64} ${comment}`,
  };
}

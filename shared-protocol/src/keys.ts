import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
/** DER prefix of an Ed25519 PKCS#8 private key; the 32-byte seed follows it. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** An Ed25519 public key as it travels: base64url of the raw 32 bytes. */
export type PublicKeyText = string;

export interface SigningKeyPair {
  keyId: string;
  publicKey: PublicKeyText;
  privateKey: KeyObject;
}

/**
 * Key ids are fingerprints of the public key, so a key names itself and several
 * can be pinned side by side while keys rotate.
 */
export function keyIdOf(publicKey: PublicKeyText | KeyObject): string {
  const raw = typeof publicKey === 'string' ? decodeRawPublicKey(publicKey) : rawPublicKey(publicKey);
  return `ed25519:${createHash('sha256').update(raw).digest('hex').slice(0, 32)}`;
}

export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== 'ed25519') throw new TypeError('not an Ed25519 key');
  const der = pub.export({ format: 'der', type: 'spki' });
  return der.subarray(ED25519_SPKI_PREFIX.length);
}

export function encodePublicKey(key: KeyObject): PublicKeyText {
  return rawPublicKey(key).toString('base64url');
}

function decodeRawPublicKey(text: PublicKeyText): Buffer {
  if (!/^[A-Za-z0-9_-]{43}$/.test(text)) throw new TypeError('an Ed25519 public key is 43 base64url characters');
  return Buffer.from(text, 'base64url');
}

/** Turns the wire form back into a KeyObject; throws TypeError on anything else. */
export function decodePublicKey(text: PublicKeyText): KeyObject {
  const raw = decodeRawPublicKey(text);
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function isPublicKeyText(text: unknown): text is PublicKeyText {
  if (typeof text !== 'string') return false;
  try {
    decodePublicKey(text);
    return true;
  } catch {
    return false;
  }
}

export function generateSigningKeyPair(): SigningKeyPair {
  const { privateKey } = generateKeyPairSync('ed25519');
  return signingKeyPairFrom(privateKey);
}

export function signingKeyPairFrom(privateKey: KeyObject): SigningKeyPair {
  const publicKey = encodePublicKey(privateKey);
  return { keyId: keyIdOf(publicKey), publicKey, privateKey };
}

/** A private key from its 32-byte seed: deterministic keys for fixtures. */
export function privateKeyFromSeed(seed: Uint8Array): KeyObject {
  if (seed.length !== 32) throw new TypeError('an Ed25519 seed is 32 bytes');
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function privateKeyFromPem(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new TypeError('not an Ed25519 private key');
  return key;
}

export function privateKeyToPem(key: KeyObject): string {
  return key.export({ format: 'pem', type: 'pkcs8' }).toString();
}

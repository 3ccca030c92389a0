import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/index.ts';
import { findApiKeyByHash, insertApiKey } from '../db/api-keys.ts';
import type { ApiKeyRow } from '../db/api-keys.ts';
import type { Scope } from './scopes.ts';

export const API_KEY_PREFIX = 'vmk_';
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** 32 random bytes in base62 always fit in 43 characters (62^43 > 2^256). */
const SECRET_CHARS = 43;
export const API_KEY_PATTERN = /^vmk_[0-9A-Za-z]{43}$/;
/** How many characters of the secret are kept in clear, so people can tell keys apart. */
const DISPLAY_PREFIX_CHARS = API_KEY_PREFIX.length + 8;

function base62(bytes: Buffer): string {
  let n = BigInt(`0x${bytes.toString('hex')}`);
  let out = '';
  while (n > 0n) {
    out = BASE62.charAt(Number(n % 62n)) + out;
    n /= 62n;
  }
  return out.padStart(SECRET_CHARS, '0');
}

/** A new secret: `vmk_` + base62 of 32 random bytes. */
export function generateApiKeySecret(): string {
  return API_KEY_PREFIX + base62(randomBytes(32));
}

export function hashApiKey(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export function displayPrefix(secret: string): string {
  return secret.slice(0, DISPLAY_PREFIX_CHARS);
}

export interface CreatedApiKey {
  key: ApiKeyRow;
  /** Shown once; only its hash is stored. */
  secret: string;
}

export async function createApiKey(
  db: Db,
  input: { workspaceId: string; name: string; scopes: readonly Scope[]; expiresAt?: number | null },
  now = Date.now(),
): Promise<CreatedApiKey> {
  const secret = generateApiKeySecret();
  const key = await insertApiKey(
    db,
    {
      workspaceId: input.workspaceId,
      name: input.name,
      hash: hashApiKey(secret),
      prefix: displayPrefix(secret),
      scopes: [...new Set(input.scopes)],
      expiresAt: input.expiresAt ?? null,
    },
    now,
  );
  return { key, secret };
}

export type KeyCheck =
  | { ok: true; key: ApiKeyRow }
  | { ok: false; reason: 'missing' | 'not_bearer' | 'not_vmk' | 'malformed' | 'unknown' }
  | { ok: false; reason: 'expired' | 'revoked'; key: ApiKeyRow };

/** Parses `Authorization: Bearer vmk_...`; undefined when absent, '' when it is not one bearer token. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m ? m[1] : '';
}

/** Looks the secret up by hash and compares the hashes in constant time. */
export async function checkApiKey(db: Db, secret: string | undefined, now = Date.now()): Promise<KeyCheck> {
  if (secret === undefined) return { ok: false, reason: 'missing' };
  if (secret === '') return { ok: false, reason: 'not_bearer' };
  if (!secret.startsWith(API_KEY_PREFIX)) return { ok: false, reason: 'not_vmk' };
  if (!API_KEY_PATTERN.test(secret)) return { ok: false, reason: 'malformed' };
  const hash = hashApiKey(secret);
  const key = await findApiKeyByHash(db, hash);
  if (!key || !timingSafeEqual(Buffer.from(key.hash, 'hex'), Buffer.from(hash, 'hex'))) {
    return { ok: false, reason: 'unknown' };
  }
  if (key.revokedAt !== null) return { ok: false, reason: 'revoked', key };
  if (key.expiresAt !== null && key.expiresAt <= now) return { ok: false, reason: 'expired', key };
  return { ok: true, key };
}

import { createPrivateKey, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

/**
 * The JWT a GitHub App signs to call /app endpoints: RS256 over
 * base64url(header).base64url(payload), `iss` the app id (or client id), `iat` 60 s in
 * the past to absorb clock drift, `exp` at most 10 minutes after now (GitHub's cap).
 */
export function createAppJwt(appId: string, privateKey: KeyObject, nowMs: number, lifetimeSec = 540): { jwt: string; expiresAtMs: number } {
  const now = Math.floor(nowMs / 1000);
  const iat = now - 60;
  const exp = now + Math.min(lifetimeSec, 600);
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ iat, exp, iss: appId }));
  const signature = sign('sha256', Buffer.from(`${header}.${payload}`), privateKey).toString('base64url');
  return { jwt: `${header}.${payload}.${signature}`, expiresAtMs: exp * 1000 };
}

/** Accepts PEM text (PKCS#1 as GitHub issues it, or PKCS#8) or a KeyObject; refuses anything but RSA. */
export function loadAppPrivateKey(key: string | KeyObject): KeyObject {
  const obj = typeof key === 'string' ? createPrivateKey({ key, format: 'pem' }) : key;
  if (obj.type !== 'private' || obj.asymmetricKeyType !== 'rsa') {
    throw new Error('the GitHub App private key must be an RSA private key (PEM)');
  }
  return obj;
}

function b64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

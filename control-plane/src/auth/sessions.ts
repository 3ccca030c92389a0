import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/index.ts';
import { deleteExpiredDashboardSessions, findDashboardSession, insertDashboardSession } from '../db/dashboard-sessions.ts';
import type { DashboardSessionRow } from '../db/dashboard-sessions.ts';
import type { ApiKeyRow } from '../db/api-keys.ts';

/** The cookie a dashboard sign-in sets; its value is the session secret, never the API key. */
export const SESSION_COOKIE = 'vmk_session';
/** The header a dashboard request that changes something carries (see csrfTokenFor). */
export const CSRF_HEADER = 'x-vmkit-csrf';
/** A working day: long enough not to nag, short enough that a forgotten tab does not stay signed in for a week. */
export const SESSION_TTL_MS = 12 * 3_600_000;
const SECRET_PREFIX = 'vmks_';
const SECRET_PATTERN = /^vmks_[A-Za-z0-9_-]{43}$/;

export function hashSessionSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/**
 * The CSRF token of a session, derived from its secret: the secret lives only in the
 * HttpOnly cookie, so a page of another origin can neither read it nor compute this,
 * and the server stores nothing more than the hash.
 */
export function csrfTokenFor(secret: string): string {
  return createHmac('sha256', secret).update('vmkit dashboard csrf').digest('base64url');
}

export function csrfMatches(sent: string | string[] | undefined, expected: string): boolean {
  if (typeof sent !== 'string') return false;
  const a = Buffer.from(sent);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface NewSession {
  secret: string;
  row: DashboardSessionRow;
}

/** A session for a key that checked out; it ends with the key if the key ends first. */
export async function createSession(db: Db, key: ApiKeyRow, now: number): Promise<NewSession> {
  await deleteExpiredDashboardSessions(db, now);
  const secret = SECRET_PREFIX + randomBytes(32).toString('base64url');
  const row: DashboardSessionRow = {
    hash: hashSessionSecret(secret),
    workspaceId: key.workspaceId,
    keyId: key.id,
    createdAt: now,
    expiresAt: Math.min(now + SESSION_TTL_MS, key.expiresAt ?? Number.MAX_SAFE_INTEGER),
    lastSeenAt: now,
  };
  await insertDashboardSession(db, row);
  return { secret, row };
}

export type SessionCheck =
  | { ok: true; key: ApiKeyRow; session: DashboardSessionRow }
  | { ok: false; reason: 'session_ended' }
  | { ok: false; reason: 'expired' | 'revoked'; key: ApiKeyRow };

/** The session of a cookie value, and its key re-checked: revoked or expired keys end their sessions. */
export async function checkSession(db: Db, secret: string, now: number): Promise<SessionCheck> {
  if (!SECRET_PATTERN.test(secret)) return { ok: false, reason: 'session_ended' };
  const hash = hashSessionSecret(secret);
  const found = await findDashboardSession(db, hash);
  if (!found || !timingSafeEqual(Buffer.from(found.session.hash, 'hex'), Buffer.from(hash, 'hex'))) {
    return { ok: false, reason: 'session_ended' };
  }
  const { key, session } = found;
  if (key.revokedAt !== null) return { ok: false, reason: 'revoked', key };
  if (key.expiresAt !== null && key.expiresAt <= now) return { ok: false, reason: 'expired', key };
  if (session.expiresAt <= now) return { ok: false, reason: 'session_ended' };
  return { ok: true, key, session };
}

/** The value of one cookie in a Cookie header (the first of that name), undefined when absent. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Set-Cookie for the session: HttpOnly (page scripts never see it), SameSite=Strict (no
 * other site's page sends it), Path=/ and Secure when the dashboard is reached over TLS.
 */
export function sessionCookie(secret: string, opts: { secure: boolean; maxAgeMs: number }): string {
  const parts = [`${SESSION_COOKIE}=${secret}`, 'Path=/', 'HttpOnly', 'SameSite=Strict', `Max-Age=${Math.max(0, Math.floor(opts.maxAgeMs / 1000))}`];
  if (opts.secure) parts.push('Secure');
  return parts.join('; ');
}

export function clearedSessionCookie(secure: boolean): string {
  return sessionCookie('', { secure, maxAgeMs: 0 });
}

import type { IncomingMessage } from 'node:http';
import type { Db } from '../db/index.ts';
import type { ApiKeyRow } from '../db/api-keys.ts';
import { ApiError } from '../errors.ts';
import { bearerToken, checkApiKey } from './api-keys.ts';
import { FAILURE_MESSAGES } from './hooks.ts';
import { SESSION_COOKIE, checkSession, cookieValue } from './sessions.ts';

export type UpgradeAuth = { ok: true; key: ApiKeyRow; viaSession: boolean; sessionHash?: string } | { ok: false; error: ApiError; key?: ApiKeyRow };

/** The origin a browser page of this server sends: its scheme-less host must be the Host it asked. */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  const host = req.headers.host;
  if (origin === undefined || host === undefined) return false;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

/**
 * Who opens a WebSocket door (the shell): a bearer key, as for REST, or the dashboard's
 * session cookie, which browsers send on the upgrade. A page cannot add a CSRF header to
 * a WebSocket, so a cookie counts only with the server's own Origin (no other site's
 * page may open a shell with the operator's cookie).
 */
export async function authenticateUpgrade(db: Db, req: IncomingMessage, now: number): Promise<UpgradeAuth> {
  const secret = req.headers.authorization === undefined ? cookieValue(req.headers.cookie, SESSION_COOKIE) : undefined;
  if (secret === undefined) {
    const check = await checkApiKey(db, bearerToken(req.headers.authorization), now);
    if (check.ok) return { ok: true, key: check.key, viaSession: false };
    return { ok: false, error: new ApiError('unauthorized', FAILURE_MESSAGES[check.reason]), ...('key' in check && { key: check.key }) };
  }
  const check = await checkSession(db, secret, now);
  if (!check.ok) return { ok: false, error: new ApiError('unauthorized', FAILURE_MESSAGES[check.reason]), ...('key' in check && { key: check.key }) };
  if (!sameOrigin(req)) {
    return { ok: false, key: check.key, error: new ApiError('csrf_token_invalid', 'A dashboard session opens a shell only from a page of this server (the Origin header must be this host).') };
  }
  return { ok: true, key: check.key, viaSession: true, sessionHash: check.session.hash };
}

import type { FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import type { ErrorKey } from '@vmkit/protocol';
import type { Db } from '../db/index.ts';
import { touchApiKey } from '../db/api-keys.ts';
import { touchDashboardSession } from '../db/dashboard-sessions.ts';
import { ApiError } from '../errors.ts';
import { bearerToken, checkApiKey } from './api-keys.ts';
import type { KeyCheck } from './api-keys.ts';
import { hasScope } from './scopes.ts';
import type { Scope } from './scopes.ts';
import { CSRF_HEADER, SESSION_COOKIE, checkSession, cookieValue, csrfMatches, csrfTokenFor } from './sessions.ts';
import type { SessionCheck } from './sessions.ts';

export type Channel = 'rest' | 'mcp' | 'dashboard';

/** Why the credential sent did not check out: a key's reasons, or a dashboard session's. */
export type AuthFailure = Exclude<KeyCheck, { ok: true }> | Exclude<SessionCheck, { ok: true }>;

/** The dashboard session a request came with (cookie instead of a bearer key). */
export interface DashboardSessionOf {
  hash: string;
  csrfToken: string;
  expiresAt: number;
}

/** Who is calling: set on every request that carried a valid key. */
export interface AuthContext {
  workspaceId: string;
  keyId: string;
  keyName: string;
  scopes: string[];
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Scope the route requires. Routes without `auth: 'none'` require a key; the default scope is `admin`; `any`: any valid key. */
    scope?: Scope | 'any';
    /** Audit action name, e.g. `instances.list`. */
    action?: string;
    /**
     * `'none'`: the route takes no API key (health, OpenAPI, agent enrollment with its own token).
     * `'optional'`: a key sent is looked up (rate limits follow it) but none is required (the MCP endpoint).
     */
    auth?: 'none' | 'optional';
  }
  interface FastifyRequest {
    /** The caller, once the key checked out; null on public routes and failed checks. */
    auth: AuthContext | null;
    /** Why the key did not check out (null when it did or was not asked for). */
    authFailure: AuthFailure | null;
    /** Set when the request came with a dashboard session cookie (and no Authorization header), valid or not. */
    viaSession: boolean;
    /** The dashboard session, once it checked out. */
    dashboardSession: DashboardSessionOf | null;
    /** The error key of the reply, for the audit trail; set by the error handler. */
    errorKey: ErrorKey | null;
  }
}

/** Updating last_used_at at most this often keeps hot keys from writing on every request. */
const TOUCH_INTERVAL_MS = 60_000;

export const FAILURE_MESSAGES: Record<AuthFailure['reason'], string> = {
  missing: 'No API key was sent; send the header "Authorization: Bearer vmk_...".',
  not_bearer: 'The Authorization header must be "Bearer vmk_..." with one token; it uses another scheme or carries none.',
  not_vmk: 'The bearer token is not a VMKit API key: those start with vmk_.',
  malformed: 'The bearer token starts with vmk_ but is not a whole VMKit API key (vmk_ and 43 letters or digits); check that it was copied in full.',
  unknown: 'The API key is not valid.',
  expired: 'The API key has expired.',
  revoked: 'The API key has been revoked.',
  session_ended: 'The dashboard session has ended (signed out or past its time); sign in again.',
};

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The caller of an authenticated route; throws 401 if the route was public. */
export function authOf(request: FastifyRequest): AuthContext {
  if (!request.auth) throw new ApiError('unauthorized', FAILURE_MESSAGES.missing);
  return request.auth;
}

/** Whether a key sent with the request is looked up: everywhere but `auth: 'none'` routes (unknown routes too). */
export function resolvesKey(request: FastifyRequest): boolean {
  return request.routeOptions.config.auth !== 'none';
}

export function requiresAuth(request: FastifyRequest): boolean {
  return resolvesKey(request) && request.routeOptions.config.auth !== 'optional' && !request.is404;
}

export function channelOf(request: FastifyRequest): Channel {
  if (request.viaSession) return 'dashboard';
  return request.headers['x-vmkit-channel'] === 'mcp' ? 'mcp' : 'rest';
}

const TOOL_NAME = /^[a-z_]{1,64}$/;
export function toolOf(request: FastifyRequest): string | null {
  const tool = request.headers['x-vmkit-tool'];
  return typeof tool === 'string' && TOOL_NAME.test(tool) ? tool : null;
}

/**
 * A dashboard session cookie stands for a key on /api routes when no Authorization
 * header is sent (a bearer key always wins, and needs no CSRF token: no browser adds it
 * by itself).
 */
function sessionSecretOf(request: FastifyRequest): string | undefined {
  if (request.headers.authorization !== undefined || !request.url.startsWith('/api/')) return undefined;
  return cookieValue(request.headers.cookie, SESSION_COOKIE);
}

/**
 * Two global hooks: onRequest resolves the key or dashboard session (before the rate
 * limiter, which keys on it), preParsing enforces the CSRF token, key and scope (after
 * the limiter, before any body is read).
 */
export function installAuthHooks(app: App, db: Db, now: () => number): void {
  app.decorateRequest('auth', null);
  app.decorateRequest('authFailure', null);
  app.decorateRequest('errorKey', null);
  app.decorateRequest('viaSession', false);
  app.decorateRequest('dashboardSession', null);

  app.addHook('onRequest', async (request) => {
    if (!resolvesKey(request)) return;
    const t = now();
    const sessionSecret = sessionSecretOf(request);
    if (sessionSecret !== undefined) {
      request.viaSession = true;
      const session = await checkSession(db, sessionSecret, t);
      if (!session.ok) {
        request.authFailure = session;
        return;
      }
      const { key } = session;
      request.auth = { workspaceId: key.workspaceId, keyId: key.id, keyName: key.name, scopes: key.scopes };
      request.dashboardSession = { hash: session.session.hash, csrfToken: csrfTokenFor(sessionSecret), expiresAt: session.session.expiresAt };
      if (key.lastUsedAt === null || t - key.lastUsedAt >= TOUCH_INTERVAL_MS) await touchApiKey(db, key.id, t);
      const seen = session.session.lastSeenAt;
      if (seen === null || t - seen >= TOUCH_INTERVAL_MS) await touchDashboardSession(db, session.session.hash, t);
      return;
    }
    const check = await checkApiKey(db, bearerToken(request.headers.authorization), t);
    if (!check.ok) {
      request.authFailure = check;
      return;
    }
    const { key } = check;
    request.auth = { workspaceId: key.workspaceId, keyId: key.id, keyName: key.name, scopes: key.scopes };
    if (key.lastUsedAt === null || t - key.lastUsedAt >= TOUCH_INTERVAL_MS) await touchApiKey(db, key.id, t);
  });

  app.addHook('preParsing', (request, _reply, payload, done) => {
    const session = request.dashboardSession;
    if (session && !SAFE_METHODS.has(request.method) && !csrfMatches(request.headers[CSRF_HEADER], session.csrfToken)) {
      return done(
        new ApiError('csrf_token_invalid', `A dashboard request that changes something must carry the session's CSRF token in the ${CSRF_HEADER} header; reload the dashboard.`),
      );
    }
    if (!requiresAuth(request)) return done(null, payload);
    if (!request.auth) {
      return done(new ApiError('unauthorized', FAILURE_MESSAGES[request.authFailure?.reason ?? 'missing']));
    }
    const scope = request.routeOptions.config.scope ?? 'admin';
    if (scope !== 'any' && !hasScope(request.auth.scopes, scope)) {
      return done(new ApiError('forbidden', `The API key ${request.auth.keyId} lacks the scope ${scope}.`));
    }
    done(null, payload);
  });
}

import rateLimit from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import type { RateLimitConfig } from '../config.ts';
import type { Db } from '../db/index.ts';
import { ApiError } from '../errors.ts';
import { pgRateLimitStore } from './rate-limit-store-pg.ts';

function rateLimited(ttlMs: number): ApiError {
  return new ApiError('rate_limited', `Too many requests; retry in ${retryAfterSeconds(ttlMs)} s.`);
}

function retryAfterSeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

/**
 * Per-key limits for authenticated requests, per-address limits for the rest. Runs as
 * a route-level onRequest hook, after the global hook that resolved the key, so an
 * attacker cycling through made-up keys is still counted by address. In-process
 * requests (the embedded MCP server calling the REST API, mcp/in-process.ts) pass the same hooks.
 * Register before the routes.
 */
export async function installRateLimit(app: App, cfg: RateLimitConfig, db?: Db): Promise<void> {
  // Several processes on one PostgreSQL count one budget in the database; one SQLite process counts in memory.
  const shared =
    db?.dialect === 'postgres' ? pgRateLimitStore(db.pool, (err) => app.log.warn({ err }, 'rate limits: sweeping old windows failed')) : undefined;
  if (shared) app.addHook('onClose', (_app, done) => {
    shared.close();
    done();
  });
  await app.register(rateLimit, {
    global: true,
    ...(shared && { store: shared.Store }),
    hook: 'onRequest',
    timeWindow: cfg.windowMs,
    keyGenerator: (request) => (request.auth ? `key:${request.auth.keyId}` : `ip:${request.ip}`),
    max: (_request, key) => (key.startsWith('key:') ? cfg.max : cfg.anonymousMax),
    errorResponseBuilder: (_request, context) => rateLimited(context.ttl),
  });
}

/** Who an upgrade request comes from: its key once it checked out, else only its address. */
export interface UpgradeCaller {
  keyId: string | null;
  /** The client address, resolved as Fastify resolves `request.ip` (same trustProxy). */
  ip: string;
}

export type UpgradeRateLimit = (caller: UpgradeCaller) => Promise<{ error: ApiError; retryAfterS: number } | null>;

/**
 * The REST budget for WebSocket upgrades that Fastify never routes (the shell door):
 * one upgrade costs one request from the same per-key or per-address budget, in the
 * same store, so a key cannot dodge its limit by opening sockets and anonymous
 * traffic cannot eat an authenticated key's budget. Null when the request may go on.
 */
export function upgradeRateLimit(app: App): UpgradeRateLimit {
  const limit = app.createRateLimit();
  return async ({ keyId, ip }) => {
    // Only what the key generator and the limiter read: `auth`, `ip`, the route's config.
    const request = { auth: keyId === null ? null : { keyId }, ip, routeOptions: { config: {} } } as unknown as FastifyRequest;
    const r = await limit(request);
    if (r.isAllowed || !r.isExceeded) return null;
    return { error: rateLimited(r.ttl), retryAfterS: retryAfterSeconds(r.ttl) };
  };
}

import rateLimit from '@fastify/rate-limit';
import type { App } from '../app.ts';
import type { RateLimitConfig } from '../config.ts';
import { ApiError } from '../errors.ts';

/**
 * Per-key limits for authenticated requests, per-address limits for the rest. Runs as
 * a route-level onRequest hook, after the global hook that resolved the key, so an
 * attacker cycling through made-up keys is still counted by address. `app.inject`
 * requests (the MCP server calling the REST API in-process) pass the same hooks.
 * Register before the routes.
 */
export async function installRateLimit(app: App, cfg: RateLimitConfig): Promise<void> {
  await app.register(rateLimit, {
    global: true,
    hook: 'onRequest',
    timeWindow: cfg.windowMs,
    keyGenerator: (request) => (request.auth ? `key:${request.auth.keyId}` : `ip:${request.ip}`),
    max: (_request, key) => (key.startsWith('key:') ? cfg.max : cfg.anonymousMax),
    errorResponseBuilder: (_request, context) =>
      new ApiError('rate_limited', `Too many requests; retry in ${Math.max(1, Math.ceil(context.ttl / 1000))} s.`),
  });
}

import type { FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import type { Db } from '../db/index.ts';
import { insertAudit } from '../db/audit.ts';
import { channelOf, resolvesKey, toolOf } from './hooks.ts';

/** Route params that look like ids are the audit's target ids; nothing else of the request is kept. */
function targetIds(request: FastifyRequest): Record<string, string> | null {
  if (request.is404) return null;
  const params = request.params;
  if (params === null || typeof params !== 'object') return null;
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(params as Record<string, unknown>)) {
    if (typeof value === 'string' && value.length <= 128) out[name] = value;
  }
  return Object.keys(out).length > 0 ? out : null;
}

/**
 * One audit row per request that named a known key, whatever its outcome (also 401
 * for an expired or revoked key, 404 for an unknown route, 400 for a URL that does
 * not decode). Bodies are never recorded. The MCP endpoint's own envelope traffic is
 * not a row: the REST calls its tools make are.
 *
 * The row is written as the reply is sent (onSend), before the client has the answer:
 * whoever reads the audit trail after a response, through any control-plane process,
 * finds that response's row.
 */
export function installAuditHook(app: App, db: Db, now: () => number): void {
  app.addHook('onSend', async (request, reply, payload) => {
    if (!resolvesKey(request) || request.routeOptions.config.auth === 'optional') return payload;
    const failure = request.authFailure;
    const who = request.auth
      ? { workspaceId: request.auth.workspaceId, keyId: request.auth.keyId }
      : failure && 'key' in failure
        ? { workspaceId: failure.key.workspaceId, keyId: failure.key.id }
        : null;
    if (!who) return payload;
    const config = request.routeOptions.config;
    try {
      await insertAudit(db, {
        at: now(),
        workspaceId: who.workspaceId,
        keyId: who.keyId,
        channel: channelOf(request),
        tool: toolOf(request),
        action: request.is404 ? 'route.unknown' : (config.action ?? `${request.method.toLowerCase()} ${request.routeOptions.url ?? ''}`.trim()),
        method: request.method,
        route: request.routeOptions.url ?? null,
        targetIds: targetIds(request),
        status: reply.statusCode,
        errorKey: request.errorKey,
        requestId: request.id,
        clientAddress: request.ip,
      });
    } catch (err) {
      // The reply is gone already; losing an audit row must at least be loud.
      request.log.error({ err }, 'audit row could not be written');
    }
    return payload;
  });
}

import type { FastifyRequest } from 'fastify';
import type { ApiPlugin } from '../app.ts';
import { InProcessGateway } from './gateway.ts';
import { McpHttpHandler, defaultAllowedHosts } from './http.ts';
import type { McpCaller } from './http.ts';
import { TOOLS } from './tools/index.ts';
import { measuredTools } from '../metrics/mcp-tools.ts';
import { SecretBox } from '../auth/secret-box.ts';
import { agentHubConfig } from '../hub/config.ts';
import { FORWARD_KEY_PURPOSE, McpSessionCluster } from './cluster.ts';

/**
 * MCP (Streamable HTTP) at /mcp. `initialize` and `tools/list` need no key; each tool
 * call runs as an in-process REST request (in-process.ts) with the caller's own Bearer
 * header, so the REST API's auth, scopes, rate limits and audit apply unchanged.
 */

/**
 * The envelope traffic's bucket: a valid key's own, else the client address, whatever
 * Authorization header comes with it (made-up headers buy no new budget).
 */
function mcpRateKey(request: FastifyRequest): string {
  return request.auth ? `mcp-key:${request.auth.keyId}` : `mcp-ip:${request.ip}`;
}

/** The key the auth hook found (auth: 'optional' looks it up without requiring it). */
function callerOf(request: FastifyRequest): McpCaller {
  const failure = request.authFailure;
  const known = request.auth?.keyId ?? (failure && 'key' in failure ? failure.key.id : null);
  // A session stays bound to its key when the key later expires or is revoked, so
  // its tool calls answer the contract's authentication sentence instead of 404.
  return { keyId: request.auth?.keyId ?? null, principal: known };
}

export const mcpRoutes: ApiPlugin = async (app, { ctx }) => {
  // The public URL is final only once the server listens (port 0); work the list out
  // again only when it changes, not on every request.
  let memo: { publicUrl: string; hosts: string[] | undefined } | undefined;
  const allowedHosts = (host: string, publicUrl: string) => {
    if (memo?.publicUrl !== publicUrl) memo = { publicUrl, hosts: defaultAllowedHosts(host, publicUrl) };
    return memo.hosts;
  };
  // Several processes on one PostgreSQL: sessions are recorded, and a request for one another process holds is relayed there.
  const cluster =
    ctx.db.dialect === 'postgres'
      ? new McpSessionCluster({
          db: ctx.db,
          nodeId: ctx.nodeId,
          key: SecretBox.forConfig(ctx.config).subkey(FORWARD_KEY_PURPOSE),
          staleAfterMs: (ctx.agentHubConfig ?? agentHubConfig(ctx.config)).nodeStaleAfterMs,
          logger: ctx.logger,
          metrics: ctx.metrics,
        })
      : undefined;
  await cluster?.start();
  const handler = new McpHttpHandler({
    gateway: new InProcessGateway(app),
    tools: measuredTools(TOOLS, ctx.metrics),
    maxWaitMs: ctx.config.mcpMaxWaitMs,
    allowedHosts: () => allowedHosts(ctx.config.host, ctx.publicUrl),
    maxBodyBytes: ctx.config.bodyLimit,
    maxSessions: ctx.config.mcpSessions.max,
    maxAnonymousSessions: ctx.config.mcpSessions.anonymousMax,
    maxSessionsPerKey: ctx.config.mcpSessions.perKeyMax,
    ...(cluster && { directory: cluster }),
  });
  // preClose, not onClose: the server's close waits for open requests, and an MCP client's
  // GET stream stays open until its session ends; ending the sessions first lets it close.
  app.addHook('preClose', async () => {
    await handler.close();
    await cluster?.close();
  });

  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    // The transport answers by itself (JSON or an SSE stream), so the reply is hijacked;
    // the REST calls the tools make are what the audit trail records.
    config: {
      auth: 'optional',
      action: 'mcp',
      // The REST call inside each tool call is limited per key as usual; this limit
      // bounds the MCP envelope traffic (initialize, lists, SSE) apart from it: per
      // valid key, else per address with the anonymous budget.
      rateLimit: {
        keyGenerator: mcpRateKey,
        max: (_request, key) => (key.startsWith('mcp-key:') ? ctx.config.rateLimit.max : ctx.config.rateLimit.anonymousMax),
        // A signed forward from another process was counted there, in the budget all processes share.
        ...(cluster && { allowList: (request: FastifyRequest) => cluster.check(request.raw) === 'valid' }),
      },
    },
    schema: { hide: true },
    handler: async (request, reply) => {
      reply.hijack();
      await handler.handle(request.raw, reply.raw, request.body, callerOf(request));
    },
  });
};

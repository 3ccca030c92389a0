import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { ApiPlugin } from '../app.ts';
import { InjectGateway } from './gateway.ts';
import { McpHttpHandler, defaultAllowedHosts } from './http.ts';
import { TOOLS } from './tools/index.ts';

/**
 * MCP (Streamable HTTP) at /mcp. `initialize` and `tools/list` need no key; each tool
 * call runs as an in-process REST request (`inject`) with the caller's own Bearer
 * header, so the REST API's auth, scopes, rate limits and audit apply unchanged.
 */
function mcpRateKey(request: FastifyRequest): string {
  const auth = request.headers.authorization;
  return auth ? `mcp:${createHash('sha256').update(auth).digest('hex')}` : `mcp-ip:${request.ip}`;
}

export const mcpRoutes: ApiPlugin = (app, { ctx }) => {
  // The public URL is final only once the server listens (port 0); work the list out
  // again only when it changes, not on every request.
  let memo: { publicUrl: string; hosts: string[] | undefined } | undefined;
  const allowedHosts = (host: string, publicUrl: string) => {
    if (memo?.publicUrl !== publicUrl) memo = { publicUrl, hosts: defaultAllowedHosts(host, publicUrl) };
    return memo.hosts;
  };
  const handler = new McpHttpHandler({
    gateway: new InjectGateway(app),
    tools: TOOLS,
    maxWaitMs: ctx.config.mcpMaxWaitMs,
    allowedHosts: () => allowedHosts(ctx.config.host, ctx.publicUrl),
    maxBodyBytes: ctx.config.bodyLimit,
  });
  app.addHook('onClose', async () => handler.close());

  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    // The transport answers by itself (JSON or an SSE stream), so the reply is hijacked;
    // the REST calls the tools make are what the audit trail records.
    config: {
      auth: 'none',
      action: 'mcp',
      // The REST call inside each tool call is limited per key as usual; this limit
      // only bounds the MCP envelope traffic (initialize, lists, SSE), per key or per
      // address, so keyless clients behind one address do not share the tiny anonymous budget.
      rateLimit: { max: ctx.config.rateLimit.max, keyGenerator: mcpRateKey },
    },
    schema: { hide: true },
    handler: async (request, reply) => {
      reply.hijack();
      await handler.handle(request.raw, reply.raw, request.body);
    },
  });
};

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fastifyStatic from '@fastify/static';
import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { DEFAULT_DASHBOARD_DIR } from './location.ts';

declare module '../app.ts' {
  interface AppContext {
    /** Where the built dashboard is (index.html, assets/); default dist/dashboard of the package. */
    dashboardDir?: string;
  }
}

/**
 * The page may load only what this server serves: its own hashed scripts and styles
 * (inline styles stay allowed: xterm.js and the recording player size their cells
 * with them), calls to its own API and WebSocket doors, and no framing.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>VMKit</title>
<p>The VMKit dashboard is not built on this control plane. Run <code>npm run build</code> (or start with <code>npm start</code>, which builds it first), then reload.</p>
<p>The REST API under <code>/api</code> and MCP at <code>/mcp</code> work without it.</p>`;

/** The dashboard at `/` and its content-hashed assets under `/assets/` (built by build.ts). */
export const dashboardRoutes: ApiPlugin = async (app, { ctx }) => {
  const dir = () => ctx.dashboardDir ?? DEFAULT_DASHBOARD_DIR;
  await app.register(fastifyStatic, { root: join(dir(), 'assets'), serve: false });
  // Public and cheap: a fixed set of files, so no key and no rate-limit budget is spent on them.
  const open = { auth: 'none', rateLimit: false } as const;

  app.get('/', { config: open, schema: { hide: true } }, async (_request, reply) => {
    let html: string;
    try {
      // Read on every request: a rebuild while the server runs is picked up by a reload.
      html = await readFile(join(dir(), 'index.html'), 'utf8');
    } catch {
      return reply.code(503).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(NOT_BUILT);
    }
    return reply
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-cache')
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .send(html);
  });

  app.get(
    '/assets/*',
    { config: open, schema: { hide: true, params: z.object({ '*': z.string().max(200) }) } },
    (request, reply) =>
      // Names carry their content's hash: a browser may keep each one for good.
      reply.header('x-content-type-options', 'nosniff').sendFile(request.params['*'], join(dir(), 'assets'), { immutable: true, maxAge: '365d' }),
  );
};

import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ApiPlugin, App, AppContext } from '../app.ts';
import { channelOf } from '../auth/hooks.ts';
import { DatabaseHealthProbe } from '../db/health.ts';
import type { DatabaseProbe } from './database.ts';
import { startMetricsListener } from './listener.ts';
import type { MetricsListener } from './listener.ts';
import { ControlPlaneMetrics } from './metrics.ts';
import { checkReadiness } from './readiness.ts';

declare module '../app.ts' {
  interface AppContext {
    /** This process's Prometheus metrics (set by installMetrics). */
    metrics?: ControlPlaneMetrics;
    /** The database's health for /readyz and /metrics; default: the SQLite probe of ctx.db. */
    databaseProbe?: DatabaseProbe;
    /** The unauthenticated /metrics listener's URL, when --metrics-listen is set and it listens. */
    metricsListenUrl?: string;
  }
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * The route label: the route's pattern (`/api/instances/:id`), never the URL, so ids
 * and probes for unknown paths cannot grow the number of series; those are `unmatched`.
 */
function routeOf(request: FastifyRequest): { route: string; method: string } {
  const pattern = request.is404 ? undefined : request.routeOptions.url;
  if (pattern === undefined) return { route: 'unmatched', method: KNOWN_METHODS.has(request.method) ? request.method : 'OTHER' };
  return { route: pattern, method: request.method };
}

/**
 * Creates ctx.metrics (and the default database probe) and times every request the
 * app answers. A root hook, so it sees the requests of every route plugin; call it
 * before the routes are registered.
 */
export function installMetrics(app: App, ctx: AppContext): ControlPlaneMetrics {
  const database = (ctx.databaseProbe ??= new DatabaseHealthProbe(ctx.db));
  const metrics = (ctx.metrics ??= new ControlPlaneMetrics(ctx.nodeId, {
    database,
    hub: () => ctx.hub?.stats(),
    shellSessionsOpen: () => ctx.shellSessions?.size,
    // The relays exist once the deploy and rollout services did (their routes register them).
    changeEvents: () => [...(ctx.changeRelays?.values() ?? [])].map((r) => r.counters()),
  }));
  app.addHook('onResponse', (request, reply, done) => {
    const { route, method } = routeOf(request);
    metrics.httpRequest(method, route, reply.statusCode, channelOf(request), reply.elapsedTime / 1000);
    done();
  });

  const listen = ctx.config.metricsListen;
  if (listen) {
    let listener: MetricsListener | undefined;
    app.addHook('onReady', async () => {
      listener = await startMetricsListener(
        listen,
        async () => ({ contentType: metrics.contentType, body: await metrics.render() }),
        (err) => ctx.logger.error({ err }, 'metrics: collecting for the metrics listener failed'),
      );
      ctx.metricsListenUrl = listener.url;
      ctx.logger.info({ url: `${listener.url}/metrics` }, 'metrics: serving /metrics without a key on the metrics listen address');
    });
    app.addHook('onClose', async () => {
      await listener?.close();
    });
  }
  return metrics;
}

const CheckView = z.object({
  ok: z.boolean(),
  message: z.string().optional(),
  pending: z.number().int().optional().describe('Migrations not applied (migrations check only)'),
});
const ReadinessView = z.object({
  status: z.enum(['ready', 'not_ready']),
  failed: z.array(z.string()).describe('The checks that failed; empty when ready'),
  checks: z.object({ database: CheckView, migrations: CheckView, agent_hub: CheckView }),
});

/**
 * GET /metrics (Prometheus text, a key with the `admin` scope) and GET /readyz (for
 * load balancers: no key, no rate limit, nothing that names a path or an address).
 */
export const metricsRoutes: ApiPlugin = (app, { ctx }) => {
  const { metrics, databaseProbe: database } = ctx;
  if (!metrics || !database) throw new Error('metricsRoutes needs ctx.metrics: buildApp calls installMetrics first');
  app.get(
    '/metrics',
    {
      config: { scope: 'admin', action: 'metrics.read' },
      schema: {
        summary: "This process's metrics in the Prometheus text format (needs the admin scope; see --metrics-listen for a scraper without a key)",
        produces: ['text/plain'],
      },
    },
    async (_request, reply) => {
      const body = await metrics.render();
      return reply.type(metrics.contentType).header('cache-control', 'no-store').send(body);
    },
  );

  app.get(
    '/readyz',
    {
      config: { auth: 'none', rateLimit: false },
      schema: {
        summary: 'Readiness for a load balancer: database reachable, migrations applied, agent hub taking connections',
        security: [],
        response: { 200: ReadinessView, 503: ReadinessView },
      },
    },
    async (_request, reply) => {
      const r = await checkReadiness({ database, hubAccepting: () => ctx.hub?.accepting });
      const failed = Object.entries(r.checks)
        .filter(([, c]) => !c.ok)
        .map(([name]) => name);
      return reply
        .code(r.ready ? 200 : 503)
        .header('cache-control', 'no-store')
        .send({ status: r.ready ? ('ready' as const) : ('not_ready' as const), failed, checks: r.checks });
    },
  );
};

import { PassThrough } from 'node:stream';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getApiKey } from '../db/api-keys.ts';
import { findDashboardSession } from '../db/dashboard-sessions.ts';
import { hardenServiceOf } from '../services/harden/context.ts';
import { liveFeedOf } from './live-feed.ts';
import type { LiveEvent } from './live-feed.ts';

/** Comment lines keep proxies from closing a quiet stream. */
const KEEPALIVE_MS = 25_000;
/** How often an open stream re-checks its key and session: the bound on a revoked key still hearing news. */
const RECHECK_MS = 5_000;

function frame(event: LiveEvent | { type: 'session_ended'; message: string }): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * GET /api/events: Server-Sent Events of the caller's workspace (instances, harden
 * runs), for the dashboard. Fed by the agent hub's connections and the harden runs.
 */
export const liveRoutes: ApiPlugin = (app, { ctx }) => {
  const feed = liveFeedOf(ctx);
  const streams = new Set<PassThrough>();
  const agents = new Map<string, { workspaceId: string; instanceId: string }>();

  ctx.hub?.addListener({
    agentConnected: (agent) => {
      agents.set(agent.id, { workspaceId: agent.workspaceId, instanceId: agent.instanceId });
      // The hub calls this after the connect is written, which moved a waiting instance to `running` in the same transaction.
      feed.instanceChanged(agent.workspaceId, agent.instanceId).catch((err: unknown) => ctx.logger.warn({ err, agentId: agent.id }, 'live feed: could not tell an agent connected'));
    },
    agentDisconnected: (agentId) => {
      const known = agents.get(agentId);
      agents.delete(agentId);
      if (known) feed.instanceChanged(known.workspaceId, known.instanceId).catch(() => undefined);
    },
  });
  app.addHook('onReady', () => {
    if (ctx.commandBus && ctx.hub) {
      hardenServiceOf(ctx).runs.observe((run) => {
        feed.hardenChanged(run);
        if (run.state !== 'running') feed.instanceChanged(run.workspaceId, run.instanceId).catch(() => undefined);
      });
    }
    return Promise.resolve();
  });
  // Open streams would hold the server's close until their clients leave.
  app.addHook('preClose', (done) => {
    for (const s of streams) s.end();
    done();
  });

  app.get(
    '/api/events',
    {
      config: { scope: 'instances:read', action: 'events.stream' },
      schema: { summary: 'Server-Sent Events of the workspace: `instance` (agent state, status) and `harden` (steps, answer)' },
    },
    async (request, reply) => {
      const auth = authOf(request);
      const sessionHash = request.dashboardSession?.hash;
      const stream = new PassThrough();
      streams.add(stream);
      const stillValid = async (): Promise<string | null> => {
        const now = ctx.now();
        const key = await getApiKey(ctx.db, auth.workspaceId, auth.keyId);
        if (!key || key.revokedAt !== null) return 'The API key has been revoked.';
        if (key.expiresAt !== null && key.expiresAt <= now) return 'The API key has expired.';
        if (sessionHash !== undefined) {
          const found = await findDashboardSession(ctx.db, sessionHash);
          if (!found || found.session.expiresAt <= now) return 'The dashboard session has ended; sign in again.';
        }
        return null;
      };
      const unsubscribe = feed.subscribe(auth.workspaceId, (event) => stream.write(frame(event)));
      const keepalive = setInterval(() => stream.write(': keepalive\n\n'), KEEPALIVE_MS);
      const recheck = setInterval(() => {
        stillValid()
          .then((why) => {
            if (why === null) return;
            stream.write(frame({ type: 'session_ended', message: why }));
            stream.end();
          })
          .catch(() => stream.end());
      }, RECHECK_MS);
      keepalive.unref();
      recheck.unref();
      const stop = () => {
        clearInterval(keepalive);
        clearInterval(recheck);
        unsubscribe();
        streams.delete(stream);
        if (!stream.writableEnded) stream.end();
      };
      request.raw.once('close', stop);
      stream.once('end', stop);
      // `retry`: how long the browser waits before reconnecting a dropped stream.
      stream.write('retry: 2000\n: connected\n\n');
      return reply
        .type('text/event-stream; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('x-accel-buffering', 'no')
        .send(stream);
    },
  );
};

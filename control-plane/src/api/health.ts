import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';

/** Liveness and database reachability, without a key and outside the rate limits. */
export const healthRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/healthz',
    {
      config: { auth: 'none', rateLimit: false },
      schema: { summary: 'Health check', security: [], response: { 200: z.object({ status: z.literal('ok') }) } },
    },
    () => {
      ctx.db.$client.prepare('select 1').get();
      return { status: 'ok' as const };
    },
  );
};

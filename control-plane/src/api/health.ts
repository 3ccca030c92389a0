import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { databaseReadiness } from '../db/readiness.ts';
import { ApiError } from '../errors.ts';

/** Liveness and database reachability, without a key and outside the rate limits. */
export const healthRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/healthz',
    {
      config: { auth: 'none', rateLimit: false },
      schema: { summary: 'Health check', security: [], response: { 200: z.object({ status: z.literal('ok') }) } },
    },
    async () => {
      const db = await databaseReadiness(ctx.db);
      if (!db.reachable) throw new ApiError('internal', 'The database does not answer.');
      return { status: 'ok' as const };
    },
  );
};

import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { listCommandsOfInstance } from '../db/commands.ts';
import { getInstance } from '../db/instances.ts';
import type { StoredResult } from '../hub/store.ts';
import { instanceNotFound } from './instances.ts';
import { IdParams, iso } from './views.ts';

const CommandSummary = z.object({
  id: z.string(),
  type: z.string().describe('harden | shell.open | facts | ping | ...'),
  state: z.string().describe('queued | sent | acked | running | succeeded | failed | expired | timed_out'),
  created_at: z.string(),
  updated_at: z.string(),
  result: z.record(z.string(), z.unknown()).nullable().describe("The agent's output, once it answered"),
  error_key: z.string().nullable(),
  error_message: z.string().nullable(),
});

/** GET /api/instances/{id}/commands: what was sent to the instance's agent and how it went (the dashboard's instance page). */
export const instanceCommandRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/api/instances/:id/commands',
    {
      config: { scope: 'instances:read', action: 'instances.commands' },
      schema: {
        summary: 'The latest commands sent to the agent of an instance, newest first',
        params: IdParams,
        querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(200).default(50) }),
        response: { 200: z.object({ items: z.array(CommandSummary) }) },
      },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      const instance = await getInstance(ctx.db, workspaceId, request.params.id);
      if (!instance) throw instanceNotFound(request.params.id);
      const rows = await listCommandsOfInstance(ctx.db, workspaceId, instance.id, request.query.limit);
      return {
        items: rows.map((c) => {
          const stored = c.result as Partial<Pick<StoredResult, 'output' | 'error'>> | null;
          return {
            id: c.id,
            type: c.type,
            state: c.state,
            created_at: iso(c.createdAt),
            updated_at: iso(c.updatedAt),
            result: stored?.output ?? null,
            error_key: c.errorKey ?? stored?.error?.key ?? null,
            error_message: stored?.error?.message ?? null,
          };
        }),
      };
    },
  );
};

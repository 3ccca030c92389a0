import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { listAudit } from '../db/audit.ts';
import { AuditView, auditView } from './views.ts';

const Time = z.union([z.iso.datetime({ offset: true }), z.string().regex(/^\d{1,15}$/)]);
const ms = (t: string | undefined) => (t === undefined ? undefined : /^\d+$/.test(t) ? Number(t) : Date.parse(t));

const AuditQuery = z.strictObject({
  action: z.string().min(1).max(100).optional().describe('e.g. instances.list'),
  key_id: z.string().min(1).max(128).optional(),
  channel: z.enum(['rest', 'mcp', 'dashboard', 'shell', 'agent']).optional().describe('Where the request came from'),
  since: Time.optional().describe('ISO 8601 time or epoch milliseconds: entries at or after'),
  until: Time.optional().describe('ISO 8601 time or epoch milliseconds: entries before'),
  cursor: z.string().min(1).max(128).optional().describe('next_cursor of the previous page'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});

export const auditRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/api/audit',
    {
      config: { scope: 'admin', action: 'audit.list' },
      schema: {
        summary: 'The audit trail of the workspace, newest first',
        querystring: AuditQuery,
        response: { 200: z.object({ items: z.array(AuditView), next_cursor: z.string().nullable() }) },
      },
    },
    async (request) => {
      const q = request.query;
      const since = ms(q.since);
      const until = ms(q.until);
      const page = await listAudit(ctx.db, authOf(request).workspaceId, {
        ...(q.action !== undefined && { action: q.action }),
        ...(q.key_id !== undefined && { keyId: q.key_id }),
        ...(q.channel !== undefined && { channel: q.channel }),
        ...(since !== undefined && { since }),
        ...(until !== undefined && { until }),
        ...(q.cursor !== undefined && { cursor: q.cursor }),
        limit: q.limit,
      });
      return { items: page.items.map(auditView), next_cursor: page.nextCursor };
    },
  );
};

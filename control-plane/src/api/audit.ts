import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { listAudit } from '../db/audit.ts';
import { AuditView, auditView } from './views.ts';

const AuditQuery = z.strictObject({
  action: z.string().min(1).max(100).optional().describe('e.g. instances.list'),
  key_id: z.string().min(1).max(128).optional(),
  since: z
    .union([z.iso.datetime({ offset: true }), z.string().regex(/^\d{1,15}$/)])
    .optional()
    .describe('ISO 8601 time or epoch milliseconds: entries at or after'),
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
      const since = q.since === undefined ? undefined : /^\d+$/.test(q.since) ? Number(q.since) : Date.parse(q.since);
      const page = await listAudit(ctx.db, authOf(request).workspaceId, {
        ...(q.action !== undefined && { action: q.action }),
        ...(q.key_id !== undefined && { keyId: q.key_id }),
        ...(since !== undefined && { since }),
        ...(q.cursor !== undefined && { cursor: q.cursor }),
        limit: q.limit,
      });
      return { items: page.items.map(auditView), next_cursor: page.nextCursor };
    },
  );
};

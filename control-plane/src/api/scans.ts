import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getScan } from '../db/scans.ts';
import { ApiError } from '../errors.ts';
import { IdParams, ScanView, scanView } from './views.ts';

export const scanRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/api/scans/:id',
    {
      config: { scope: 'repos:read', action: 'scans.get' },
      schema: { summary: 'One scan', params: IdParams, response: { 200: ScanView } },
    },
    async (request) => {
      const scan = await getScan(ctx.db, authOf(request).workspaceId, request.params.id);
      if (!scan) throw new ApiError('scan_not_found', `No scan with id ${request.params.id} found in this workspace.`);
      return scanView(scan);
    },
  );
};

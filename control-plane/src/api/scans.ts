import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getScan, listScansOfRepo } from '../db/scans.ts';
import { getRepo } from '../db/repos.ts';
import { ApiError } from '../errors.ts';
import { IdParams, ScanView, listOf, scanView } from './views.ts';
import { z } from 'zod';
import { scanServiceFromEnv } from '../services/scan/service.ts';
import type { ScanService } from '../services/scan/service.ts';
import { RepoFullName, repoNotFound } from './repos.ts';

declare module '../app.ts' {
  interface AppContext {
    /** scan_repo's service; built from the environment on first use unless a test sets it. */
    scanService?: ScanService;
  }
}

export const scanRoutes: ApiPlugin = (app, { ctx }) => {
  // Built at start-up so a misconfigured GitHub App key fails loudly now, not at the first scan.
  const providers = ctx.workspaceProviders;
  const built = (ctx.scanService ??= scanServiceFromEnv({
    db: ctx.db,
    dataDir: ctx.config.dataDir,
    now: ctx.now,
    ...(providers && { githubFor: (workspaceId: string) => providers.configuredGitHub(workspaceId) }),
  }));
  // Read per request: tests swap ctx.scanService for one on a fake GitHub.
  const service = (): ScanService => ctx.scanService ?? built;

  app.post(
    '/api/scans',
    {
      config: { scope: 'repos:read', action: 'scans.create' },
      schema: {
        summary: 'Scan a connected repository (read-only): language, framework, buildpack, Procfile/Dockerfile, with evidence',
        body: z.strictObject({ repo: RepoFullName.describe('owner/name of a repository connected to this workspace') }),
        response: { 200: ScanView, 201: ScanView },
      },
    },
    async (request, reply) => {
      const { scan, cached } = await service().scan(authOf(request).workspaceId, request.body.repo);
      return reply.code(cached ? 200 : 201).send({ ...scanView(scan), cached });
    },
  );

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

  app.get(
    '/api/repos/:id/scans',
    {
      config: { scope: 'repos:read', action: 'scans.list' },
      schema: { summary: 'The latest scans of a connected repository, newest first', params: IdParams, response: { 200: listOf(ScanView) } },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      const repo = await getRepo(ctx.db, workspaceId, request.params.id);
      if (!repo) throw repoNotFound(request.params.id);
      return { items: (await listScansOfRepo(ctx.db, workspaceId, repo.id, 10)).map(scanView) };
    },
  );
};

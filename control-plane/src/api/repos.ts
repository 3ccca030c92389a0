import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { createRepo, getRepo, listRepos } from '../db/repos.ts';
import { ApiError } from '../errors.ts';
import { IdParams, RepoView, listOf, repoView } from './views.ts';

/** GitHub's rules: owner 1-39 of [A-Za-z0-9-] not starting with '-'; name 1-100 of [A-Za-z0-9._-], not '.' or '..'. */
export const REPO_FULL_NAME = /^([A-Za-z0-9][A-Za-z0-9-]{0,38})\/((?!\.{1,2}$)[A-Za-z0-9._-]{1,100})$/;

export const RepoFullName = z.string().regex(REPO_FULL_NAME, 'must be owner/name');

export function repoNotFound(id: string): ApiError {
  return new ApiError('repo_not_found', `No repo with id ${id} found in this workspace.`);
}

export const repoRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/repos',
    {
      config: { scope: 'repos:write', action: 'repos.create' },
      schema: {
        summary: 'Connect a repository to the workspace (idempotent)',
        body: z.strictObject({ repo: RepoFullName.describe('owner/name') }),
        response: { 200: RepoView, 201: RepoView },
      },
    },
    async (request, reply) => {
      const m = REPO_FULL_NAME.exec(request.body.repo);
      if (!m?.[1] || !m[2]) throw new ApiError('invalid_request', 'Invalid request: body.repo must be owner/name.');
      const { repo, created } = await createRepo(ctx.db, authOf(request).workspaceId, m[1], m[2], ctx.now());
      return reply.code(created ? 201 : 200).send(repoView(repo));
    },
  );

  app.get(
    '/api/repos',
    {
      config: { scope: 'repos:read', action: 'repos.list' },
      schema: { summary: 'List the repositories of the workspace', response: { 200: listOf(RepoView) } },
    },
    async (request) => ({ items: (await listRepos(ctx.db, authOf(request).workspaceId)).map(repoView) }),
  );

  app.get(
    '/api/repos/:id',
    {
      config: { scope: 'repos:read', action: 'repos.get' },
      schema: { summary: 'One repository', params: IdParams, response: { 200: RepoView } },
    },
    async (request) => {
      const repo = await getRepo(ctx.db, authOf(request).workspaceId, request.params.id);
      if (!repo) throw repoNotFound(request.params.id);
      return repoView(repo);
    },
  );
};

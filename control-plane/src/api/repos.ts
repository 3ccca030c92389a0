import { z } from 'zod';
import { parseRepoFullName, repoFullNameSchema } from '@vmkit/protocol';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { createRepo, getRepo, listRepos } from '../db/repos.ts';
import { ApiError } from '../errors.ts';
import { IdParams, RepoView, listOf, repoView } from './views.ts';

/** owner/name by GitHub's rules, the same parser the scan uses (@vmkit/protocol repo-name.ts). */
export const RepoFullName = repoFullNameSchema;

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
      const ref = parseRepoFullName(request.body.repo);
      if (!ref) throw new ApiError('invalid_request', 'Invalid request: body.repo must be owner/name.');
      const { repo, created } = await createRepo(ctx.db, authOf(request).workspaceId, ref.owner, ref.name, ctx.now());
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

import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { createEnvironment, deleteEnvironment, getEnvironment, listEnvironments } from '../db/environments.ts';
import { findRunningDeploy } from '../db/deploys.ts';
import { ApiError } from '../errors.ts';
import { getRepo } from '../db/repos.ts';
import { EnvironmentView, IdParams, environmentView, listOf } from './views.ts';
import { repoNotFound } from './repos.ts';

/** Environment names go into host names: lowercase letters, digits and dashes. */
export const EnvironmentName = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$/, 'must be 1-32 lowercase letters, digits or inner dashes');

export const environmentRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/repos/:id/environments',
    {
      config: { scope: 'repos:write', action: 'environments.create' },
      schema: {
        summary: 'Create an environment of a repository (idempotent)',
        params: IdParams,
        body: z.strictObject({ name: EnvironmentName.describe('e.g. staging, production') }),
        response: { 200: EnvironmentView, 201: EnvironmentView },
      },
    },
    async (request, reply) => {
      const { workspaceId } = authOf(request);
      const repo = await getRepo(ctx.db, workspaceId, request.params.id);
      if (!repo) throw repoNotFound(request.params.id);
      const { environment, created } = await createEnvironment(ctx.db, workspaceId, repo.id, request.body.name, ctx.now());
      return reply.code(created ? 201 : 200).send(environmentView(environment));
    },
  );

  app.get(
    '/api/repos/:id/environments',
    {
      config: { scope: 'repos:read', action: 'environments.list' },
      schema: { summary: 'List the environments of a repository', params: IdParams, response: { 200: listOf(EnvironmentView) } },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      const repo = await getRepo(ctx.db, workspaceId, request.params.id);
      if (!repo) throw repoNotFound(request.params.id);
      return { items: (await listEnvironments(ctx.db, workspaceId, repo.id)).map(environmentView) };
    },
  );

  app.delete(
    '/api/repos/:id/environments/:environment_id',
    {
      config: { scope: 'repos:write', action: 'environments.delete' },
      schema: {
        summary: 'Delete an environment of a repository (with its deploy history; its instances stay)',
        params: z.object({ id: z.string().min(1).max(128), environment_id: z.string().min(1).max(128) }),
        response: { 200: EnvironmentView },
      },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      const repo = await getRepo(ctx.db, workspaceId, request.params.id);
      if (!repo) throw repoNotFound(request.params.id);
      const env = await getEnvironment(ctx.db, workspaceId, request.params.environment_id);
      if (!env || env.repoId !== repo.id) {
        throw new ApiError('environment_not_found', `No environment with id ${request.params.environment_id} exists for ${repo.owner}/${repo.name}.`);
      }
      const running = await findRunningDeploy(ctx.db, env.id);
      if (running) {
        throw new ApiError('conflict', `The environment ${env.name} has a deploy under way (${running.id}); wait for it to end, then delete the environment.`);
      }
      await deleteEnvironment(ctx.db, workspaceId, env.id);
      return environmentView(env);
    },
  );
};

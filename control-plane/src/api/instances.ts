import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getInstanceWithAgent, listInstancesWithAgents } from '../db/instances.ts';
import { ApiError } from '../errors.ts';
import { IdParams, InstanceView, instanceView, listOf } from './views.ts';

export function instanceNotFound(id: string): ApiError {
  return new ApiError('instance_not_found', `No instance with id ${id} found in this workspace.`);
}

export const instanceRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/api/instances',
    {
      config: { scope: 'instances:read', action: 'instances.list' },
      schema: { summary: 'List the instances of the workspace with their agent state', response: { 200: listOf(InstanceView) } },
    },
    async (request) => ({
      items: (await listInstancesWithAgents(ctx.db, authOf(request).workspaceId)).map((r) => instanceView(r.instance, r.agent)),
    }),
  );

  app.get(
    '/api/instances/:id',
    {
      config: { scope: 'instances:read', action: 'instances.get' },
      schema: { summary: 'One instance with its agent state', params: IdParams, response: { 200: InstanceView } },
    },
    async (request) => {
      const row = await getInstanceWithAgent(ctx.db, authOf(request).workspaceId, request.params.id);
      if (!row) throw instanceNotFound(request.params.id);
      return instanceView(row.instance, row.agent);
    },
  );
};

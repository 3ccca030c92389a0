import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getDeploy, listDeploySteps } from '../db/deploys.ts';
import { ApiError } from '../errors.ts';
import { DeployView, IdParams, deployView } from './views.ts';

export const deployRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/api/deploys/:id',
    {
      config: { scope: 'deploys:read', action: 'deploys.get' },
      schema: { summary: 'One deploy with its steps (poll this)', params: IdParams, response: { 200: DeployView } },
    },
    async (request) => {
      const deploy = await getDeploy(ctx.db, authOf(request).workspaceId, request.params.id);
      if (!deploy) throw new ApiError('deploy_not_found', `No deploy with id ${request.params.id} found in this workspace.`);
      return deployView(deploy, await listDeploySteps(ctx.db, deploy.id));
    },
  );
};

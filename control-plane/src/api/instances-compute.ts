import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getInstanceWithAgent } from '../db/instances.ts';
import { destroyInstance, watchProvisioning } from '../services/instances.ts';
import { IdParams, InstanceView, instanceView } from './views.ts';

/**
 * Instances made by a compute provider: DELETE destroys the VM. (POST /api/instances
 * with `provider` lives in instances-write.ts and calls the same service.) Registered
 * after the agent hub, whose connections move `provisioning` instances to `running`.
 */
export const instanceComputeRoutes: ApiPlugin = (app, { ctx }) => {
  watchProvisioning(ctx);
  app.delete(
    '/api/instances/:id',
    {
      config: { scope: 'instances:write', action: 'instances.destroy' },
      schema: { summary: "Destroy an instance's VM (through its compute provider) and mark it destroyed", params: IdParams, response: { 200: InstanceView } },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      const row = await destroyInstance(ctx, workspaceId, request.params.id);
      const withAgent = await getInstanceWithAgent(ctx.db, workspaceId, row.id);
      return instanceView(row, withAgent?.agent ?? null);
    },
  );
};

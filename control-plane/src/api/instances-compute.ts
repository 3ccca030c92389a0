import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getInstanceWithAgent } from '../db/instances.ts';
import { instancesToRecover, recoverInstances } from '../services/instance-recovery.ts';
import type { RecoveryOutcome } from '../services/instance-recovery.ts';
import { clearAgentDeadlines, destroyInstance } from '../services/instances.ts';

declare module '../app.ts' {
  interface AppContext {
    /** The start-up reconciliation of instances a previous process left waiting (runs in the background). */
    instanceRecovery?: Promise<Record<RecoveryOutcome, number>>;
  }
}
import { IdParams, InstanceView, instanceView } from './views.ts';
import { notifyInstance } from '../dashboard/live-feed.ts';

/**
 * Instances made by a compute provider: DELETE destroys the VM. (POST /api/instances
 * with `provider` lives in instances-write.ts and calls the same service.) Registered
 * after the agent hub, whose connections move `provisioning` instances to `running`.
 * At start-up it reconciles the instances a killed control plane left waiting.
 */
export const instanceComputeRoutes: ApiPlugin = (app, { ctx }) => {
  app.addHook('onReady', async () => {
    // Read before the server listens; reconciled in the background (removing a VM takes a while).
    const rows = await instancesToRecover(ctx);
    ctx.instanceRecovery = recoverInstances(ctx, rows);
  });
  app.addHook('onClose', async () => {
    clearAgentDeadlines(ctx);
    await ctx.instanceRecovery;
  });
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
      notifyInstance(ctx, workspaceId, row.id);
      return instanceView(row, withAgent?.agent ?? null);
    },
  );
};

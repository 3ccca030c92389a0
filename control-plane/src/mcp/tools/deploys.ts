import { z } from 'zod';
import { defineTool, expectOk, okResult, seg } from '../tool.ts';

export const getDeploy = defineTool({
  name: 'get_deploy',
  title: 'Get a deploy',
  description:
    'Polls a deploy by the deploy_id a deploy call returned: status (running, succeeded, failed, scaffolding_pr_open), ' +
    'app_url, run_url, instance_id and the per-step record. Read-only; call it again until the status is terminal.',
  inputSchema: z.object({ deploy_id: z.string().min(1).max(64).describe('The deploy id, e.g. dep_01jx5p0qr8...') }),
  outputSchema: z.looseObject({ status: z.string(), deploy_id: z.string().nullable().optional() }),
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    const body = expectOk(await ctx.call({ method: 'GET', path: `/api/deploys/${seg(args.deploy_id)}` }));
    return okResult({ deploy_id: typeof body.id === 'string' ? body.id : args.deploy_id, ...body });
  },
});

import { z } from 'zod';
import { errorBody } from '@vmkit/protocol';
import { defineTool, errorResult, expectOk, okResult, seg } from '../tool.ts';
import { restDeployView } from '../../client/deploy-view.ts';
import { deployAnswer, deployAnswerSchema } from './deploy-answer.ts';

export const getDeploy = defineTool({
  name: 'get_deploy',
  title: 'Get a deploy',
  description:
    'Polls a deploy by the deploy_id that deploy returned: status (running, succeeded, failed), app_url, run_url, ' +
    'instance_id, the step under way or the failed step with its error, and every step with its times. Read-only; call ' +
    'it again (a few seconds apart) until the status is no longer "running".',
  inputSchema: z.object({ deploy_id: z.string().min(1).max(64).describe('The deploy id, e.g. dep_01jx5p0qr8...') }),
  outputSchema: deployAnswerSchema,
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    const body = expectOk(await ctx.call({ method: 'GET', path: `/api/deploys/${seg(args.deploy_id)}` }));
    const view = restDeployView.safeParse(body);
    if (!view.success) return errorResult({ status: 500, headers: {}, body: errorBody('internal', 'The control plane answered without a deploy record.') });
    return okResult(deployAnswer({ ...view.data, deploy_id: view.data.deploy_id ?? args.deploy_id }));
  },
});

import { z } from 'zod';
import { defineTool, expectOk, okResult, seg } from '../tool.ts';

// Loose on purpose: the REST view is the source of truth for every other field
// (times are ISO 8601 strings there); the schema names only what a model relies on.
const agentState = z
  .looseObject({ state: z.string().describe('connected, disconnected or revoked') })
  .nullable();

const instance = z.looseObject({
  id: z.string().describe('Instance id (inst_...), the instance_id other tools take.'),
  name: z.string(),
  status: z.string(),
  agent: agentState.optional(),
});

export const listInstances = defineTool({
  name: 'list_instances',
  title: 'List instances',
  description:
    'Lists the VMs (instances) of your VMKit workspace with their status and whether their vmkit-agent is connected. ' +
    'Use it to find the instance_id that harden_vm and get_instance take. Read-only.',
  inputSchema: z.object({}),
  outputSchema: z.looseObject({ instances: z.array(instance) }),
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  async run(_args, ctx) {
    const body = expectOk(await ctx.call({ method: 'GET', path: '/api/instances' }));
    const items = Array.isArray(body.items) ? body.items : Array.isArray(body.instances) ? body.instances : [];
    return okResult({ instances: items as unknown[] });
  },
});

export const getInstance = defineTool({
  name: 'get_instance',
  title: 'Get an instance',
  description:
    'Shows one VM (instance) of your workspace: status, addresses, when it was hardened, and its vmkit-agent state ' +
    '(connected or disconnected, last seen). Read-only.',
  inputSchema: z.object({ instance_id: z.string().min(1).max(64).describe('The instance id, e.g. inst_01jx4n9abc...') }),
  outputSchema: instance,
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    return okResult(expectOk(await ctx.call({ method: 'GET', path: `/api/instances/${seg(args.instance_id)}` })));
  },
});

import { z } from 'zod';
import { agentVersionSchema } from '@vmkit/protocol';
import type { ApiPlugin, AppContext } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { countTargetsByState, getRollout, listRollouts, listRolloutTargets } from '../db/agent-rollouts.ts';
import type { RolloutRow, RolloutTargetRow } from '../db/agent-rollouts.ts';
import { listInstancesWithAgents } from '../db/instances.ts';
import { ApiError } from '../errors.ts';
import { rolloutService } from '../services/agent-rollout/service.ts';
import { IdParams, iso, listOf } from './views.ts';

/** Longest a caller may ask a long-poll to wait. */
const MAX_WAIT_MS = 600_000;
/** Agents one rollout may name; a bigger fleet goes by percent. */
const MAX_NAMED = 1_000;

const time = z.string().describe('ISO 8601 time');

const RolloutBody = z.strictObject({
  version: agentVersionSchema.describe('A release this control plane serves (GET /agent/releases/{version}/{platform})'),
  instance_ids: z.array(z.string().min(1).max(128)).min(1).max(MAX_NAMED).optional().describe('These instances\' agents, in this order'),
  percent: z
    .number()
    .int()
    .min(1)
    .max(100)
    .optional()
    .describe("This share of the workspace's enrolled agents (rounded up), taken from those connected, not on the version yet and able to self-update"),
  batch_size: z.number().int().min(1).max(100).describe('Agents updated at once; the next batch starts when each of them has an outcome'),
  max_failures: z.number().int().min(1).max(MAX_NAMED).describe('Failed, rolled back or timed out agents that stop the rollout (the rest are skipped)'),
  allow_downgrade: z.boolean().default(false).describe('Needed when the version is older than an agent runs'),
});

const RolloutQuery = z.strictObject({
  wait_ms: z.coerce.number().int().min(0).max(MAX_WAIT_MS).default(0).describe('long-poll: wait this long for a change'),
  after: z.string().max(40).optional().describe('long-poll: answer once the rollout changed after this updated_at (ISO 8601 as answered, or milliseconds)'),
});

const TargetView = z.object({
  instance_id: z.string(),
  instance_name: z.string().nullable(),
  agent_id: z.string(),
  batch: z.number().int(),
  platform: z.string(),
  state: z.string().describe('pending | updating | succeeded | rolled_back | failed | timed_out | skipped'),
  from_version: z.string().nullable().describe('What the agent ran when the rollout was made'),
  to_version: z.string().nullable().describe('What it runs after its update (the previous version after a rollback)'),
  command_id: z.string().nullable(),
  error_key: z.string().nullable(),
  error_message: z.string().nullable(),
  started_at: time.nullable(),
  finished_at: time.nullable(),
});

const Counts = z.record(z.string(), z.number().int()).describe('Agents per state');

const RolloutView = z.object({
  id: z.string(),
  status: z.string().describe('running | succeeded | failed (every agent had its turn, some failed) | stopped (max_failures reached with agents left, who were skipped)'),
  version: z.string(),
  selection: z.object({ instance_ids: z.array(z.string()).optional(), percent: z.number().optional() }),
  batch_size: z.number().int(),
  max_failures: z.number().int(),
  allow_downgrade: z.boolean(),
  counts: Counts,
  error_key: z.string().nullable(),
  error_message: z.string().nullable(),
  created_at: time,
  updated_at: time,
  finished_at: time.nullable(),
});
const RolloutDetailView = RolloutView.extend({ agents: z.array(TargetView) });

function rolloutView(r: RolloutRow, counts: Record<string, number>): z.output<typeof RolloutView> {
  return {
    id: r.id,
    status: r.status,
    version: r.version,
    selection: r.selection,
    batch_size: r.batchSize,
    max_failures: r.maxFailures,
    allow_downgrade: r.allowDowngrade,
    counts,
    error_key: r.errorKey,
    error_message: r.errorMessage,
    created_at: iso(r.createdAt),
    updated_at: iso(r.updatedAt),
    finished_at: iso(r.finishedAt),
  };
}

async function detailView(ctx: AppContext, r: RolloutRow): Promise<z.output<typeof RolloutDetailView>> {
  const targets = await listRolloutTargets(ctx.db, r.id);
  const names = new Map((await listInstancesWithAgents(ctx.db, r.workspaceId)).map((i) => [i.instance.id, i.instance.name]));
  const counts: Record<string, number> = {};
  for (const t of targets) counts[t.state] = (counts[t.state] ?? 0) + 1;
  return { ...rolloutView(r, counts), agents: targets.map((t) => targetView(t, names.get(t.instanceId) ?? null)) };
}

function targetView(t: RolloutTargetRow, name: string | null): z.output<typeof TargetView> {
  return {
    instance_id: t.instanceId,
    instance_name: name,
    agent_id: t.agentId,
    batch: t.batch,
    platform: t.platform,
    state: t.state,
    from_version: t.fromVersion,
    to_version: t.toVersion,
    command_id: t.commandId,
    error_key: t.errorKey,
    error_message: t.errorMessage,
    started_at: iso(t.startedAt),
    finished_at: iso(t.finishedAt),
  };
}

function afterMs(raw: string | undefined): number {
  if (raw === undefined) return -1;
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isFinite(ms)) throw new ApiError('invalid_request', 'Invalid request: querystring.after must be an updated_at (ISO 8601) or milliseconds.');
  return ms;
}

function closedSignal(request: { raw: { once(event: 'close', fn: () => void): unknown } }): AbortSignal {
  const abort = new AbortController();
  request.raw.once('close', () => abort.abort());
  return abort.signal;
}

/** Fleet rollouts of the agent: POST starts one, GET follows it agent by agent. */
export const agentUpdateRoutes: ApiPlugin = (app, { ctx }) => {
  const service = rolloutService(ctx);
  // Once listening (the release URLs sent to agents name the final address): rollouts a killed process left running go on.
  app.addHook('onListen', async () => {
    if (!ctx.hub) return;
    void service.resume().catch((err: unknown) => ctx.logger.error({ err }, 'agent rollout: could not resume unfinished rollouts'));
    await Promise.resolve();
  });

  app.post(
    '/api/agents/updates',
    {
      config: { scope: 'admin', action: 'agents.updates.create' },
      schema: {
        summary: 'Update many agents to a release, batch by batch, stopping at max_failures',
        description:
          'Give exactly one of instance_ids or percent. Answers 202 with the rollout at once; each agent gets the signed agent.update ' +
          'and a batch ends when each of its agents came back connected on the new version, rolled back, failed or timed out. ' +
          'Follow it with GET /api/agents/updates/{id}. One rollout runs per workspace at a time.',
        body: RolloutBody,
        response: { 202: RolloutDetailView },
      },
    },
    async (request, reply) => {
      const { workspaceId, keyId } = authOf(request);
      const b = request.body;
      const row = await service.create({
        workspaceId,
        keyId,
        version: b.version,
        instanceIds: b.instance_ids,
        percent: b.percent,
        batchSize: b.batch_size,
        maxFailures: b.max_failures,
        allowDowngrade: b.allow_downgrade,
      });
      return reply.code(202).send(await detailView(ctx, row));
    },
  );

  app.get(
    '/api/agents/updates/:id',
    {
      config: { scope: 'instances:read', action: 'agents.updates.get' },
      schema: {
        summary: 'One rollout with each agent\'s state, versions, error and times; long-poll with wait_ms and after=<updated_at>',
        params: IdParams,
        querystring: RolloutQuery,
        response: { 200: RolloutDetailView },
      },
    },
    async (request) => {
      const found = await getRollout(ctx.db, authOf(request).workspaceId, request.params.id);
      if (!found) throw new ApiError('rollout_not_found', `No agent rollout with id ${request.params.id} found in this workspace.`);
      const after = afterMs(request.query.after);
      const row = request.query.wait_ms > 0 ? await service.waitForChange(found, after, request.query.wait_ms, closedSignal(request)) : found;
      return detailView(ctx, row);
    },
  );

  app.get(
    '/api/agents/updates',
    {
      config: { scope: 'instances:read', action: 'agents.updates.list' },
      schema: { summary: "The workspace's agent rollouts, newest first (at most 100), with agents per state", response: { 200: listOf(RolloutView) } },
    },
    async (request) => {
      const rows = await listRollouts(ctx.db, authOf(request).workspaceId);
      const counts = await countTargetsByState(ctx.db, rows.map((r) => r.id));
      return { items: rows.map((r) => rolloutView(r, counts.get(r.id) ?? {})) };
    },
  );
};

import { z } from 'zod';
import { parseRepoFullName } from '@vmkit/protocol';
import type { ApiPlugin, AppContext } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getDeploy, getDeployWithSteps, listDeploys } from '../db/deploys.ts';
import type { DeployRow } from '../db/deploys.ts';
import { findEnvironmentByName, getEnvironment } from '../db/environments.ts';
import { findRepoByName, getRepo } from '../db/repos.ts';
import { ApiError } from '../errors.ts';
import { deployServiceOf, isTerminal } from '../services/deploy/service.ts';
import { RepoFullName } from './repos.ts';
import { DeployView, IdParams, deployView, listOf } from './views.ts';

/** Longest a REST caller may ask a long-poll to wait (the POST is bounded by config.mcpMaxWaitMs as well). */
const MAX_WAIT_MS = 600_000;

const DeployBody = z.strictObject({
  repo: RepoFullName.describe('owner/name of a repository connected to this workspace'),
  dest: z.string().min(1).max(64).describe('Environment name, e.g. staging'),
  sha: z
    .string()
    .regex(/^[0-9a-fA-F]{4,40}$/, 'must be a commit sha (4-40 hex digits)')
    .optional()
    .describe('Commit to deploy; default the head of the default branch'),
  wait_ms: z.number().int().min(0).max(MAX_WAIT_MS).default(0).describe('How long to wait for the deploy to end before answering 202 (at most the server\'s MCP wait bound)'),
});

const DeployQuery = z.strictObject({
  wait_ms: z.coerce.number().int().min(0).max(MAX_WAIT_MS).default(0).describe('long-poll: wait this long for a change'),
  after: z
    .string()
    .max(40)
    .optional()
    .describe('long-poll: answer once the deploy changed after this updated_at (ISO 8601 as answered, or milliseconds)'),
});

const ListQuery = z.strictObject({
  repo: RepoFullName.optional().describe('only deploys of this owner/name'),
  dest: z.string().min(1).max(64).optional().describe('only deploys to this environment (with repo)'),
});

function afterMs(raw: string | undefined): number {
  if (raw === undefined) return -1;
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isFinite(ms)) throw new ApiError('invalid_request', 'Invalid request: querystring.after must be an updated_at (ISO 8601) or milliseconds.');
  return ms;
}

/** The deploy as it is now (at least as new as `d`), row and steps from one snapshot. */
async function view(ctx: AppContext, d: DeployRow): Promise<z.output<typeof DeployView>> {
  const repo = await getRepo(ctx.db, d.workspaceId, d.repoId);
  const env = await getEnvironment(ctx.db, d.workspaceId, d.environmentId);
  const now = await getDeployWithSteps(ctx.db, d.id);
  // A deploy is never deleted while its workspace stands; were it gone, the row in hand is shown without steps.
  return deployView(now?.row ?? d, now?.steps ?? [], { repo: repo ? `${repo.owner}/${repo.name}` : '', dest: env?.name ?? '' });
}

function closedSignal(request: { raw: { once(event: 'close', fn: () => void): unknown } }): AbortSignal {
  const abort = new AbortController();
  request.raw.once('close', () => abort.abort());
  return abort.signal;
}

export const deployRoutes: ApiPlugin = (app, { ctx }) => {
  const service = deployServiceOf(ctx);
  // After the hub is up and instances are reconciled: deploys a killed process left running continue.
  app.addHook('onReady', async () => {
    if (!ctx.hub) return;
    void service.resume().catch((err: unknown) => ctx.logger.error({ err }, 'deploy: could not resume unfinished deploys'));
    await Promise.resolve();
  });
  app.addHook('preClose', () => service.close());

  app.post(
    '/api/deploys',
    {
      config: { scope: 'deploys:write', action: 'deploys.create' },
      schema: {
        summary: 'Deploy a repository to an environment: the scaffolding pull request first, then VM, hardening, DNS and the workflow run',
        body: DeployBody,
        response: { 200: DeployView, 202: DeployView },
      },
    },
    async (request, reply) => {
      const auth = authOf(request);
      let deploy = await service.start({ workspaceId: auth.workspaceId, keyId: auth.keyId, repo: request.body.repo, dest: request.body.dest, sha: request.body.sha });
      const waitMs = Math.min(request.body.wait_ms, ctx.config.mcpMaxWaitMs);
      deploy = await service.waitForEnd(deploy, waitMs, closedSignal(request));
      const body = await view(ctx, deploy);
      return reply.code(isTerminal({ status: body.status }) ? 200 : 202).send(body);
    },
  );

  app.get(
    '/api/deploys/:id',
    {
      config: { scope: 'deploys:read', action: 'deploys.get' },
      schema: {
        summary: 'One deploy with its steps; long-poll with wait_ms and after=<updated_at> to hear of the next change',
        params: IdParams,
        querystring: DeployQuery,
        response: { 200: DeployView },
      },
    },
    async (request) => {
      const found = await getDeploy(ctx.db, authOf(request).workspaceId, request.params.id);
      if (!found) throw new ApiError('deploy_not_found', `No deploy with id ${request.params.id} found in this workspace.`);
      const after = afterMs(request.query.after);
      const deploy = request.query.wait_ms > 0 ? await service.waitForChange(found, after, request.query.wait_ms, closedSignal(request)) : found;
      return view(ctx, deploy);
    },
  );

  app.get(
    '/api/deploys',
    {
      config: { scope: 'deploys:read', action: 'deploys.list' },
      schema: { summary: "The workspace's deploys, newest first (at most 100)", querystring: ListQuery, response: { 200: listOf(DeployView) } },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      const { repo: full, dest } = request.query;
      if (dest !== undefined && full === undefined) throw new ApiError('invalid_request', 'Invalid request: dest needs repo (environment names are per repository).');
      let repoId: string | undefined;
      let environmentId: string | undefined;
      if (full !== undefined) {
        const ref = parseRepoFullName(full);
        const repo = ref && (await findRepoByName(ctx.db, workspaceId, ref.owner, ref.name));
        if (!repo) throw new ApiError('repo_not_found', `No repo ${full} is connected to this workspace.`);
        repoId = repo.id;
        if (dest !== undefined) {
          const env = await findEnvironmentByName(ctx.db, workspaceId, repo.id, dest);
          if (!env) throw new ApiError('environment_not_found', `No environment "${dest}" exists for ${full}.`);
          environmentId = env.id;
        }
      }
      const rows = await listDeploys(ctx.db, workspaceId, { ...(repoId && { repoId }), ...(environmentId && { environmentId }) });
      return { items: await Promise.all(rows.map((d) => view(ctx, d))) };
    },
  );
};

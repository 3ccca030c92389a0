import { MAX_COMMAND_LIFETIME_MS, releaseArtifactPath } from '@vmkit/protocol';
import type { AgentPlatform, AgentUpdateParams } from '@vmkit/protocol';
import type { AppContext } from '../app.ts';
import { getAgentByInstance } from '../db/agents.ts';
import { insertAudit } from '../db/audit.ts';
import { getInstance } from '../db/instances.ts';
import { ApiError } from '../errors.ts';
import { findRelease, releaseStoreOf } from '../api/agent-releases.ts';
import { agentOnline, commandBusOf } from '../hub/plugin.ts';
import { AgentCommandError, CommandAbortedError } from '../hub/errors.ts';

/**
 * How long the control plane follows an agent.update: download and staging, the
 * restart, the new version's confirmation window (120 s by default) or its rollback,
 * and a reconnect with backoff. The command's envelope lives at most as long.
 */
export const AGENT_UPDATE_FOLLOW_MS = MAX_COMMAND_LIFETIME_MS;

export interface AgentUpdateRequest {
  workspaceId: string;
  /** The API key that asked (audit rows name it). */
  keyId: string | null;
  instanceId: string;
  version: string;
  platform: AgentPlatform;
  allowDowngrade: boolean;
  /** The fleet rollout this update is part of (its audit row names it). */
  rolloutId?: string;
}

/** How an update ended, as the audit trail records it. */
export type AgentUpdateOutcome =
  | { status: 'succeeded'; version: string; previousVersion: string | null; changed: boolean }
  | { status: 'rolled_back'; version: string | null; message: string }
  | { status: 'failed'; errorKey: string; message: string }
  /** This process stopped following it (shutting down): no outcome, nothing audited; the command goes on. */
  | { status: 'abandoned' };

export interface StartedAgentUpdate {
  commandId: string;
  agentId: string;
  params: AgentUpdateParams;
  /** Settles when the agent's result arrives (after its restart) or the follow-up bound passes; never rejects. */
  outcome: Promise<AgentUpdateOutcome>;
}

export const AGENT_UPDATE_ACTIONS = {
  succeeded: 'agent.update.succeeded',
  rolled_back: 'agent.update.rolled_back',
  failed: 'agent.update.failed',
} as const;

function outcomeOf(err: unknown): AgentUpdateOutcome {
  if (err instanceof CommandAbortedError) return { status: 'abandoned' };
  if (err instanceof AgentCommandError) {
    const key = err.reason ?? err.key;
    const version = typeof err.output?.version === 'string' ? err.output.version : null;
    if (key === 'update_rolled_back') return { status: 'rolled_back', version, message: err.agentMessage };
    return { status: 'failed', errorKey: String(key), message: err.agentMessage };
  }
  const e = err as { key?: unknown; message?: unknown };
  return { status: 'failed', errorKey: typeof e.key === 'string' ? e.key : 'internal', message: typeof e.message === 'string' ? e.message : String(err) };
}

/**
 * Sends a signed agent.update for one instance's agent with the release this control
 * plane serves, and follows it to its end: the agent restarts on the new version and
 * confirms it once connected, or rolls it back; either way the result (and an audit
 * row `agent.update.*`) comes from the agent's journal after its restart.
 */
export async function startAgentUpdate(ctx: AppContext, req: AgentUpdateRequest): Promise<StartedAgentUpdate> {
  const instance = await getInstance(ctx.db, req.workspaceId, req.instanceId);
  if (!instance) throw new ApiError('instance_not_found', `No instance ${req.instanceId} exists in this workspace.`);
  const agent = await getAgentByInstance(ctx.db, instance.id);
  if (!agent || agent.state === 'revoked') throw new ApiError('vm_not_provisioned', `Instance ${instance.id} has no enrolled vmkit-agent.`);
  if (!(await agentOnline(ctx, agent.id))) throw new ApiError('agent_not_connected', `The vmkit-agent of instance ${instance.id} is not connected; an update needs it online.`);
  const release = await findRelease(releaseStoreOf(ctx), req.version, req.platform);
  const base = ctx.publicUrl.endsWith('/') ? ctx.publicUrl : `${ctx.publicUrl}/`;
  const params: AgentUpdateParams = {
    version: release.version,
    platform: release.platform,
    url: new URL(releaseArtifactPath(release.version, release.platform), base).href,
    sha256: release.sha256,
    size: release.size,
    ...(req.allowDowngrade ? { allow_downgrade: true } : {}),
  };
  let idKnown: (id: string) => void = () => undefined;
  const commandId = new Promise<string>((resolve) => (idKnown = resolve));
  const sent = commandBusOf(ctx).send(agent.id, 'agent.update', params, {
    requireConnected: true,
    timeoutMs: AGENT_UPDATE_FOLLOW_MS,
    onCommandId: (id) => idKnown(id),
  });
  const outcome = sent.then(
    (o): AgentUpdateOutcome => ({
      status: 'succeeded',
      version: typeof o.output.version === 'string' ? o.output.version : release.version,
      previousVersion: typeof o.output.previous_version === 'string' ? o.output.previous_version : null,
      changed: o.output.changed !== false,
    }),
    outcomeOf,
  );
  // The id is known once the command is stored; a refusal before that (not connected) is the caller's error.
  const id = await Promise.race([commandId, sent.then(() => commandId)]).catch((err: unknown) => {
    throw err instanceof ApiError ? err : new ApiError((err as { key?: string }).key === 'agent_not_connected' ? 'agent_not_connected' : 'internal', (err as Error).message);
  });
  const recorded = outcome.then((o) =>
    recordAgentUpdateOutcome(ctx, { workspaceId: req.workspaceId, keyId: req.keyId, instanceId: instance.id, commandId: id, version: params.version, rolloutId: req.rolloutId }, o),
  );
  return { commandId: id, agentId: agent.id, params, outcome: recorded };
}

export interface FollowedAgentUpdate {
  workspaceId: string;
  keyId: string | null;
  instanceId: string;
  commandId: string;
  version: string;
  rolloutId?: string | undefined;
}

/** Writes the audit row `agent.update.*` of an outcome (none for `abandoned`) and logs it. */
async function recordAgentUpdateOutcome(ctx: AppContext, u: FollowedAgentUpdate, o: AgentUpdateOutcome): Promise<AgentUpdateOutcome> {
  if (o.status === 'abandoned') return o;
  await insertAudit(ctx.db, {
    at: ctx.now(),
    workspaceId: u.workspaceId,
    keyId: u.keyId,
    channel: 'agent',
    tool: null,
    action: AGENT_UPDATE_ACTIONS[o.status],
    method: null,
    route: null,
    targetIds: { id: u.instanceId, command_id: u.commandId, version: u.version, ...(u.rolloutId ? { rollout_id: u.rolloutId } : {}) },
    status: o.status === 'succeeded' ? 200 : o.status === 'rolled_back' ? 502 : 500,
    errorKey: o.status === 'succeeded' ? null : o.status === 'rolled_back' ? 'update_rolled_back' : o.errorKey,
    requestId: null,
    clientAddress: null,
  }).catch((err: unknown) => ctx.logger.error({ err, command_id: u.commandId }, 'agent update: audit row not written'));
  ctx.logger.info({ command_id: u.commandId, instance_id: u.instanceId, outcome: o }, 'agent update finished');
  return o;
}

/**
 * Follows an agent.update sent by an earlier process (a restart lost its waiter): its
 * result may be stored already or still come from the agent's journal. Settles like
 * startAgentUpdate's outcome, audit row included, within `timeoutMs`.
 */
export function followAgentUpdate(ctx: AppContext, u: FollowedAgentUpdate, timeoutMs: number): Promise<AgentUpdateOutcome> {
  const outcome = commandBusOf(ctx)
    .resume(u.commandId, { timeoutMs })
    .then(
      (o): AgentUpdateOutcome => ({
        status: 'succeeded',
        version: typeof o.output.version === 'string' ? o.output.version : u.version,
        previousVersion: typeof o.output.previous_version === 'string' ? o.output.previous_version : null,
        changed: o.output.changed !== false,
      }),
      outcomeOf,
    );
  return outcome.then((o) => recordAgentUpdateOutcome(ctx, u, o));
}

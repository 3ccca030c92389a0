/**
 * Fleet rollouts of the agent: `create` checks the request and the releases, stores the
 * rollout with its targets (batch by batch, in order) and drives it in the background.
 * Each target gets the signed agent.update of services/agent-update.ts; a batch ends when
 * every agent of it came back connected on the new version, rolled back, failed or timed
 * out. Failures reaching max_failures stop the rollout: the agents not yet sent an update
 * are skipped. Every state is stored before the next step, so `resume` continues a rollout
 * a restart interrupted: updates already sent are followed to their result (the agent
 * keeps it in its journal until the control plane acknowledges it), the rest are sent.
 */
import { agentPlatformSchema } from '@vmkit/protocol';
import type { AppContext } from '../../app.ts';
import { findRelease, releaseStoreOf } from '../../api/agent-releases.ts';
import { getAgentByInstance } from '../../db/agents.ts';
import {
  FAILED_TARGET_STATES,
  createRunningRollout,
  findUpdateCommandSince,
  getRolloutById,
  listRolloutTargets,
  listRunningRollouts,
  skipPendingTargets,
  touchRollout,
  updateRollout,
  updateTarget,
} from '../../db/agent-rollouts.ts';
import type { RolloutRow, RolloutStatus, RolloutTargetRow, TargetPatch, TargetState } from '../../db/agent-rollouts.ts';
import { insertAudit } from '../../db/audit.ts';
import { listInstancesWithAgents } from '../../db/instances.ts';
import { ApiError } from '../../errors.ts';
import { AGENT_UPDATE_FOLLOW_MS, followAgentUpdate, startAgentUpdate } from '../agent-update.ts';
import type { AgentUpdateOutcome } from '../agent-update.ts';
import { AgentWaiter } from '../deploy/agent-waiter.ts';
import { planRollout } from './plan.ts';

declare module '../../app.ts' {
  interface AppContext {
    agentRollouts?: AgentRolloutService;
  }
}

export interface RolloutRequest {
  workspaceId: string;
  keyId: string | null;
  version: string;
  instanceIds?: string[] | undefined;
  percent?: number | undefined;
  batchSize: number;
  maxFailures: number;
  allowDowngrade: boolean;
}

/**
 * A target whose agent is not connected when its batch comes is waited for this long
 * (agents reconnect with backoff capped at 60 s, e.g. after a control-plane restart).
 */
export const CONNECT_GRACE_MS = 90_000;
/** A resumed update is followed at least this long, whatever its first follow-up had left. */
const MIN_RESUMED_FOLLOW_MS = 60_000;

export const ROLLOUT_ACTIONS = {
  started: 'agent.rollout.started',
  resumed: 'agent.rollout.resumed',
  succeeded: 'agent.rollout.succeeded',
  failed: 'agent.rollout.failed',
  stopped: 'agent.rollout.stopped',
  skipped: 'agent.update.skipped',
} as const;

export function rolloutService(ctx: AppContext): AgentRolloutService {
  ctx.agentRollouts ??= new AgentRolloutService(ctx);
  return ctx.agentRollouts;
}

export class AgentRolloutService {
  readonly #ctx: AppContext;
  readonly #agents: AgentWaiter;
  readonly #active = new Map<string, Promise<void>>();
  readonly #waiters = new Map<string, Set<() => void>>();
  readonly #closing = new AbortController();
  readonly #closed: Promise<void>;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    this.#agents = new AgentWaiter(ctx);
    this.#closed = new Promise((resolve) => this.#closing.signal.addEventListener('abort', () => resolve(), { once: true }));
  }

  /** Checks the request, stores the rollout and starts it; answers the stored row. */
  async create(req: RolloutRequest): Promise<RolloutRow> {
    const { db } = this.#ctx;
    if ((req.instanceIds === undefined) === (req.percent === undefined)) {
      throw new ApiError('invalid_request', 'Invalid request: give exactly one of instance_ids (these agents) or percent (a share of the fleet).');
    }
    if (req.instanceIds !== undefined && new Set(req.instanceIds).size !== req.instanceIds.length) {
      throw new ApiError('invalid_request', 'Invalid request: body.instance_ids names an instance more than once.');
    }
    const hub = this.#ctx.hub;
    const targets = planRollout(req, {
      instances: await listInstancesWithAgents(db, req.workspaceId),
      isConnected: (agentId) => hub?.isConnected(agentId) === true,
    });
    // Every platform among the targets must have the release (a missing one is refused now, not agent by agent).
    for (const platform of new Set(targets.map((t) => t.platform))) await findRelease(releaseStoreOf(this.#ctx), req.version, platform);
    const { rollout, created } = await createRunningRollout(
      db,
      {
        workspaceId: req.workspaceId,
        keyId: req.keyId,
        version: req.version,
        allowDowngrade: req.allowDowngrade,
        selection: req.instanceIds !== undefined ? { instance_ids: req.instanceIds } : { percent: req.percent ?? 0 },
        batchSize: req.batchSize,
        maxFailures: req.maxFailures,
        targets,
      },
      this.#ctx.now(),
    );
    if (!created) {
      throw new ApiError('rollout_in_progress', `Agent rollout ${rollout.id} (to ${rollout.version}) is still running in this workspace; wait for it to end (GET /api/agents/updates/${rollout.id}).`, {
        rollout_id: rollout.id,
      });
    }
    await this.#audit(rollout, ROLLOUT_ACTIONS.started, 202, null, { agents: String(targets.length) });
    this.#drive(rollout.id);
    return rollout;
  }

  /** At start-up: every rollout a previous process left running goes on where it was. */
  async resume(): Promise<number> {
    const rows = await listRunningRollouts(this.#ctx.db);
    for (const row of rows) {
      if (this.#active.has(row.id)) continue;
      await this.#audit(row, ROLLOUT_ACTIONS.resumed, 202, null);
      this.#drive(row.id);
    }
    if (rows.length > 0) this.#ctx.logger.info({ count: rows.length }, 'agent rollout: resumed rollouts a restart left running');
    return rows.length;
  }

  /** Stops driving: updates under way keep their state and are followed again after the next start. */
  async close(): Promise<void> {
    this.#closing.abort(new Error('the control plane is closing'));
    await Promise.allSettled([...this.#active.values()]);
  }

  /** The rollout this process drives (tests and the bench wait on it). */
  active(id: string): Promise<void> | undefined {
    return this.#active.get(id);
  }

  /**
   * The rollout once it changed after `afterMs` (its updated_at), ended, or `waitMs`
   * passed: woken by the rollout's own changes, never by re-reading in a loop.
   */
  async waitForChange(row: RolloutRow, afterMs: number, waitMs: number, signal?: AbortSignal): Promise<RolloutRow> {
    const deadline = Date.now() + waitMs;
    let current = row;
    for (;;) {
      if (current.updatedAt > afterMs || current.status !== 'running') return current;
      const left = deadline - Date.now();
      if (left <= 0 || signal?.aborted) return current;
      await this.#next(current.id, left, signal);
      current = (await getRolloutById(this.#ctx.db, current.id)) ?? current;
    }
  }

  #next(id: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.#waiters.get(id);
      if (!set) this.#waiters.set(id, (set = new Set()));
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        set.delete(done);
        if (set.size === 0 && this.#waiters.get(id) === set) this.#waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      set.add(done);
    });
  }

  async #changed(id: string): Promise<void> {
    await touchRollout(this.#ctx.db, id, this.#ctx.now());
    for (const w of [...(this.#waiters.get(id) ?? [])]) w();
  }

  #drive(id: string): void {
    const run = this.#run(id)
      .catch((err: unknown) => {
        if (!this.#closing.signal.aborted) this.#ctx.logger.error({ err, rollout_id: id }, 'agent rollout: the runner failed');
      })
      .finally(() => this.#active.delete(id));
    this.#active.set(id, run);
  }

  /** Batch after batch until every target has an outcome, or failures reach max_failures. */
  async #run(id: string): Promise<void> {
    for (;;) {
      if (this.#closing.signal.aborted) return;
      const rollout = await getRolloutById(this.#ctx.db, id);
      if (!rollout || rollout.status !== 'running') return;
      const targets = await listRolloutTargets(this.#ctx.db, id);
      const failures = targets.filter((t) => FAILED_TARGET_STATES.includes(t.state as TargetState)).length;
      // Updates a restart interrupted are followed to their end before anything else is decided.
      const updating = targets.filter((t) => t.state === 'updating');
      if (updating.length > 0) {
        await Promise.all(updating.map((t) => this.#updateOne(rollout, t)));
        continue;
      }
      const pending = targets.filter((t) => t.state === 'pending');
      if (pending.length === 0) return this.#finish(rollout, failures > 0 ? 'failed' : 'succeeded', failures);
      if (failures >= rollout.maxFailures) return this.#stop(rollout, failures);
      const batch = Math.min(...pending.map((t) => t.batch));
      await Promise.all(pending.filter((t) => t.batch === batch).map((t) => this.#updateOne(rollout, t)));
    }
  }

  /** Sends (or, after a restart, follows) one target's update and stores how it ended. */
  async #updateOne(rollout: RolloutRow, target: RolloutTargetRow): Promise<void> {
    const now = this.#ctx.now();
    let outcome: Promise<AgentUpdateOutcome> | undefined;
    if (target.state === 'updating') {
      const commandId = target.commandId ?? (await findUpdateCommandSince(this.#ctx.db, target.agentId, target.startedAt ?? rollout.createdAt))?.id;
      if (commandId !== undefined) {
        if (target.commandId === null) await this.#setTarget(rollout, target, { commandId });
        const left = (target.startedAt ?? now) + AGENT_UPDATE_FOLLOW_MS - now;
        outcome = followAgentUpdate(
          this.#ctx,
          { workspaceId: rollout.workspaceId, keyId: rollout.keyId, instanceId: target.instanceId, commandId, version: rollout.version, rolloutId: rollout.id },
          Math.max(MIN_RESUMED_FOLLOW_MS, left),
        );
      }
      // No command was stored before the restart: it was never sent, so send it now.
    }
    if (outcome === undefined) {
      await this.#setTarget(rollout, target, { state: 'updating', startedAt: now });
      try {
        await this.#agents.waitConnected(target.instanceId, AbortSignal.any([this.#closing.signal, AbortSignal.timeout(CONNECT_GRACE_MS)]));
      } catch {
        // Not connected within the grace: startAgentUpdate refuses it with agent_not_connected.
      }
      if (this.#closing.signal.aborted) return;
      try {
        const started = await startAgentUpdate(this.#ctx, {
          workspaceId: rollout.workspaceId,
          keyId: rollout.keyId,
          instanceId: target.instanceId,
          version: rollout.version,
          platform: agentPlatformSchema.parse(target.platform),
          allowDowngrade: rollout.allowDowngrade,
          rolloutId: rollout.id,
        });
        await this.#setTarget(rollout, target, { commandId: started.commandId });
        outcome = started.outcome;
      } catch (err) {
        const e = err instanceof ApiError ? err : new ApiError('internal', (err as Error).message);
        await this.#audit(rollout, 'agent.update.failed', e.status, e.key, { id: target.instanceId });
        return this.#setTarget(rollout, target, { state: 'failed', errorKey: e.key, errorMessage: e.message, finishedAt: this.#ctx.now() });
      }
    }
    const o = await Promise.race([outcome, this.#closed.then(() => ({ status: 'abandoned' }) as const)]);
    if (o.status === 'abandoned' || this.#closing.signal.aborted) return;
    await this.#setTarget(rollout, target, await this.#outcomePatch(rollout, target, o));
  }

  async #outcomePatch(rollout: RolloutRow, target: RolloutTargetRow, o: Exclude<AgentUpdateOutcome, { status: 'abandoned' }>): Promise<TargetPatch> {
    const finishedAt = this.#ctx.now();
    if (o.status === 'rolled_back') return { state: 'rolled_back', toVersion: o.version, errorKey: 'update_rolled_back', errorMessage: o.message, finishedAt };
    if (o.status === 'failed') {
      return { state: o.errorKey === 'command_timed_out' ? 'timed_out' : 'failed', errorKey: o.errorKey, errorMessage: o.message, finishedAt };
    }
    // The result comes from the new version once it connected; the hub recorded that hello first.
    const agent = await getAgentByInstance(this.#ctx.db, target.instanceId);
    if (agent?.agentVersion !== rollout.version) {
      return {
        state: 'failed',
        toVersion: agent?.agentVersion ?? null,
        errorKey: 'command_failed',
        errorMessage: `The agent reported the update to ${rollout.version} done, but it connected as ${agent?.agentVersion ?? 'nothing'}.`,
        finishedAt,
      };
    }
    return { state: 'succeeded', toVersion: o.version, finishedAt };
  }

  async #setTarget(rollout: RolloutRow, target: RolloutTargetRow, patch: TargetPatch): Promise<void> {
    await updateTarget(this.#ctx.db, target.id, patch);
    Object.assign(target, patch);
    await this.#changed(rollout.id);
  }

  async #stop(rollout: RolloutRow, failures: number): Promise<void> {
    const now = this.#ctx.now();
    const message = `The rollout stopped: ${failures} agent update${failures === 1 ? '' : 's'} failed (max_failures ${rollout.maxFailures}); the agents not yet updated were skipped.`;
    const skipped = await skipPendingTargets(this.#ctx.db, rollout.id, { errorKey: 'rollout_stopped', errorMessage: message }, now);
    for (const t of skipped) await this.#audit(rollout, ROLLOUT_ACTIONS.skipped, 409, 'rollout_stopped', { id: t.instanceId });
    await this.#finish(rollout, 'stopped', failures, { errorKey: 'rollout_stopped', errorMessage: message });
  }

  async #finish(rollout: RolloutRow, status: Exclude<RolloutStatus, 'running'>, failures: number, why?: { errorKey: string; errorMessage: string }): Promise<void> {
    const now = this.#ctx.now();
    const reason =
      why ?? (status === 'failed' ? { errorKey: 'command_failed', errorMessage: `${failures} agent update${failures === 1 ? '' : 's'} failed (fewer than max_failures ${rollout.maxFailures}); every other agent was updated.` } : undefined);
    await updateRollout(this.#ctx.db, rollout.id, { status, errorKey: reason?.errorKey ?? null, errorMessage: reason?.errorMessage ?? null, finishedAt: now }, now);
    await this.#audit(rollout, ROLLOUT_ACTIONS[status], status === 'succeeded' ? 200 : status === 'stopped' ? 409 : 502, reason?.errorKey ?? null, { failures: String(failures) });
    for (const w of [...(this.#waiters.get(rollout.id) ?? [])]) w();
    this.#ctx.logger.info({ rollout_id: rollout.id, status, failures }, 'agent rollout finished');
  }

  async #audit(rollout: RolloutRow, action: string, status: number, errorKey: string | null, extra: Record<string, string> = {}): Promise<void> {
    await insertAudit(this.#ctx.db, {
      at: this.#ctx.now(),
      workspaceId: rollout.workspaceId,
      keyId: rollout.keyId,
      channel: 'agent',
      tool: null,
      action,
      method: null,
      route: null,
      targetIds: { rollout_id: rollout.id, version: rollout.version, ...extra },
      status,
      errorKey,
      requestId: null,
      clientAddress: null,
    }).catch((err: unknown) => this.#ctx.logger.error({ err, rollout_id: rollout.id, action }, 'agent rollout: audit row not written'));
  }
}

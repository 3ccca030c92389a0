/**
 * Fleet rollouts of the agent: `create` checks the request and the releases, stores the
 * rollout with its targets (batch by batch, in order) and drives it in the background.
 * Each target gets the signed agent.update of services/agent-update.ts; a batch ends when
 * every agent of it came back connected on the new version, rolled back, failed or timed
 * out. Failures reaching max_failures stop the rollout: the agents not yet sent an update
 * are skipped. Every state is stored before the next step, so `resume` continues a rollout
 * a restart interrupted: updates already sent are followed to their result (the agent
 * keeps it in its journal until the control plane acknowledges it), the rest are sent.
 *
 * Each running rollout is driven by one process, the holder of its lease (db/leases.ts):
 * the process that creates it, else the one that claimed it after its holder died,
 * stalled past the lease, or released it at a clean stop. Every write is fenced by the
 * lease, so a process that lost it stops before sending another update.
 *
 * Each write wakes the rollout's long-polls (`waitForChange`) here and, with several
 * processes on PostgreSQL, on the others through NOTIFY vmkit_rollout_events
 * (../change-events/cluster.ts), wherever the long-poll landed.
 */
import { agentPlatformSchema } from '@vmkit/protocol';
import type { AppContext } from '../../app.ts';
import { findRelease, releaseStoreOf } from '../../api/agent-releases.ts';
import { getAgentByInstance } from '../../db/agents.ts';
import {
  FAILED_TARGET_STATES,
  createRunningRollout,
  fencedFinishRollout,
  fencedTargetWrite,
  findUpdateCommandSince,
  getRolloutById,
  listRolloutTargets,
} from '../../db/agent-rollouts.ts';
import { LeaseLost } from '../../db/leases.ts';
import type { Claimed, Lease } from '../../db/leases.ts';
import { LeaseKeeper } from '../leases.ts';
import type { RolloutRow, RolloutStatus, RolloutTargetRow, TargetPatch, TargetState } from '../../db/agent-rollouts.ts';
import { insertAudit } from '../../db/audit.ts';
import { listInstancesWithAgents } from '../../db/instances.ts';
import { ApiError } from '../../errors.ts';
import { AGENT_UPDATE_FOLLOW_MS, followAgentUpdate, startAgentUpdate } from '../agent-update.ts';
import type { AgentUpdateOutcome } from '../agent-update.ts';
import { relayChanges } from '../change-events/cluster.ts';
import type { ClusterChangeEvents } from '../change-events/cluster.ts';
import { ChangeEvents } from '../change-events/events.ts';
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

/** The NOTIFY channel of rollout changes between processes. */
export const ROLLOUT_EVENTS_CHANNEL = 'vmkit_rollout_events';

export const ROLLOUT_ACTIONS = {
  started: 'agent.rollout.started',
  resumed: 'agent.rollout.resumed',
  succeeded: 'agent.rollout.succeeded',
  failed: 'agent.rollout.failed',
  stopped: 'agent.rollout.stopped',
  skipped: 'agent.update.skipped',
} as const;

/** One rollout as this process drives it: under `lease`, until `halt` (closing, or the lease lost). */
interface Drive {
  lease: Lease;
  halt: AbortSignal;
  /** Resolves once `halt` aborts (what an outcome wait races against). */
  halted: Promise<void>;
}

export function rolloutService(ctx: AppContext): AgentRolloutService {
  ctx.agentRollouts ??= new AgentRolloutService(ctx);
  return ctx.agentRollouts;
}

export class AgentRolloutService {
  /** The rollouts' changes, for their long-polls (keyed by rollout id). */
  readonly events = new ChangeEvents();
  /** Several processes on PostgreSQL: how changes reach the others' long-polls (undefined on SQLite). */
  readonly clusterEvents: ClusterChangeEvents | undefined;
  readonly #ctx: AppContext;
  readonly #agents: AgentWaiter;
  readonly #active = new Map<string, Promise<void>>();
  readonly #stops = new Map<string, AbortController>();
  readonly #closing = new AbortController();
  readonly #leases: LeaseKeeper;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    // The hub plugin (registered before the rollout routes) made the node; its LISTEN connection hears the others' changes.
    this.clusterEvents = relayChanges(ctx, ROLLOUT_EVENTS_CHANNEL, this.events);
    this.#agents = new AgentWaiter(ctx);
    this.#leases = new LeaseKeeper(ctx, 'agentRollouts', {
      adopt: (claimed) => this.#adopt(claimed),
      lost: (id) => {
        this.#ctx.logger.warn({ rollout_id: id, node_id: ctx.nodeId }, 'agent rollout: lease lost to another process; stopping here');
        this.#stops.get(id)?.abort(new LeaseLost('agentRollouts', id));
      },
    });
  }

  /** This process's leases on rollouts (tests renew and claim without waiting for the timer). */
  get leases(): LeaseKeeper {
    return this.#leases;
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
    // Agents connected here, or (several processes on PostgreSQL) to another live process: the update reaches them through the bus.
    const elsewhere = new Set((await this.#ctx.agentRouter?.heldElsewhereIds()) ?? []);
    const targets = planRollout(req, {
      instances: await listInstancesWithAgents(db, req.workspaceId),
      isConnected: (agentId) => hub?.isConnected(agentId) === true || elsewhere.has(agentId),
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
        lease: this.#leases.terms(),
      },
      this.#ctx.now(),
    );
    if (!created) {
      throw new ApiError('rollout_in_progress', `Agent rollout ${rollout.id} (to ${rollout.version}) is still running in this workspace; wait for it to end (GET /api/agents/updates/${rollout.id}).`, {
        rollout_id: rollout.id,
      });
    }
    const lease = { id: rollout.id, nodeId: this.#ctx.nodeId, generation: rollout.leaseGeneration };
    this.#leases.hold(lease);
    await this.#audit(rollout, ROLLOUT_ACTIONS.started, 202, null, { agents: String(targets.length) });
    this.#drive(lease);
    return rollout;
  }

  /**
   * At start-up: claims the rollouts no live process drives (left by a killed process, or
   * released at a clean stop) and goes on where each was; from then on claims, every lease
   * check, those whose holder stopped renewing. On SQLite (one process) every running
   * rollout is this process's at start.
   */
  async resume(): Promise<number> {
    const n = await this.#leases.start({ all: this.#ctx.db.dialect === 'sqlite' });
    if (n > 0) this.#ctx.logger.info({ count: n, node_id: this.#ctx.nodeId }, 'agent rollout: resumed rollouts a restart left running');
    return n;
  }

  async #adopt(claimed: Claimed): Promise<void> {
    if (this.#active.has(claimed.id) || this.#closing.signal.aborted) return;
    const row = await getRolloutById(this.#ctx.db, claimed.id);
    if (!row || row.status !== 'running') {
      this.#leases.drop(claimed.id);
      return;
    }
    const from: Record<string, string> = claimed.previousOwner !== null && claimed.previousOwner !== claimed.nodeId ? { from_node_id: claimed.previousOwner } : {};
    await this.#audit(row, ROLLOUT_ACTIONS.resumed, 202, null, { node_id: claimed.nodeId, ...from });
    this.#ctx.logger.info({ rollout_id: row.id, node_id: claimed.nodeId, ...from }, 'agent rollout: resumed a rollout no live process drove');
    this.#drive(claimed);
  }

  /** Stops driving (updates under way keep their state) and releases the leases, so another process goes on at once. */
  async close(): Promise<void> {
    await this.#leases.stop();
    this.#closing.abort(new Error('the control plane is closing'));
    await Promise.allSettled([...this.#active.values()]);
    await this.#leases.close();
    // The last writes' NOTIFYs go out before the pool closes (a failed one is only logged).
    await this.clusterEvents?.settled();
  }

  /** The rollout this process drives (tests and the bench wait on it). */
  active(id: string): Promise<void> | undefined {
    return this.#active.get(id);
  }

  /**
   * The rollout once it changed after `afterMs` (its updated_at), ended, or `waitMs`
   * passed: woken by the rollout's own changes (from whichever process drives it), never
   * by re-reading in a loop.
   */
  waitForChange(row: RolloutRow, afterMs: number, waitMs: number, signal?: AbortSignal): Promise<RolloutRow> {
    return this.events.waitFor(
      row,
      async (r) => (await getRolloutById(this.#ctx.db, r.id)) ?? r,
      (r) => r.updatedAt > afterMs || r.status !== 'running',
      waitMs,
      signal,
    );
  }

  #drive(lease: Lease): void {
    const id = lease.id;
    const stop = new AbortController();
    this.#stops.set(id, stop);
    const halt = AbortSignal.any([this.#closing.signal, stop.signal]);
    const halted = new Promise<void>((resolve) => (halt.aborted ? resolve() : halt.addEventListener('abort', () => resolve(), { once: true })));
    const run = this.#run({ lease, halt, halted })
      .catch((err: unknown) => {
        if (err instanceof LeaseLost) this.#ctx.logger.warn({ rollout_id: id, node_id: this.#ctx.nodeId }, 'agent rollout: another process holds the lease now; this one stops driving it');
        else if (!halt.aborted) this.#ctx.logger.error({ err, rollout_id: id }, 'agent rollout: the runner failed');
      })
      .finally(() => {
        this.#active.delete(id);
        this.#stops.delete(id);
        // Ended here: nothing to renew. Stopped by a close: kept until close() releases it.
        if (!this.#closing.signal.aborted) this.#leases.drop(id);
      });
    this.#active.set(id, run);
  }

  /** Batch after batch until every target has an outcome, or failures reach max_failures. */
  async #run(drive: Drive): Promise<void> {
    const { id } = drive.lease;
    for (;;) {
      if (drive.halt.aborted) return;
      const rollout = await getRolloutById(this.#ctx.db, id);
      if (!rollout || rollout.status !== 'running') return;
      if (rollout.leaseOwner !== drive.lease.nodeId || rollout.leaseGeneration !== drive.lease.generation) throw new LeaseLost('agentRollouts', id);
      const targets = await listRolloutTargets(this.#ctx.db, id);
      const failures = targets.filter((t) => FAILED_TARGET_STATES.includes(t.state as TargetState)).length;
      // Updates a restart interrupted are followed to their end before anything else is decided.
      const updating = targets.filter((t) => t.state === 'updating');
      if (updating.length > 0) {
        await allOrFirstLoss(updating.map((t) => this.#updateOne(drive, rollout, t)));
        continue;
      }
      const pending = targets.filter((t) => t.state === 'pending');
      if (pending.length === 0) return this.#finish(drive, rollout, failures > 0 ? 'failed' : 'succeeded', failures);
      if (failures >= rollout.maxFailures) return this.#stop(drive, rollout, failures);
      const batch = Math.min(...pending.map((t) => t.batch));
      await allOrFirstLoss(pending.filter((t) => t.batch === batch).map((t) => this.#updateOne(drive, rollout, t)));
    }
  }

  /** Sends (or, after a restart, follows) one target's update and stores how it ended. */
  async #updateOne(drive: Drive, rollout: RolloutRow, target: RolloutTargetRow): Promise<void> {
    const now = this.#ctx.now();
    let outcome: Promise<AgentUpdateOutcome> | undefined;
    if (target.state === 'updating') {
      const commandId = target.commandId ?? (await findUpdateCommandSince(this.#ctx.db, target.agentId, target.startedAt ?? rollout.createdAt))?.id;
      if (commandId !== undefined) {
        if (target.commandId === null) await this.#setTarget(drive, rollout, target, { commandId });
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
      await this.#setTarget(drive, rollout, target, { state: 'updating', startedAt: now });
      try {
        await this.#agents.waitConnected(target.instanceId, AbortSignal.any([drive.halt, AbortSignal.timeout(CONNECT_GRACE_MS)]));
      } catch {
        // Not connected within the grace: startAgentUpdate refuses it with agent_not_connected.
      }
      if (drive.halt.aborted) return;
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
        await this.#setTarget(drive, rollout, target, { commandId: started.commandId });
        outcome = started.outcome;
      } catch (err) {
        if (err instanceof LeaseLost) throw err;
        const e = err instanceof ApiError ? err : new ApiError('internal', (err as Error).message);
        await this.#audit(rollout, 'agent.update.failed', e.status, e.key, { id: target.instanceId });
        return this.#setTarget(drive, rollout, target, { state: 'failed', errorKey: e.key, errorMessage: e.message, finishedAt: this.#ctx.now() });
      }
    }
    const o = await Promise.race([outcome, drive.halted.then(() => ({ status: 'abandoned' }) as const)]);
    if (o.status === 'abandoned' || drive.halt.aborted) return;
    await this.#setTarget(drive, rollout, target, await this.#outcomePatch(rollout, target, o));
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

  /** Stores a target's change with the rollout's updated_at, fenced by the lease (LeaseLost once another process holds it). */
  async #setTarget(drive: Drive, rollout: RolloutRow, target: RolloutTargetRow, patch: TargetPatch): Promise<void> {
    await fencedTargetWrite(this.#ctx.db, drive.lease, target.id, patch, this.#ctx.now());
    Object.assign(target, patch);
    this.events.changed(rollout.id);
  }

  async #stop(drive: Drive, rollout: RolloutRow, failures: number): Promise<void> {
    const message = `The rollout stopped: ${failures} agent update${failures === 1 ? '' : 's'} failed (max_failures ${rollout.maxFailures}); the agents not yet updated were skipped.`;
    await this.#finish(drive, rollout, 'stopped', failures, { errorKey: 'rollout_stopped', errorMessage: message }, true);
  }

  async #finish(
    drive: Drive,
    rollout: RolloutRow,
    status: Exclude<RolloutStatus, 'running'>,
    failures: number,
    why?: { errorKey: string; errorMessage: string },
    skipPending = false,
  ): Promise<void> {
    const now = this.#ctx.now();
    const reason =
      why ??
      (status === 'failed'
        ? {
            errorKey: 'command_failed',
            errorMessage: `${failures} agent update${failures === 1 ? '' : 's'} failed (max_failures ${rollout.maxFailures}${failures < rollout.maxFailures ? ', not reached' : ', reached by the last batch: no agent was left to skip'}); every other agent was updated.`,
          }
        : undefined);
    const skipped = await fencedFinishRollout(
      this.#ctx.db,
      drive.lease,
      { status, errorKey: reason?.errorKey ?? null, errorMessage: reason?.errorMessage ?? null, finishedAt: now },
      now,
      skipPending && reason ? reason : undefined,
    );
    for (const t of skipped) await this.#audit(rollout, ROLLOUT_ACTIONS.skipped, 409, 'rollout_stopped', { id: t.instanceId });
    await this.#audit(rollout, ROLLOUT_ACTIONS[status], status === 'succeeded' ? 200 : status === 'stopped' ? 409 : 502, reason?.errorKey ?? null, { failures: String(failures) });
    this.events.changed(rollout.id);
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

/**
 * Waits for every update of a batch; a lost lease is thrown once all have settled (each
 * stops at its next write), so no update of this process outlives its driver.
 */
async function allOrFirstLoss(runs: Promise<void>[]): Promise<void> {
  const settled = await Promise.allSettled(runs);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

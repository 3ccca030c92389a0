/**
 * Start-up reconciliation of instances a killed control plane left waiting: a create
 * cut short is undone and failed, a created VM gets its agent deadline again, and an
 * instance whose agent connected while nobody flipped its status becomes `running`.
 */
import type { AppContext } from '../app.ts';
import { listInstancesInStatus, moveInstanceStatus } from '../db/instances.ts';
import type { InstanceWithAgent } from '../db/instances.ts';
import { MANUAL_PROVIDER, armAgentDeadline, computeProviderFor, failAndRemove, refOf } from './instances.ts';

export type RecoveryOutcome = 'running' | 'failed' | 'waiting_for_agent' | 'unchanged';

/** The instances to reconcile: read before the server listens, so no new request's instance is among them. */
export function instancesToRecover(ctx: AppContext): Promise<InstanceWithAgent[]> {
  return listInstancesInStatus(ctx.db, ['provisioning', 'awaiting_agent']);
}

/** Reconciles one instance; says what became of it. */
export async function recoverInstance(ctx: AppContext, { instance, agent }: InstanceWithAgent): Promise<RecoveryOutcome> {
  // Its agent connected before the crash: the flip to `running` was all that was lost.
  if (agent !== null && agent.connectedAt !== null && agent.state !== 'revoked') {
    const moved = await moveInstanceStatus(ctx.db, instance.id, ['provisioning', 'awaiting_agent'], { status: 'running', statusReason: null }, ctx.now());
    return moved ? 'running' : 'unchanged';
  }
  // A provider's instance still `awaiting_agent` with no VM: left by an earlier version killed
  // between registering it and marking it provisioning, before anything was created.
  if (instance.status === 'awaiting_agent' && instance.provider !== MANUAL_PROVIDER && instance.sshHost === null && refOf(instance) === undefined) {
    const reason = 'The control plane stopped before the VM was created; nothing was made.';
    const moved = await moveInstanceStatus(ctx.db, instance.id, ['awaiting_agent'], { status: 'failed', statusReason: reason }, ctx.now());
    return moved ? 'failed' : 'unchanged';
  }
  if (instance.status !== 'provisioning') return 'unchanged';
  if (instance.sshHost === null) {
    // create() never returned: whatever the provider made is half-made.
    const reason = 'The control plane stopped while the VM was being created.';
    return (await failAndRemove(ctx, instance.id, reason)) ? 'failed' : 'unchanged';
  }
  const ref = refOf(instance);
  let state: string;
  try {
    const provider = await computeProviderFor(ctx, instance.workspaceId, instance.provider);
    state = provider === undefined || ref === undefined ? 'missing' : await provider.status(ref);
  } catch (err) {
    state = `unknown (${(err as Error).message})`;
  }
  if (state === 'running') {
    // Created and up; the agent may still be enrolling or reconnecting after the restart.
    armAgentDeadline(ctx, instance.id);
    return 'waiting_for_agent';
  }
  const reason = `The VM was created but is ${state} after a control-plane restart, before its vmkit-agent ever connected.`;
  return (await failAndRemove(ctx, instance.id, reason)) ? 'failed' : 'unchanged';
}

/** Reconciles every instance in the list, one at a time; logs what happened. */
export async function recoverInstances(ctx: AppContext, rows: InstanceWithAgent[]): Promise<Record<RecoveryOutcome, number>> {
  const counts: Record<RecoveryOutcome, number> = { running: 0, failed: 0, waiting_for_agent: 0, unchanged: 0 };
  for (const row of rows) {
    try {
      const outcome = await recoverInstance(ctx, row);
      counts[outcome] += 1;
      if (outcome !== 'unchanged') ctx.logger.info({ instance_id: row.instance.id, outcome }, 'instances: recovered after a restart');
    } catch (err) {
      ctx.logger.error({ err, instance_id: row.instance.id }, 'instances: could not recover an instance after a restart');
    }
  }
  return counts;
}

/**
 * Instances backed by a compute provider: provision a VM whose agent enrolls itself
 * (status `provisioning` → `running` once the agent connects) and destroy it. A
 * manual instance goes `awaiting_agent` → `running` the same way. The provider
 * returns data; this service persists it. What a crash leaves is picked up at
 * start-up by instance-recovery.ts.
 */
import type { AppContext } from '../app.ts';
import { createEnrollmentToken, registerInstance } from '../db/enrollment.ts';
import { getInstance, getInstanceById, getInstanceWithAgent, markInstanceRunning, moveInstanceStatus, updateInstance } from '../db/instances.ts';
import type { InstanceRow } from '../db/instances.ts';
import { ApiError } from '../errors.ts';
import { localProviderFor } from '../providers/compute/local.ts';
import { agentDestination } from './agent-destination.ts';
import { ComputeError } from '../providers/compute/types.ts';
import type { ComputeProvider } from '../providers/compute/types.ts';
import { notifyInstance } from '../dashboard/live-feed.ts';

declare module '../app.ts' {
  interface AppContext {
    /** Compute providers by name; default: `local` sandboxes under <dataDir>/sandboxes. */
    computeProviders?: Record<string, ComputeProvider>;
    /** How long a new VM's agent has to connect before the instance is failed and its VM removed; default 15 min. */
    agentConnectTimeoutMs?: number;
  }
}

/** Instances registered by hand: no provider makes or removes their machine. */
export const MANUAL_PROVIDER = 'manual';
/**
 * What a manual instance's answer says while it waits, so leaving out `provider` (manual is
 * the default) never yields a silent, idle instance. Cleared once its agent connects.
 */
export const MANUAL_STATUS_REASON =
  'No VM was provisioned: provider "manual" (the default when provider is left out) registers a machine you set up yourself. ' +
  'Install vmkit-agent on it with a one-time token from POST /api/instances/{id}/enrollment-token; the instance turns running ' +
  'when its agent connects. For a VM made for you, create the instance with provider "local" or "hetzner".';

export function computeProviderOf(ctx: AppContext, name: string): ComputeProvider | undefined {
  if (ctx.computeProviders === undefined) {
    try {
      ctx.computeProviders = { local: localProviderFor(ctx.config.dataDir) };
    } catch (err) {
      throw new ApiError('sandbox_unavailable', `The local VM sandbox cannot run here: ${(err as Error).message}.`);
    }
  }
  return Object.hasOwn(ctx.computeProviders, name) ? ctx.computeProviders[name] : undefined;
}

/**
 * The provider named `name` for one workspace: the control plane's own (the sandbox, or
 * one a test installed), else the workspace's configured compute when it has that name
 * (its Hetzner project, say), so its VMs are made, checked and removed with its token.
 */
export async function computeProviderFor(ctx: AppContext, workspaceId: string, name: string): Promise<ComputeProvider | undefined> {
  if (ctx.computeProviders !== undefined && Object.hasOwn(ctx.computeProviders, name)) return ctx.computeProviders[name];
  if (name === 'local') return computeProviderOf(ctx, name);
  if (ctx.deployProviders === undefined) return undefined;
  const { compute } = await ctx.deployProviders(workspaceId);
  return compute?.name === name ? compute : undefined;
}

/**
 * How long a new VM's enrollment token lives: the hub's setting (default 60 min), cut to
 * what the provider allows when it keeps the bootstrap readable (Hetzner keeps user_data).
 */
export function enrollmentTtlMs(ctx: AppContext, provider: ComputeProvider): number {
  const ttl = ctx.agentHubConfig?.enrollmentTokenTtlMs ?? 60 * 60_000;
  return provider.enrollmentTokenTtlMs === undefined ? ttl : Math.min(ttl, provider.enrollmentTokenTtlMs);
}

export function apiErrorOf(err: unknown): unknown {
  return err instanceof ComputeError ? new ApiError(err.key, err.message) : err;
}

/** The provider's handle, as persisted in providerRef. */
export function refOf(row: InstanceRow): string | undefined {
  const ref = row.providerRef?.ref;
  return typeof ref === 'string' ? ref : undefined;
}

export interface ProvisionInput {
  workspaceId: string;
  name: string;
  environmentId: string | null;
  /** A provider name of ctx.computeProviders, or the provider itself (a workspace's, from deploy). */
  provider: string | ComputeProvider;
  /** What the VM is for (`{ environment, deploy }`), where the provider can attach it. */
  labels?: Record<string, string>;
  /**
   * Called once the instance row exists and before the provider is asked: a caller that
   * persists the id there never makes a second VM after a crash (it finds this one).
   */
  onRegistered?: (instanceId: string) => Promise<void>;
}

/**
 * Registers the instance, issues its enrollment token and has the provider create the
 * VM with the agent bootstrapped. Answers once the VM exists (sshd answers); the agent
 * connects shortly after and the instance becomes `running`.
 */
export async function provisionInstance(ctx: AppContext, input: ProvisionInput): Promise<InstanceRow> {
  const provider = typeof input.provider === 'string' ? await computeProviderFor(ctx, input.workspaceId, input.provider) : input.provider;
  if (provider === undefined) {
    throw new ApiError('compute_target_missing', `No compute provider named "${typeof input.provider === 'string' ? input.provider : input.provider.name}" is configured on this control plane.`);
  }
  // `provisioning` from the first write: a kill before the create leaves a row recovery undoes
  // (registered as `awaiting_agent` first, a kill in between left what looked like a manual
  // instance, and a resumed deploy waited on it for an agent that could never come).
  const row = await registerInstance(
    ctx.db,
    { workspaceId: input.workspaceId, name: input.name, environmentId: input.environmentId, provider: provider.name, status: 'provisioning' },
    ctx.now(),
  );
  await input.onRegistered?.(row.id);
  // A ref known up front is stored first, so DELETE can undo a create cut short by a crash.
  const early = provider.refFor?.(row.id);
  if (early !== undefined) await updateInstance(ctx.db, row.id, { providerRef: { ref: early } }, ctx.now());
  const ttlMs = enrollmentTtlMs(ctx, provider);
  const { token } = await createEnrollmentToken(ctx.db, { workspaceId: input.workspaceId, instanceId: row.id, ttlMs }, ctx.now());
  const keys = ctx.keyRing?.published() ?? [{ key_id: ctx.signingKey.keyId, public_key: ctx.signingKey.publicKey }];
  try {
    const vm = await provider.create({
      instance_id: row.id,
      name: input.name,
      ...(input.labels === undefined ? {} : { labels: input.labels }),
      bootstrap: {
        agent: { ...agentDestination(ctx.config, ctx.publicUrl), token, control_plane_keys: keys.map((k) => `${k.key_id}:${k.public_key}`) },
      },
    });
    // The root password is not kept: the agent, not SSH, is how the control plane gets in.
    await updateInstance(ctx.db, row.id, { sshHost: vm.address, sshPort: vm.ssh_port, providerRef: { ref: vm.ref } }, ctx.now());
  } catch (err) {
    await updateInstance(ctx.db, row.id, { status: 'failed', statusReason: `The compute provider failed to create the VM: ${(err as Error).message}` }, ctx.now());
    throw apiErrorOf(err);
  }
  await markRunningIfConnected(ctx, row.id);
  armAgentDeadline(ctx, row.id);
  const fresh = await getInstance(ctx.db, input.workspaceId, row.id);
  if (!fresh) throw new ApiError('internal');
  return fresh;
}

/** Statuses that mean "waiting for the agent": its first connection makes the instance `running`. */
const WAITING_FOR_AGENT = ['provisioning', 'awaiting_agent'] as const;

/** `provisioning` or `awaiting_agent` → `running` once the instance's agent is connected. */
export async function markRunningIfConnected(ctx: AppContext, instanceId: string): Promise<void> {
  // An agent that connects later moves its instance itself (the hub store's connect write).
  const row = await getInstanceById(ctx.db, instanceId);
  if (row === undefined || !(WAITING_FOR_AGENT as readonly string[]).includes(row.status)) return;
  const withAgent = await getInstanceWithAgent(ctx.db, row.workspaceId, instanceId);
  if (withAgent?.agent?.state !== 'connected') return;
  await markInstanceRunning(ctx.db, instanceId, ctx.now());
}

const deadlines = new WeakMap<AppContext, Set<NodeJS.Timeout>>();

/**
 * A provisioned VM whose agent never connects would stay `provisioning` forever: after
 * ctx.agentConnectTimeoutMs it is marked `failed` and its VM removed.
 */
export function armAgentDeadline(ctx: AppContext, instanceId: string, ms = ctx.agentConnectTimeoutMs ?? 15 * 60_000): void {
  let timers = deadlines.get(ctx);
  if (!timers) deadlines.set(ctx, (timers = new Set()));
  const all = timers;
  const timer = setTimeout(() => {
    all.delete(timer);
    const reason = `Its vmkit-agent did not connect within ${Math.round(ms / 1000)} s of the VM being created.`;
    failAndRemove(ctx, instanceId, reason).catch((err: unknown) =>
      ctx.logger.error({ err, instanceId }, 'instances: could not fail an instance whose agent never connected'),
    );
  }, ms);
  timer.unref();
  all.add(timer);
}

/** Stops the deadlines of this control plane (on close). */
export function clearAgentDeadlines(ctx: AppContext): void {
  for (const t of deadlines.get(ctx) ?? []) clearTimeout(t);
  deadlines.delete(ctx);
}

/**
 * `provisioning` → `failed` with the reason, then has the provider remove whatever it
 * made (its destroy is idempotent and copes with half-made VMs). Does nothing when the
 * instance left `provisioning` meanwhile (its agent connected, someone deleted it).
 */
export async function failAndRemove(ctx: AppContext, instanceId: string, reason: string): Promise<boolean> {
  const row = await getInstanceById(ctx.db, instanceId);
  if (!row) return false;
  // Failed first, so an agent connecting meanwhile cannot flip it to running; the reason then says how the removal went.
  const claimed = await moveInstanceStatus(ctx.db, instanceId, ['provisioning'], { status: 'failed', statusReason: `${reason} Removing what the provider made.` }, ctx.now());
  if (!claimed) return false;
  notifyInstance(ctx, row.workspaceId, instanceId);
  const ref = refOf(row);
  if (ref === undefined) {
    await updateInstance(ctx.db, instanceId, { statusReason: `${reason} The provider gave no handle for it, so anything it made must be removed by hand.` }, ctx.now());
    return true;
  }
  try {
    const provider = await computeProviderFor(ctx, row.workspaceId, row.provider);
    if (provider === undefined) throw new Error(`no compute provider named "${row.provider}" is configured`);
    await provider.destroy(ref);
    await updateInstance(ctx.db, instanceId, { statusReason: `${reason} What the provider had made was removed.`, sshHost: null, sshPort: null }, ctx.now());
  } catch (err) {
    const why = `${reason} Removing the VM failed (${(err as Error).message}); DELETE the instance to try again.`;
    await updateInstance(ctx.db, instanceId, { statusReason: why }, ctx.now());
  }
  return true;
}


/**
 * Destroys the instance's VM through its provider (a manual instance has none) and
 * marks it `destroyed`. Destroying twice is fine.
 */
export async function destroyInstance(ctx: AppContext, workspaceId: string, id: string): Promise<InstanceRow> {
  const row = await getInstance(ctx.db, workspaceId, id);
  if (!row) throw new ApiError('instance_not_found', `No instance with id ${id} found in this workspace.`);
  const ref = refOf(row);
  if (row.provider !== MANUAL_PROVIDER && ref !== undefined) {
    const provider = await computeProviderFor(ctx, workspaceId, row.provider);
    if (provider === undefined) {
      throw new ApiError('compute_target_missing', `No compute provider named "${row.provider}" is configured on this control plane.`);
    }
    try {
      await provider.destroy(ref);
    } catch (err) {
      throw apiErrorOf(err);
    }
  }
  await updateInstance(ctx.db, row.id, { status: 'destroyed', statusReason: null, sshHost: null, sshPort: null }, ctx.now());
  const fresh = await getInstance(ctx.db, workspaceId, id);
  if (!fresh) throw new ApiError('internal');
  return fresh;
}

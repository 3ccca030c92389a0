/**
 * What the dashboard is told as it happens, per workspace: instances (agent connected
 * or gone, status moved) and harden runs (each step, then the answer). In-process: a
 * second control plane behind a load balancer would feed it from the command bus.
 */
import type { AppContext } from '../app.ts';
import { getInstanceWithAgent } from '../db/instances.ts';
import { instanceView } from '../api/views.ts';
import type { HardenRun } from '../services/harden/runs.ts';

export type InstanceEventBody = ReturnType<typeof instanceView>;

export type LiveEvent =
  | { type: 'instance'; instance: InstanceEventBody }
  | {
      type: 'harden';
      instance_id: string;
      command_id: string;
      state: string;
      progress: { seq: number; step: string; state: string; message?: string }[];
      result: Record<string, unknown> | null;
      error: Record<string, unknown> | null;
    };

type Subscriber = (event: LiveEvent) => void;

declare module '../app.ts' {
  interface AppContext {
    /** The dashboard's live feed (set by liveRoutes). */
    live?: LiveFeed;
  }
}

export class LiveFeed {
  readonly #subs = new Map<string, Set<Subscriber>>();
  readonly #ctx: AppContext;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
  }

  subscribe(workspaceId: string, fn: Subscriber): () => void {
    let set = this.#subs.get(workspaceId);
    if (!set) this.#subs.set(workspaceId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.#subs.delete(workspaceId);
    };
  }

  publish(workspaceId: string, event: LiveEvent): void {
    for (const fn of this.#subs.get(workspaceId) ?? []) fn(event);
  }

  /** Reads the instance now and tells its workspace; the agent state is the hub's own knowledge. */
  async instanceChanged(workspaceId: string, instanceId: string): Promise<void> {
    if (!this.#subs.has(workspaceId)) return;
    const row = await getInstanceWithAgent(this.#ctx.db, workspaceId, instanceId);
    if (!row) return;
    const view = instanceView(row.instance, row.agent);
    if (view.agent && view.agent.state !== 'revoked' && this.#ctx.hub) {
      view.agent.state = this.#ctx.hub.isConnected(view.agent.id) ? 'connected' : 'disconnected';
    }
    this.publish(workspaceId, { type: 'instance', instance: view });
  }

  hardenChanged(run: HardenRun): void {
    this.publish(run.workspaceId, {
      type: 'harden',
      instance_id: run.instanceId,
      command_id: run.commandId,
      state: run.state,
      progress: run.progress.map((p) => ({ seq: p.seq, step: p.step, state: p.state, ...(p.message === undefined ? {} : { message: p.message }) })),
      result: run.answer ?? null,
      error: run.error ?? null,
    });
  }
}

/** The feed of this control plane, made on first use. */
export function liveFeedOf(ctx: AppContext): LiveFeed {
  return (ctx.live ??= new LiveFeed(ctx));
}

/** Tells the dashboards of a workspace that an instance changed; never fails the caller. */
export function notifyInstance(ctx: AppContext, workspaceId: string, instanceId: string): void {
  ctx.live?.instanceChanged(workspaceId, instanceId).catch((err: unknown) => ctx.logger.warn({ err, instanceId }, 'live feed: could not read the instance'));
}

import type { AppContext } from '../../app.ts';
import { getAgentByInstance } from '../../db/agents.ts';
import { getInstanceById } from '../../db/instances.ts';
import { ApiError } from '../../errors.ts';
import { agentOnline } from '../../hub/plugin.ts';

/** A VM that failed meanwhile (its agent deadline passed, someone deleted it) is noticed this often. */
const RECHECK_MS = 15_000;

/**
 * Waits for an instance's agent to be connected to this control plane: woken by the
 * hub's agentConnected event, so no loop reads the database while nothing happens.
 */
export class AgentWaiter {
  readonly #ctx: AppContext;
  readonly #waiters = new Map<string, Set<() => void>>();

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    ctx.hub?.addListener({ agentConnected: (agent) => this.#wake(agent.instanceId) });
  }

  #wake(instanceId: string): void {
    for (const w of [...(this.#waiters.get(instanceId) ?? [])]) w();
  }

  async #connected(instanceId: string): Promise<boolean> {
    const agent = await getAgentByInstance(this.#ctx.db, instanceId);
    return agent !== undefined && agent.state !== 'revoked' && (await agentOnline(this.#ctx, agent.id));
  }

  /** Resolves once connected; rejects when the instance failed or `signal` aborts. */
  async waitConnected(instanceId: string, signal: AbortSignal): Promise<void> {
    for (;;) {
      let wake: () => void = () => undefined;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      // Listen before looking, so a connection in between is not missed.
      let set = this.#waiters.get(instanceId);
      if (!set) this.#waiters.set(instanceId, (set = new Set()));
      set.add(wake);
      const timer = setTimeout(wake, RECHECK_MS);
      const onAbort = (): void => wake();
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        if (signal.aborted) throw signal.reason as Error;
        if (await this.#connected(instanceId)) return;
        const inst = await getInstanceById(this.#ctx.db, instanceId);
        if (!inst || inst.status === 'failed' || inst.status === 'destroyed') {
          throw new ApiError('provision_failed', `Instance ${instanceId} is ${inst?.status ?? 'gone'}${inst?.statusReason ? `: ${inst.statusReason}` : ''}; deploy again to provision a new VM.`);
        }
        await woken;
        if (signal.aborted) throw signal.reason as Error;
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        set.delete(wake);
        if (set.size === 0) this.#waiters.delete(instanceId);
      }
    }
  }
}

import type { AgentHub, HubListener, HubLogger } from './agent-hub.ts';
import type { CommandBus } from './command-bus.ts';
import type { RotatableKeyRing } from './signing-keys.ts';
import type { AgentIdentity, AgentStateStore } from './store.ts';

export interface RotationReport {
  /** Agents that confirmed the change (a succeeded `keys.rotate`). */
  updated: number;
  /** Agents that were connected but did not confirm (they are retried at their next connect). */
  failed: number;
}

/**
 * Control-plane key rotation in two steps, so no agent is ever left unable to verify:
 *  1. `addKey()` creates a `next` key and sends `keys.rotate {add}` to connected
 *     agents, signed by the active key they already pin;
 *  2. `promote()` makes the next key active (commands are signed by it from then on)
 *     and retires the old one with `keys.rotate {retire}`.
 * Agents offline during a step catch up when they connect: the hub knows which keys
 * each agent confirmed, and signs the catch-up with a key the agent pins (a retired
 * key's private half is kept for exactly this).
 */
export class KeyRotation implements HubListener {
  readonly #ring: RotatableKeyRing;
  readonly #bus: CommandBus;
  readonly #hub: AgentHub;
  readonly #store: AgentStateStore;
  readonly #log: HubLogger | undefined;
  readonly #elsewhere: (() => Promise<string[]>) | undefined;

  /**
   * `heldElsewhere`: with several processes on one database, the agents other live
   * processes hold; a rotation made here reaches them through the command bus too, or
   * they would be left pinning keys this process stops signing with.
   */
  constructor(opts: {
    ring: RotatableKeyRing;
    bus: CommandBus;
    hub: AgentHub;
    store: AgentStateStore;
    logger?: HubLogger;
    heldElsewhere?: () => Promise<string[]>;
  }) {
    this.#ring = opts.ring;
    this.#bus = opts.bus;
    this.#hub = opts.hub;
    this.#store = opts.store;
    this.#log = opts.logger;
    this.#elsewhere = opts.heldElsewhere;
  }

  async addKey(): Promise<{ key_id: string } & RotationReport> {
    const pair = await this.#ring.addNext();
    return { key_id: pair.keyId, ...(await this.#catchUpConnected()) };
  }

  async promote(): Promise<{ active: string; retired: string } & RotationReport> {
    const change = await this.#ring.promoteNext();
    return { ...change, ...(await this.#catchUpConnected()) };
  }

  agentConnected(agent: AgentIdentity): void {
    void this.catchUp(agent);
  }

  /** Brings one agent's pinned keys in line with the ring; true when nothing was left to do or it succeeded. */
  async catchUp(agent: AgentIdentity): Promise<boolean> {
    const pinned = new Set(agent.pinnedKeyIds);
    const add = this.#ring.published().filter((k) => !pinned.has(k.key_id));
    const retire = this.#ring.retiredIds().filter((id) => pinned.has(id));
    if (add.length === 0 && retire.length === 0) return true;
    const activeId = this.#ring.active().keyId;
    const signer = pinned.has(activeId) ? activeId : [...pinned].find((id) => this.#ring.get(id) !== undefined);
    if (signer === undefined) {
      this.#log?.warn({ agentId: agent.id }, 'keys: agent pins no key this control plane holds; it must be enrolled again');
      return false;
    }
    try {
      await this.#bus.send(agent.id, 'keys.rotate', { add, retire }, { signWith: signer, requireConnected: true, timeoutMs: 30_000 });
      const next = [...pinned, ...add.map((k) => k.key_id)].filter((id) => !retire.includes(id));
      await this.#store.setPinnedKeys(agent.id, next);
      return true;
    } catch (err) {
      this.#log?.warn({ err, agentId: agent.id }, 'keys: keys.rotate was not confirmed');
      return false;
    }
  }

  async #catchUpConnected(): Promise<RotationReport> {
    const report: RotationReport = { updated: 0, failed: 0 };
    const ids = [...new Set([...this.#hub.connectedAgentIds(), ...((await this.#elsewhere?.()) ?? [])])];
    // Bounded concurrency: a rotation must not flood thousands of agents at once.
    for (let i = 0; i < ids.length; i += 100) {
      const batch = await Promise.all(
        ids.slice(i, i + 100).map(async (id) => {
          const agent = await this.#store.findAgent(id);
          return agent ? this.catchUp(agent) : false;
        }),
      );
      for (const ok of batch) if (ok) report.updated++;
      else report.failed++;
    }
    return report;
  }
}

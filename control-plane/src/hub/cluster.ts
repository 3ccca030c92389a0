/**
 * This process as one node of several on one PostgreSQL database: its row in
 * `control_planes` (registered at start, heartbeat, removed on a clean shutdown), the
 * agents of dead nodes marked disconnected (and whatever else other parts registered
 * with `onDeadNodes`, such as their shell sessions), and the LISTEN connection through which
 * other nodes route commands and replies to it (../db/pg-command-router.ts), which also
 * hears the shared channels other parts `subscribe` to (deploys' and rollouts' wake-ups).
 */
import { disconnectAgentsOfDeadNodes, deregisterNode, forgetDeadNodes, heartbeatNode, reclaimAgents, registerNode } from '../db/control-planes.ts';
import type { PostgresDb } from '../db/index.ts';
import { PgCommandRouter, PgNotifyListener } from '../db/pg-command-router.ts';
import type { ChannelSubscriber } from '../db/pg-command-router.ts';
import type { NotifyStats } from '../metrics/database.ts';
import type { AgentHub, HubLogger } from './agent-hub.ts';
import type { InProcessCommandBus } from './command-bus.ts';

export interface ClusterNodeOptions {
  db: PostgresDb;
  nodeId: string;
  /** Where this node serves (read at each heartbeat: known only once the server listens). */
  url: () => string;
  heartbeatMs: number;
  staleAfterMs: number;
  logger: HubLogger;
  now?: () => number;
}

export class ClusterNode {
  readonly router: PgCommandRouter;
  readonly #o: ClusterNodeOptions;
  readonly #now: () => number;
  #listener: PgNotifyListener | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastBeat = 0;
  #beating: Promise<void> | undefined;
  readonly #deadNodeSweeps: ((liveSince: number) => Promise<unknown>)[] = [];
  readonly #subscriptions = new Map<string, ChannelSubscriber>();

  constructor(opts: ClusterNodeOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.router = new PgCommandRouter({ db: opts.db, nodeId: opts.nodeId, staleAfterMs: opts.staleAfterMs, now: this.#now });
  }

  /** A node silent this long is dead. */
  get staleAfterMs(): number {
    return this.#o.staleAfterMs;
  }

  /**
   * Runs `sweep` at each heartbeat, after the agents of dead nodes were marked
   * disconnected and before their rows go: the other records of nodes silent since
   * `liveSince` are cleaned up by whichever live node gets there first (the sweep must
   * be safe to run on several nodes at once).
   */
  onDeadNodes(sweep: (liveSince: number) => Promise<unknown>): void {
    this.#deadNodeSweeps.push(sweep);
  }

  /**
   * Hears `channel` on the node's LISTEN connection (from start, or at once when started),
   * and `subscriber.resync()` after that connection was lost and is back.
   */
  subscribe(channel: string, subscriber: ChannelSubscriber): void {
    if (this.#listener) this.#listener.subscribe(channel, subscriber);
    else this.#subscriptions.set(channel, subscriber);
  }

  notifyStats(): NotifyStats {
    return this.#listener?.stats() ?? { listening: false, reconnects: 0, received: 0 };
  }

  /** Registers the node and LISTENs; call after the hub started (its agents of a previous run are marked disconnected). */
  async start(hub: AgentHub, bus: InProcessCommandBus): Promise<void> {
    const { db, nodeId } = this.#o;
    const now = this.#now();
    await registerNode(db, { nodeId, url: this.#o.url(), now });
    this.#lastBeat = now;
    this.#listener = new PgNotifyListener({
      db,
      nodeId,
      handler: bus,
      onResync: () => bus.resync(hub.connectedAgentIds()),
      logger: this.#o.logger,
    });
    for (const [channel, subscriber] of this.#subscriptions) this.#listener.subscribe(channel, subscriber);
    this.#subscriptions.clear();
    await this.#listener.start();
    this.#timer = setInterval(() => {
      this.#beating ??= this.#beat(hub).finally(() => (this.#beating = undefined));
    }, this.#o.heartbeatMs);
    this.#timer.unref();
  }

  /** Writes the node's URL now (once the server listens: before, a port 0 is not known yet). */
  async announce(): Promise<void> {
    try {
      await heartbeatNode(this.#o.db, { nodeId: this.#o.nodeId, url: this.#o.url(), now: this.#now() });
    } catch (err) {
      this.#o.logger.warn({ err }, 'cluster: writing this node\'s URL failed; the next heartbeat writes it');
    }
  }

  /** Stops the heartbeat and LISTEN, and removes the node's row (after the hub let its agents go). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#beating;
    await this.#listener?.close();
    await deregisterNode(this.#o.db, this.#o.nodeId).catch((err: unknown) => this.#o.logger.warn({ err }, 'cluster: deregistering this node failed'));
  }

  async #beat(hub: AgentHub): Promise<void> {
    const { db, nodeId, staleAfterMs } = this.#o;
    const now = this.#now();
    try {
      const known = await heartbeatNode(db, { nodeId, url: this.#o.url(), now });
      // Silent long enough for others to take this node for dead: they may have marked its agents disconnected.
      if (!known || now - this.#lastBeat > staleAfterMs) {
        const n = await reclaimAgents(db, nodeId, hub.connectedAgentIds(), now);
        this.#o.logger.warn({ agents: n }, 'cluster: this node was silent past the stale bound; its agents are recorded as held here again');
      }
      this.#lastBeat = now;
      await disconnectAgentsOfDeadNodes(db, now - staleAfterMs);
      for (const sweep of this.#deadNodeSweeps) {
        await sweep(now - staleAfterMs).catch((err: unknown) => this.#o.logger.error({ err }, 'cluster: cleaning up after dead nodes failed'));
      }
      await forgetDeadNodes(db, now - staleAfterMs);
    } catch (err) {
      this.#o.logger.error({ err }, 'cluster: the node heartbeat failed');
    }
  }
}

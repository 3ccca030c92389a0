/**
 * Several control-plane processes on one PostgreSQL database: a deploy's changes wake
 * long-polls on every process, not only on the one driving it (it holds the deploy's
 * lease; a load balancer may send the long-poll anywhere).
 *
 * After each write the driver NOTIFYs `vmkit_deploy_events` with the deploy's id (and a
 * tag of the process, so it skips its own); every process LISTENs on it over the
 * cluster node's LISTEN connection (../../hub/cluster.ts) and wakes its waiters, which
 * re-read the row. The NOTIFY is sent after the write committed and off the step's path:
 * a failed one is logged, and those waiters answer at their wait_ms as before. A burst
 * of changes to one deploy is coalesced: while its NOTIFY is under way, further changes
 * make one more after it, never a queue. After the LISTEN connection was lost and is
 * back, every waiter of the process wakes once (whatever was sent meanwhile is gone).
 *
 * Payload (JSON, well under the limit): {"d":<deploy id>,"o":<sending process's tag>}.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { HubLogger } from '../../hub/agent-hub.ts';
import type { ClusterNode } from '../../hub/cluster.ts';
import type { DeployEvents } from './events.ts';

export const DEPLOY_EVENTS_CHANNEL = 'vmkit_deploy_events';

export function encodeDeployEvent(deployId: string, origin: string): string {
  return JSON.stringify({ d: deployId, o: origin });
}

export function parseDeployEvent(payload: string): { deployId: string; origin: string } | undefined {
  let v: unknown;
  try {
    v = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const { d, o } = v as Record<string, unknown>;
  return typeof d === 'string' && typeof o === 'string' ? { deployId: d, origin: o } : undefined;
}

export interface ClusterDeployEventsOptions {
  pool: pg.Pool;
  events: DeployEvents;
  logger: HubLogger;
}

/** Sends this process's deploy changes to the others and hands theirs to `events`. */
export class ClusterDeployEvents {
  /** This process's tag: a fresh one per start, so a restarted node never skips a live one's. */
  readonly origin = randomBytes(6).toString('hex');
  readonly #o: ClusterDeployEventsOptions;
  /** Deploys with a NOTIFY under way; true when another change came meanwhile. */
  readonly #sending = new Map<string, boolean>();
  readonly #inFlight = new Set<Promise<void>>();
  #sent = 0;
  #failed = 0;

  constructor(opts: ClusterDeployEventsOptions) {
    this.#o = opts;
  }

  /** Wires `events` both ways through the node's LISTEN connection. */
  static attach(node: Pick<ClusterNode, 'subscribe'>, opts: ClusterDeployEventsOptions): ClusterDeployEvents {
    const relay = new ClusterDeployEvents(opts);
    opts.events.relayTo((id) => relay.publish(id));
    node.subscribe(DEPLOY_EVENTS_CHANNEL, {
      notified: (payload) => relay.heard(payload),
      resync: () => opts.events.wakeAll(),
    });
    return relay;
  }

  /** NOTIFYs sent and failed since start. */
  stats(): { sent: number; failed: number } {
    return { sent: this.#sent, failed: this.#failed };
  }

  /** The deploy changed here (its write committed): tell the other processes, without making the caller wait. */
  publish(deployId: string): void {
    if (this.#sending.has(deployId)) {
      this.#sending.set(deployId, true);
      return;
    }
    this.#sending.set(deployId, false);
    const sending = this.#send(deployId).finally(() => this.#inFlight.delete(sending));
    this.#inFlight.add(sending);
  }

  /** Resolves once every NOTIFY under way (and the one more each may owe) was sent or failed. */
  async settled(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }

  heard(payload: string): void {
    const n = parseDeployEvent(payload);
    if (!n) {
      this.#o.logger.warn({ payload: payload.slice(0, 200) }, 'deploy: a notification that is not ours, ignored');
      return;
    }
    // This process's own waiters were woken when it wrote.
    if (n.origin !== this.origin) this.#o.events.heard(n.deployId);
  }

  async #send(deployId: string): Promise<void> {
    for (;;) {
      try {
        await this.#o.pool.query({ name: 'deploy_events_notify', text: 'SELECT pg_notify($1, $2)', values: [DEPLOY_EVENTS_CHANNEL, encodeDeployEvent(deployId, this.origin)] });
        this.#sent++;
      } catch (err) {
        this.#failed++;
        this.#o.logger.warn({ err, deploy_id: deployId }, 'deploy: telling the other processes of a change failed; their long-polls answer at wait_ms');
      }
      // A change written while this NOTIFY was under way may be newer than what it woke them to: one more.
      if (this.#sending.get(deployId) !== true) break;
      this.#sending.set(deployId, false);
    }
    this.#sending.delete(deployId);
  }
}

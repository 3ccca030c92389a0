/**
 * Several control-plane processes on one PostgreSQL database: a row's changes wake
 * long-polls on every process, not only on the one driving it (it holds the row's lease;
 * a load balancer may send the long-poll anywhere). One relay per kind of row, each on a
 * channel of its own (`vmkit_deploy_events`, `vmkit_rollout_events`).
 *
 * After each write the driver NOTIFYs the channel with the row's id (and a tag of the
 * process, so it skips its own); every process LISTENs on it over the cluster node's
 * LISTEN connection (../../hub/cluster.ts) and wakes its waiters, which re-read the row.
 * The NOTIFY is sent after the write committed and off the driver's path: a failed one
 * is logged, and those waiters answer at their wait_ms as before. A burst of changes to
 * one row is coalesced: while its NOTIFY is under way, further changes make one more
 * after it, never a queue. After the LISTEN connection was lost and is back, every
 * waiter of the process wakes once (whatever was sent meanwhile is gone).
 *
 * Payload (JSON, well under the limit): {"d":<row id>,"o":<sending process's tag>}
 * (`d` for the deploys it was first made for; kept so processes of two versions agree).
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { AppContext } from '../../app.ts';
import { notifyPayloadObject } from '../../db/pg-command-router.ts';
import type { HubLogger } from '../../hub/agent-hub.ts';
import type { ClusterNode } from '../../hub/cluster.ts';
import type { ChangeEventStats } from '../../metrics/database.ts';
import type { ChangeEvents } from './events.ts';

declare module '../../app.ts' {
  interface AppContext {
    /** The change-event relays of this process by channel (several processes on PostgreSQL); read by /metrics. */
    changeRelays?: Map<string, ClusterChangeEvents>;
  }
}

export function encodeChangeEvent(id: string, origin: string): string {
  return JSON.stringify({ d: id, o: origin });
}

export function parseChangeEvent(payload: string): { id: string; origin: string } | undefined {
  const { d, o } = notifyPayloadObject(payload) ?? {};
  return typeof d === 'string' && typeof o === 'string' ? { id: d, origin: o } : undefined;
}

export interface ClusterChangeEventsOptions {
  /** The NOTIFY channel of this kind of row. */
  channel: string;
  pool: pg.Pool;
  events: ChangeEvents;
  logger: HubLogger;
}

/** Sends this process's changes on one channel to the others and hands theirs to `events`. */
export class ClusterChangeEvents {
  /** This process's tag: a fresh one per start, so a restarted node never skips a live one's. */
  readonly origin = randomBytes(6).toString('hex');
  readonly channel: string;
  readonly #o: ClusterChangeEventsOptions;
  /** Rows with a NOTIFY under way; true when another change came meanwhile. */
  readonly #sending = new Map<string, boolean>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #n = { sent: 0, failed: 0, coalesced: 0, received: 0, resyncs: 0 };

  constructor(opts: ClusterChangeEventsOptions) {
    this.#o = opts;
    this.channel = opts.channel;
  }

  /** Wires `events` both ways through the node's LISTEN connection. */
  static attach(node: Pick<ClusterNode, 'subscribe'>, opts: ClusterChangeEventsOptions): ClusterChangeEvents {
    const relay = new ClusterChangeEvents(opts);
    opts.events.relayTo((id) => relay.publish(id));
    node.subscribe(opts.channel, {
      notified: (payload) => relay.heard(payload),
      resync: () => relay.resync(),
    });
    return relay;
  }

  /** NOTIFYs sent and failed since start. */
  stats(): { sent: number; failed: number } {
    return { sent: this.#n.sent, failed: this.#n.failed };
  }

  /** Every count since start, for /metrics. */
  counters(): ChangeEventStats {
    return { channel: this.channel, ...this.#n };
  }

  /** The row changed here (its write committed): tell the other processes, without making the caller wait. */
  publish(id: string): void {
    if (this.#sending.has(id)) {
      this.#n.coalesced++;
      this.#sending.set(id, true);
      return;
    }
    this.#sending.set(id, false);
    const sending = this.#send(id).finally(() => this.#inFlight.delete(sending));
    this.#inFlight.add(sending);
  }

  /** Resolves once every NOTIFY under way (and the one more each may owe) was sent or failed. */
  async settled(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }

  heard(payload: string): void {
    const n = parseChangeEvent(payload);
    if (!n) {
      this.#o.logger.warn({ channel: this.channel, payload: payload.slice(0, 200) }, 'change events: a notification that is not ours, ignored');
      return;
    }
    // This process's own waiters were woken when it wrote.
    if (n.origin === this.origin) return;
    this.#n.received++;
    this.#o.events.heard(n.id);
  }

  /** The LISTEN connection listens (again): what was sent while it did not is gone, so every waiter re-reads. */
  resync(): void {
    this.#n.resyncs++;
    this.#o.events.wakeAll();
  }

  async #send(id: string): Promise<void> {
    for (;;) {
      try {
        await this.#o.pool.query({ name: 'change_events_notify', text: 'SELECT pg_notify($1, $2)', values: [this.channel, encodeChangeEvent(id, this.origin)] });
        this.#n.sent++;
      } catch (err) {
        this.#n.failed++;
        this.#o.logger.warn({ err, channel: this.channel, id }, 'change events: telling the other processes of a change failed; their long-polls answer at wait_ms');
      }
      // A change written while this NOTIFY was under way may be newer than what it woke them to: one more.
      if (this.#sending.get(id) !== true) break;
      this.#sending.set(id, false);
    }
    this.#sending.delete(id);
  }
}

/**
 * `events`' relay on `channel` when this process is one of several on PostgreSQL (the
 * hub plugin, registered before the routes, made ctx.clusterNode), else undefined: on
 * SQLite there is one process and its own waiters are all there are.
 */
export function relayChanges(ctx: AppContext, channel: string, events: ChangeEvents): ClusterChangeEvents | undefined {
  if (!ctx.clusterNode || ctx.db.dialect !== 'postgres') return undefined;
  const relay = ClusterChangeEvents.attach(ctx.clusterNode, { channel, pool: ctx.db.pool, events, logger: ctx.logger });
  (ctx.changeRelays ??= new Map()).set(channel, relay);
  return relay;
}

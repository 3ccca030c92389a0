/**
 * Several control-plane processes on one PostgreSQL database: the command bus's routes
 * between them over LISTEN/NOTIFY (hub/command-bus.ts `CommandRouter`).
 *
 * Each node LISTENs on a channel of its own (`channelOf(nodeId)`) on a dedicated
 * connection, not one of the pool's. Payloads carry ids only (a progress frame at
 * most, cut to fit): commands and results stay in their tables, so a lost
 * notification costs a re-read, never data. LISTEN/NOTIFY keeps nothing for a listener
 * that was away: when the connection is lost, the listener says so (stats, /readyz),
 * LISTENs again with backoff, and then `onResync` re-reads what it may have missed.
 * Other parts LISTEN on shared channels over the same connection (`subscribe`, e.g. the
 * deploys' and rollouts' wake-ups, ../services/change-events/cluster.ts), and are told to resync too.
 *
 * Payloads (JSON):
 *   {"k":"c","id":<command>}               to the holder: a command for an agent it holds was stored
 *   {"k":"r","id":<command>}               to the caller's node: the command's result was stored
 *   {"k":"p","id":<command>,"p":<progress>} to the caller's node: a progress frame
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { CommandProgress, CommandRouter } from '../hub/command-bus.ts';
import type { HubLogger } from '../hub/agent-hub.ts';
import type { NotifyStats } from '../metrics/database.ts';
import type { PostgresDb } from './index.ts';

/** NOTIFY refuses payloads of 8,000 bytes or more; ours stay well under. */
export const MAX_NOTIFY_PAYLOAD_BYTES = 7_900;

/** A node's channel: a fixed-length identifier whatever the node id holds (PostgreSQL cuts names at 63 bytes). */
export function channelOf(nodeId: string): string {
  return `vmkit_bus_${createHash('sha256').update(nodeId).digest('hex').slice(0, 32)}`;
}

/** The application_name of a node's LISTEN connection (operators find it in pg_stat_activity). */
export function listenerApplicationName(nodeId: string): string {
  return `vmkit-listen ${nodeId}`.slice(0, 63);
}

export type BusNotification =
  | { k: 'c'; id: string }
  | { k: 'r'; id: string }
  | { k: 'p'; id: string; p: CommandProgress };

/** What a node does with what it hears (the command bus's routed side). */
export interface BusNotificationHandler {
  deliverStored(commandId: string): Promise<void>;
  resultStored(commandId: string): Promise<void>;
  progressRelayed(commandId: string, progress: CommandProgress): void;
}

/** A progress frame as a payload under the limit: the detail, then the message, give way first. */
export function encodeProgressPayload(commandId: string, progress: CommandProgress): string {
  let body = JSON.stringify({ k: 'p', id: commandId, p: progress });
  if (Buffer.byteLength(body) <= MAX_NOTIFY_PAYLOAD_BYTES) return body;
  const { detail: _detail, ...rest } = progress;
  body = JSON.stringify({ k: 'p', id: commandId, p: rest });
  if (Buffer.byteLength(body) <= MAX_NOTIFY_PAYLOAD_BYTES) return body;
  const { message: _message, ...bare } = rest;
  return JSON.stringify({ k: 'p', id: commandId, p: bare });
}

/** A NOTIFY payload as a JSON object, or undefined when it is not one (a payload is never trusted to parse). */
export function notifyPayloadObject(payload: string): Record<string, unknown> | undefined {
  let v: unknown;
  try {
    v = JSON.parse(payload);
  } catch {
    return undefined;
  }
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

export function parseNotification(payload: string): BusNotification | undefined {
  const n = notifyPayloadObject(payload);
  if (n === undefined || typeof n.id !== 'string') return undefined;
  if (n.k === 'c' || n.k === 'r') return { k: n.k, id: n.id };
  if (n.k === 'p' && typeof n.p === 'object' && n.p !== null) return { k: 'p', id: n.id, p: n.p as CommandProgress };
  return undefined;
}

export interface PgCommandRouterOptions {
  db: PostgresDb;
  nodeId: string;
  /** A node whose heartbeat is older than this is dead: its agents are connected nowhere. */
  staleAfterMs: number;
  now?: () => number;
}

/** The routes: which node holds an agent, which node awaits a command, and the NOTIFY to each. */
export class PgCommandRouter implements CommandRouter {
  readonly #pool: pg.Pool;
  readonly #nodeId: string;
  readonly #staleAfterMs: number;
  readonly #now: () => number;

  constructor(opts: PgCommandRouterOptions) {
    this.#pool = opts.db.pool;
    this.#nodeId = opts.nodeId;
    this.#staleAfterMs = opts.staleAfterMs;
    this.#now = opts.now ?? Date.now;
  }

  /** The live node other than this one that holds the agent, if any. */
  async holderOf(agentId: string): Promise<string | undefined> {
    const { rows } = await this.#pool.query<{ node_id: string }>({
      name: 'bus_holder_of',
      text: `SELECT a.node_id FROM agents AS a JOIN control_planes AS cp ON cp.node_id = a.node_id
             WHERE a.id = $1 AND a.state = 'connected' AND cp.heartbeat_at >= $2`,
      values: [agentId, this.#now() - this.#staleAfterMs],
    });
    const node = rows[0]?.node_id;
    return node === undefined || node === this.#nodeId ? undefined : node;
  }

  /** Every agent a live node other than this one holds (key rotation reaches them through the bus). */
  async heldElsewhereIds(): Promise<string[]> {
    const { rows } = await this.#pool.query<{ id: string }>({
      name: 'bus_held_elsewhere',
      text: `SELECT a.id FROM agents AS a JOIN control_planes AS cp ON cp.node_id = a.node_id
             WHERE a.state = 'connected' AND a.node_id <> $1 AND cp.heartbeat_at >= $2 ORDER BY a.id`,
      values: [this.#nodeId, this.#now() - this.#staleAfterMs],
    });
    return rows.map((r) => r.id);
  }

  async heldElsewhere(agentId: string): Promise<boolean> {
    return (await this.holderOf(agentId)) !== undefined;
  }

  async forward(agentId: string, commandId: string): Promise<void> {
    const holder = await this.holderOf(agentId);
    if (holder !== undefined) await this.notify(holder, { k: 'c', id: commandId });
  }

  async replied(commandId: string, progress?: CommandProgress): Promise<void> {
    const { rows } = await this.#pool.query<{ node_id: string | null }>({
      name: 'bus_sender_of',
      text: 'SELECT node_id FROM commands WHERE id = $1',
      values: [commandId],
    });
    const sender = rows[0]?.node_id;
    if (sender === undefined || sender === null || sender === this.#nodeId) return;
    await this.#notifyRaw(sender, progress === undefined ? JSON.stringify({ k: 'r', id: commandId }) : encodeProgressPayload(commandId, progress));
  }

  async claim(commandId: string): Promise<void> {
    await this.#pool.query({ name: 'bus_claim', text: 'UPDATE commands SET node_id = $1 WHERE id = $2', values: [this.#nodeId, commandId] });
  }

  async notify(nodeId: string, n: BusNotification): Promise<void> {
    await this.#notifyRaw(nodeId, n.k === 'p' ? encodeProgressPayload(n.id, n.p) : JSON.stringify(n));
  }

  async #notifyRaw(nodeId: string, payload: string): Promise<void> {
    await this.#pool.query({ name: 'bus_notify', text: 'SELECT pg_notify($1, $2)', values: [channelOf(nodeId), payload] });
  }
}

/** A channel other than the bus's own, heard on the same LISTEN connection. */
export interface ChannelSubscriber {
  notified(payload: string): void;
  /** Each time the connection LISTENs (again): whatever was sent while it did not is gone. */
  resync(): void;
}

export interface PgNotifyListenerOptions {
  db: PostgresDb;
  nodeId: string;
  handler: BusNotificationHandler;
  /** After a lost connection is back and LISTENing again: re-read what may have been missed. */
  onResync: () => Promise<void>;
  logger: HubLogger;
  /** First retry after a lost connection; doubles up to maxBackoffMs. Defaults 100 ms, 5 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * The node's LISTEN connection: one dedicated client, made again (with backoff) when
 * it is lost; `stats()` feeds /readyz and /metrics.
 */
export class PgNotifyListener {
  readonly #o: PgNotifyListenerOptions;
  readonly #channel: string;
  #client: pg.Client | undefined;
  #listening = false;
  #reconnects = 0;
  #received = 0;
  #failures = 0;
  #closed = false;
  #everListened = false;
  #timer: NodeJS.Timeout | undefined;
  #firstListen: (() => void) | undefined;
  readonly #subscribers = new Map<string, ChannelSubscriber>();

  constructor(opts: PgNotifyListenerOptions) {
    this.#o = opts;
    this.#channel = channelOf(opts.nodeId);
  }

  /**
   * Hears `channel` too (one subscriber per channel): LISTENed with the node's own at each
   * (re)connect, at once when already listening. A LISTEN that fails now is made again at
   * the next reconnect, after which the subscriber is told to resync.
   */
  subscribe(channel: string, subscriber: ChannelSubscriber): void {
    if (channel === this.#channel || this.#subscribers.has(channel)) throw new Error(`the channel ${channel} is already heard`);
    this.#subscribers.set(channel, subscriber);
    const client = this.#client;
    if (!this.#listening || !client) return;
    client.query(`LISTEN ${client.escapeIdentifier(channel)}`).catch((err: unknown) => {
      this.#o.logger.warn({ err, channel }, 'bus: could not LISTEN on a further channel; retrying with a new connection');
      client.end().catch(() => undefined);
    });
  }

  stats(): NotifyStats {
    return { listening: this.#listening, reconnects: this.#reconnects, received: this.#received };
  }

  /** Connects and LISTENs; resolves once listening or once the first attempt failed (it keeps trying). */
  start(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#firstListen = resolve;
      void this.#connect();
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#listening = false;
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const opts = this.#o.db.pool.options;
    const client = new pg.Client({
      ...(opts.connectionString !== undefined && { connectionString: opts.connectionString }),
      application_name: listenerApplicationName(this.#o.nodeId),
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
    });
    this.#client = client;
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost || this.#client !== client) return;
      lost = true;
      this.#listening = false;
      this.#client = undefined;
      if (this.#closed) return;
      this.#o.logger.warn({ err }, 'bus: the LISTEN connection to PostgreSQL was lost; listening again');
      this.#retry();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', (msg) => {
      if (msg.channel === this.#channel) {
        this.#received++;
        this.#dispatch(msg.payload ?? '');
        return;
      }
      const sub = this.#subscribers.get(msg.channel);
      if (!sub) return;
      this.#received++;
      try {
        sub.notified(msg.payload ?? '');
      } catch (err) {
        this.#o.logger.error({ err, channel: msg.channel }, 'bus: handling a notification failed');
      }
    });
    try {
      await client.connect();
      // Channels subscribed while an earlier LISTEN was under way are LISTENed here too.
      const listened = new Set<string>();
      const pending = () => [this.#channel, ...this.#subscribers.keys()].filter((c) => !listened.has(c));
      for (let next = pending(); next.length > 0; next = pending()) {
        for (const channel of next) {
          await client.query(`LISTEN ${client.escapeIdentifier(channel)}`);
          listened.add(channel);
        }
      }
    } catch (err) {
      this.#o.logger.warn({ err }, 'bus: could not LISTEN on PostgreSQL; retrying');
      client.end().catch(() => undefined);
      onLost(err as Error);
      this.#firstListen?.();
      this.#firstListen = undefined;
      return;
    }
    if (this.#closed || this.#client !== client) return;
    this.#listening = true;
    this.#failures = 0;
    this.#firstListen?.();
    this.#firstListen = undefined;
    // Every (re)connect, also a first one that came late: what was sent before it is gone (cheap when nothing waits).
    for (const [channel, sub] of this.#subscribers) {
      try {
        sub.resync();
      } catch (err) {
        this.#o.logger.error({ err, channel }, 'bus: resyncing a channel after a lost LISTEN connection failed');
      }
    }
    if (this.#everListened) {
      this.#reconnects++;
      this.#o.logger.info({ reconnects: this.#reconnects }, 'bus: listening again; re-reading what may have been missed');
      await this.#o.onResync().catch((err: unknown) => this.#o.logger.error({ err }, 'bus: re-reading after a lost LISTEN connection failed'));
    }
    this.#everListened = true;
  }

  #retry(): void {
    const min = this.#o.minBackoffMs ?? 100;
    const max = this.#o.maxBackoffMs ?? 5_000;
    const delay = Math.min(max, min * 2 ** this.#failures) * (0.5 + Math.random() / 2);
    this.#failures++;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#connect(), delay);
    this.#timer.unref();
  }

  #dispatch(payload: string): void {
    const n = parseNotification(payload);
    if (!n) {
      this.#o.logger.warn({ payload: payload.slice(0, 200) }, 'bus: a notification that is not ours, ignored');
      return;
    }
    const h = this.#o.handler;
    const done = (err: unknown) => this.#o.logger.error({ err, commandId: n.id, kind: n.k }, 'bus: handling a notification failed');
    if (n.k === 'c') void h.deliverStored(n.id).catch(done);
    else if (n.k === 'r') void h.resultStored(n.id).catch(done);
    else {
      try {
        h.progressRelayed(n.id, n.p);
      } catch (err) {
        done(err);
      }
    }
  }
}

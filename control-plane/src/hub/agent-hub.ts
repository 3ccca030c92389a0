import type { KeyObject } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import type { RawData } from 'ws';
import {
  AGENT_FEATURES_HEADER,
  MAX_FRAME_BYTES,
  MAX_HEARTBEAT_ACKS,
  PROTOCOL_VERSION,
  decodePublicKey,
  encodeMessage,
  newChallengeNonce,
  parseAgentFeatures,
  parseAgentMessage,
  verifyHello,
} from '@vmkit/protocol';
import type { AgentFeature, AgentMessage, ErrorKey, MessageOf, ServerMessage } from '@vmkit/protocol';
import { ChannelRouter } from './channels.ts';
import { PerAddressLimiter } from './pre-auth.ts';
import type { SigningKeyRing } from './signing-keys.ts';
import type { AgentIdentity, AgentStateStore } from './store.ts';
import { TokenBucket } from './token-bucket.ts';
import { registerUpgradeRoute } from './upgrade.ts';

export const AGENT_CONNECT_PATH = '/agent/v1/connect';

/**
 * Close codes the hub uses, with the reason text it sends. An agent should back off
 * (and honour `retry_after_ms` from the preceding `error`) on every one of them.
 */
export const HUB_CLOSE = {
  /** Control plane shutting down. */
  shutdown: 1001,
  /** Too many malformed/unknown frames, or a non-hello frame before the handshake. */
  policy: 1008,
  /** Storage failed during the handshake. */
  internal: 1011,
  /** Handshakes per second exceeded: see `retry_after_ms`. */
  overloaded: 1013,
  /** A newer connection of the same agent took over. */
  replaced: 4000,
  /** Unknown or revoked agent, wrong nonce, or a signature that does not verify. */
  unauthorized: 4001,
  /** No `hello` within the handshake timeout. */
  handshakeTimeout: 4008,
} as const;

/** Minimal logger shape: pino and Fastify's logger fit it. */
export interface HubLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const silentLogger: HubLogger = { debug() {}, info() {}, warn() {}, error() {} };

export type CommandReply = MessageOf<'ack'> | MessageOf<'progress'> | MessageOf<'result'>;

/** Who hears about agents: the command bus (delivery, results) and key rotation. */
export interface HubListener {
  agentConnected?(agent: AgentIdentity): void;
  agentDisconnected?(agentId: string): void;
  agentMessage?(agentId: string, message: CommandReply): void;
}

/** How the command bus reaches agents held by this process. */
export interface AgentLink {
  isConnected(agentId: string): boolean;
  /** Whether the agent's connection here named the feature (`x-vmkit-agent-features`); absent: no features. */
  supports?(agentId: string, feature: AgentFeature): boolean;
  /**
   * Sends a frame to a connected agent; false when it is not connected here, or its
   * connection is not welcomed yet (listeners hear `agentConnected` once it is).
   */
  deliver(agentId: string, message: ServerMessage): boolean;
  /**
   * Tells a connected agent its result is stored, so its journal may let the result go:
   * a `result_ack` frame, or (agent feature `heartbeat-acks`) on the hub's next heartbeat
   * to it. False when the agent is not connected here (it re-sends the result later).
   */
  acknowledgeResult(agentId: string, commandId: string): boolean;
}

export interface HubOptions {
  store: AgentStateStore;
  keys: SigningKeyRing;
  logger?: HubLogger;
  /** How often the hub pings and agents send `heartbeat` (told in `welcome`). Default 15 s. */
  heartbeatIntervalMs?: number;
  /** An agent silent this long is marked `disconnected` and its socket dropped. Default 3 intervals. */
  deadAfterMs?: number;
  /** Time allowed between `challenge` and `hello`. Default 10 s. */
  handshakeTimeoutMs?: number;
  /**
   * Verified handshakes completed per second (token bucket); an agent whose hello
   * verified over this bound is answered `overloaded` with its retry slot. Only agents
   * that proved their identity take tokens or slots. Default 200.
   */
  handshakesPerSecond?: number;
  handshakeBurst?: number;
  /**
   * A verified agent over the handshake bound that understands `queued` (upgrade header
   * `x-vmkit-agent-features`) is held in line on its connection, first come first served,
   * when its turn comes within this long, and is told so; later than that, or without the
   * header, it is refused `overloaded` with a retry slot behind the line. Any verified
   * agent whose turn is within `handshakeSilentHoldMs` is held without a word. Default
   * 60 s, at most 600 s; 0 turns the line off.
   */
  handshakeQueueMs?: number;
  /**
   * How long a verified agent may be held in line without being told (`queued`): keep it
   * well under the shortest handshake timeout an agent may have. Default 1 s.
   */
  handshakeSilentHoldMs?: number;
  /** Upgrade attempts per second per client address before the hello (pre-auth stage); more get HTTP 429. Default 20. */
  preAuthPerAddressPerSecond?: number;
  /** Default twice the per-address rate. */
  preAuthPerAddressBurst?: number;
  /** Unauthenticated connections (challenge sent, no verified hello yet) held at once; more get HTTP 503. Default 5,000. */
  maxPendingHandshakes?: number;
  /** The client address of an upgrade request (honours --trust-proxy); default the socket's peer address. */
  clientAddress?: (req: IncomingMessage) => string;
  /** last_seen is written in one batch this often. Default 5 s. */
  lastSeenFlushMs?: number;
  /** Malformed/unknown frames tolerated on an open connection before it is closed. Default 5. */
  maxInvalidFrames?: number;
}

type Phase = 'handshake' | 'verifying' | 'queued' | 'open' | 'closed';

/** Shortest interval between two welcomes from the line (see #scheduleLine). */
const LINE_TICK_MS = 20;

class Connection {
  phase: Phase = 'handshake';
  agentId: string | undefined;
  /** Optional messages the agent said (upgrade header) it understands. */
  features: ReadonlySet<AgentFeature> = new Set();
  /** While `queued`: what the welcome needs. */
  held: { agent: AgentIdentity; hello: MessageOf<'hello'> } | undefined;
  invalidFrames = 0;
  lastSeen: number;
  /** When the agent last sent a frame of its own (a heartbeat or any message; not a pong). */
  lastFrameAt = 0;
  handshakeTimer: NodeJS.Timeout | undefined;
  /** Stored results not yet acknowledged to a `heartbeat-acks` agent, and since when. */
  pendingAcks: string[] | undefined;
  pendingAcksSince = 0;
  /**
   * Whether the welcome is out. A connection is `open` (it holds the agent) while its
   * connected state is written, before the welcome: no command may reach the agent until
   * then, since an agent that gets anything else first closes the connection.
   */
  welcomed = false;
  readonly ws: WebSocket;
  readonly nonce: string;
  readonly remote: string;
  constructor(
    ws: WebSocket,
    nonce: string,
    now: number,
    remote: string,
  ) {
    this.ws = ws;
    this.nonce = nonce;
    this.remote = remote;
    this.lastSeen = now;
  }
}

/**
 * Why a connection was refused before it became an agent's live connection: the
 * `reason` label of the handshake-refusal metric. Pre-auth (before a WebSocket):
 * rate_limited, too_many_pending, shutting_down. Handshake: handshake_timeout, protocol
 * (not a well-formed hello), bad_nonce, unknown_agent, revoked, bad_signature,
 * overloaded (verified, over the handshake bound), internal (storage failed).
 */
export const HANDSHAKE_REFUSALS = [
  'rate_limited',
  'too_many_pending',
  'shutting_down',
  'handshake_timeout',
  'protocol',
  'bad_nonce',
  'unknown_agent',
  'revoked',
  'bad_signature',
  'overloaded',
  'internal',
] as const;
export type HandshakeRefusal = (typeof HANDSHAKE_REFUSALS)[number];

/** The refusal a handshake error key stands for, when no finer reason was given. */
function refusalOf(key: ErrorKey): HandshakeRefusal {
  if (key === 'handshake_timeout' || key === 'overloaded' || key === 'internal') return key;
  if (key === 'shutting_down') return 'shutting_down';
  return 'protocol';
}

export interface HubStats {
  connected: number;
  handshaking: number;
  /** Verified agents held in line for a handshake token (see `handshakeQueueMs`). */
  queued: number;
  handshakesCompleted: number;
  /** Verified hellos that were held in line instead of refused (each counted once). */
  handshakesQueued: number;
  refusedOverloaded: number;
  /** Upgrades refused by the per-address pre-auth budget or the pending-handshake cap. */
  refusedPreAuth: number;
  refusedUnauthorized: number;
  invalidFrames: number;
  deadDropped: number;
  /** WebSocket pings sent, and pings left out because the agent had sent a frame within the interval. */
  pingsSent: number;
  pingsSkipped: number;
  /** Shell channels open on agent connections. */
  channelsOpen: number;
  /** Binary frames dropped: undecodable, or for an unknown or another agent's channel (detail: `channels.stats()`). */
  channelFramesDropped: number;
  /** Connections refused before they became an agent's live connection, by reason. */
  refusals: Record<HandshakeRefusal, number>;
}

/**
 * The agent WebSocket hub: challenge–response handshake, one live connection per
 * agent, heartbeats, connection state in storage, and frame routing to listeners.
 */
export class AgentHub implements AgentLink {
  readonly heartbeatIntervalMs: number;
  readonly deadAfterMs: number;
  readonly #handshakeTimeoutMs: number;
  readonly #lastSeenFlushMs: number;
  readonly #maxInvalidFrames: number;
  readonly #handshakesPerSecond: number;
  readonly #store: AgentStateStore;
  readonly #keys: SigningKeyRing;
  readonly #log: HubLogger;
  readonly #bucket: TokenBucket;
  readonly #preAuth: PerAddressLimiter;
  readonly #maxPending: number;
  readonly #clientAddress: (req: IncomingMessage) => string;
  readonly #wss: WebSocketServer;
  readonly #open = new Map<string, Connection>();
  readonly #handshaking = new Set<Connection>();
  /** Verified agents waiting for a handshake token, oldest first; closed ones are skipped. */
  #line: (Connection | undefined)[] = [];
  #lineHead = 0;
  /** Live (not closed) connections in the line, by agent: one place per agent. */
  readonly #lined = new Map<string, Connection>();
  #lineTimer: NodeJS.Timeout | undefined;
  readonly #handshakeQueueMs: number;
  readonly #silentHoldMs: number;
  readonly #dirtySeen = new Map<string, number>();
  readonly #stateChains = new Map<string, Promise<boolean>>();
  readonly #listeners: HubListener[] = [];
  readonly #keyCache = new Map<string, KeyObject>();
  readonly #timers: NodeJS.Timeout[] = [];
  /** Shell channels multiplexed on the agents' connections (binary frames). */
  readonly channels = new ChannelRouter();
  #closing = false;
  #started = false;
  readonly #refusals = Object.fromEntries(HANDSHAKE_REFUSALS.map((r) => [r, 0])) as Record<HandshakeRefusal, number>;
  #stats: Omit<HubStats, 'connected' | 'handshaking' | 'queued' | 'channelsOpen' | 'channelFramesDropped' | 'refusals'> = {
    handshakesCompleted: 0,
    handshakesQueued: 0,
    refusedOverloaded: 0,
    refusedPreAuth: 0,
    refusedUnauthorized: 0,
    invalidFrames: 0,
    deadDropped: 0,
    pingsSent: 0,
    pingsSkipped: 0,
  };

  constructor(opts: HubOptions) {
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 15_000;
    this.deadAfterMs = opts.deadAfterMs ?? this.heartbeatIntervalMs * 3;
    this.#handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
    this.#lastSeenFlushMs = opts.lastSeenFlushMs ?? 5_000;
    this.#maxInvalidFrames = opts.maxInvalidFrames ?? 5;
    this.#store = opts.store;
    this.#keys = opts.keys;
    this.#log = opts.logger ?? silentLogger;
    const perSecond = opts.handshakesPerSecond ?? 200;
    this.#handshakesPerSecond = perSecond;
    this.#bucket = new TokenBucket({ perSecond, burst: opts.handshakeBurst ?? perSecond });
    this.#handshakeQueueMs = Math.min(600_000, Math.max(0, opts.handshakeQueueMs ?? 60_000));
    this.#silentHoldMs = Math.max(0, opts.handshakeSilentHoldMs ?? 1_000);
    const perAddress = opts.preAuthPerAddressPerSecond ?? 20;
    this.#preAuth = new PerAddressLimiter({ perSecond: perAddress, burst: opts.preAuthPerAddressBurst ?? perAddress * 2 });
    this.#maxPending = opts.maxPendingHandshakes ?? 5_000;
    this.#clientAddress = opts.clientAddress ?? ((req) => req.socket.remoteAddress ?? 'unknown');
    // clientTracking off: the hub keeps its own maps of connections; ws's Set of every client is not needed.
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
  }

  addListener(listener: HubListener): void {
    this.#listeners.push(listener);
  }

  /** Marks leftovers of a previous run disconnected and starts the heartbeat timers. */
  async start(): Promise<void> {
    await this.#store.markAllDisconnected(Date.now());
    this.#started = true;
    const tick = Math.max(50, Math.min(this.heartbeatIntervalMs, Math.ceil(this.deadAfterMs / 4)));
    this.#timers.push(
      setInterval(() => this.#pingAll(), this.heartbeatIntervalMs),
      setInterval(() => this.#dropSilent(), tick),
      setInterval(() => void this.flushLastSeen(), this.#lastSeenFlushMs),
      setInterval(() => this.#preAuthTick(), 10_000),
    );
    for (const t of this.#timers) t.unref();
  }

  /** Serves the hub at /agent/v1/connect on this HTTP server; other upgrade paths get 404. */
  attach(server: Server): void {
    registerUpgradeRoute(server, AGENT_CONNECT_PATH, (req, socket, head) => this.handleUpgrade(req, socket, head));
  }

  /** Started and not closing: agents that dial now are taken (what /readyz asks of the hub). */
  get accepting(): boolean {
    return this.#started && !this.#closing;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.#closing) {
      this.#refusals.shutting_down++;
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    // Pre-auth stage: refused here before a WebSocket, a nonce or a timer exists, and
    // without touching the handshake bucket or the retry slots of verified agents.
    const address = this.#clientAddress(req);
    if (this.#handshaking.size >= this.#maxPending) {
      this.#refusals.too_many_pending++;
      this.#refuseUpgrade(socket, 503, 1_000, address, 'too many unauthenticated connections are open');
      return;
    }
    const verdict = this.#preAuth.take(address);
    if (!verdict.ok) {
      this.#refusals.rate_limited++;
      this.#refuseUpgrade(socket, 429, verdict.retryAfterMs, address, 'too many connection attempts from this address');
      return;
    }
    // The 101 response and the challenge leave in one write: ws writes the response and
    // calls back synchronously, and #accept sends the challenge before the socket is uncorked.
    socket.cork();
    try {
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, address, parseAgentFeatures(req.headers[AGENT_FEATURES_HEADER])));
    } finally {
      socket.uncork();
    }
  }

  isConnected(agentId: string): boolean {
    return this.#open.get(agentId)?.phase === 'open';
  }

  supports(agentId: string, feature: AgentFeature): boolean {
    return this.#open.get(agentId)?.features.has(feature) ?? false;
  }

  connectedAgentIds(): string[] {
    return [...this.#open.keys()];
  }

  deliver(agentId: string, message: ServerMessage): boolean {
    const conn = this.#open.get(agentId);
    if (!conn || conn.phase !== 'open' || !conn.welcomed || conn.ws.readyState !== WebSocket.OPEN) return false;
    conn.ws.send(encodeMessage(message));
    return true;
  }

  acknowledgeResult(agentId: string, commandId: string): boolean {
    const conn = this.#open.get(agentId);
    if (!conn || conn.phase !== 'open' || conn.ws.readyState !== WebSocket.OPEN) return false;
    if (!conn.features.has('heartbeat-acks')) {
      conn.ws.send(encodeMessage({ protocol: PROTOCOL_VERSION, type: 'result_ack', command_id: commandId }));
      return true;
    }
    if (conn.pendingAcks === undefined) {
      conn.pendingAcks = [];
      conn.pendingAcksSince = Date.now();
    }
    conn.pendingAcks.push(commandId);
    if (conn.pendingAcks.length >= MAX_HEARTBEAT_ACKS) this.#heartbeat(conn);
    return true;
  }

  /** Sends a binary (shell channel) frame to a connected agent; false when it is not connected here. */
  deliverBinary(agentId: string, frame: Buffer): boolean {
    const conn = this.#open.get(agentId);
    if (!conn || conn.phase !== 'open' || conn.ws.readyState !== WebSocket.OPEN) return false;
    conn.ws.send(frame, { binary: true });
    return true;
  }

  /** Closes an agent's live connection and its place in line, e.g. because its key was replaced or revoked. */
  drop(agentId: string, message: string): void {
    const lined = this.#lined.get(agentId);
    if (lined) this.#refuse(lined, 'unauthorized', message, HUB_CLOSE.unauthorized, undefined, 'revoked');
    const conn = this.#open.get(agentId);
    if (conn) this.#refuse(conn, 'unauthorized', message, HUB_CLOSE.unauthorized);
  }

  stats(): HubStats {
    const ch = this.channels.stats();
    return {
      connected: this.#open.size,
      handshaking: this.#handshaking.size,
      queued: this.#lined.size,
      ...this.#stats,
      channelsOpen: ch.open,
      channelFramesDropped: ch.droppedInvalid + ch.droppedUnknown + ch.droppedForeign,
      refusals: { ...this.#refusals },
    };
  }

  /** Writes the batched last_seen values now (also runs on a timer). */
  async flushLastSeen(): Promise<void> {
    if (this.#dirtySeen.size === 0) return;
    const batch = new Map(this.#dirtySeen);
    this.#dirtySeen.clear();
    try {
      await this.#store.touchLastSeen(batch);
    } catch (err) {
      this.#log.error({ err }, 'hub: writing last_seen failed');
    }
  }

  /** Closes every agent connection and marks every agent disconnected. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#lineTimer);
    const lined = [...this.#lined.values()];
    this.#lined.clear();
    this.#line = [];
    this.#lineHead = 0;
    const sockets = [...this.#handshaking, ...lined, ...this.#open.values()].map((c) => c.ws);
    for (const c of this.#handshaking) c.ws.terminate();
    // Spread the reconnects over the time the next process needs to take them all at the
    // handshake bound, so a restart does not turn into a herd at the first second. Agents
    // held in line are verified agents too: they are told the same.
    const spreadMs = Math.min(60_000, ((this.#open.size + lined.length) / this.#handshakesPerSecond) * 1000);
    for (const c of [...lined, ...this.#open.values()]) {
      // Results stored and not yet acknowledged: said now, so the agent need not re-send them.
      if (c.pendingAcks !== undefined) this.#heartbeat(c);
      const retryAfter = Math.round(1_000 + Math.random() * spreadMs);
      this.#sendRaw(c.ws, {
        protocol: PROTOCOL_VERSION,
        type: 'error',
        key: 'shutting_down',
        message: `the control plane is restarting; reconnect in ${retryAfter} ms`,
        retry_after_ms: retryAfter,
      });
      c.ws.close(HUB_CLOSE.shutdown, 'control plane shutting down');
    }
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === WebSocket.CLOSED) return resolve();
            const timer = setTimeout(() => {
              ws.terminate();
              resolve();
            }, 1_000);
            ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
    // The database may be what is failing: what cannot be written now, the next start or
    // another node's sweep corrects (dead nodes' agents are disconnected); the close goes on.
    try {
      await this.flushLastSeen();
      await Promise.allSettled(this.#stateChains.values());
      await this.#store.markAllDisconnected(Date.now());
    } catch (err) {
      this.#log.warn({ err }, 'hub: could not record the agents as disconnected while closing; the next start does');
    }
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }

  #preAuthReported = 0;

  /** Forgets refilled addresses, and says once per tick (not once per request) that a flood is being refused. */
  #preAuthTick(): void {
    this.#preAuth.prune();
    const refused = this.#stats.refusedPreAuth - this.#preAuthReported;
    this.#preAuthReported = this.#stats.refusedPreAuth;
    if (refused > 0) this.#log.warn({ refused, addressesTracked: this.#preAuth.size }, 'hub: unauthenticated upgrades refused by the pre-auth budget');
  }

  #refuseUpgrade(socket: Duplex, status: 429 | 503, retryAfterMs: number, address: string, why: string): void {
    this.#stats.refusedPreAuth++;
    this.#log.debug({ remote: address, status, retryAfterMs }, `hub: upgrade refused: ${why}`);
    const body = JSON.stringify({ error: 'rate_limited', message: `${why}; retry in ${retryAfterMs} ms` });
    const reason = status === 429 ? 'Too Many Requests' : 'Service Unavailable';
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nRetry-After: ${Math.ceil(retryAfterMs / 1000)}\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }

  #accept(ws: WebSocket, remote: string, features: ReadonlySet<AgentFeature>): void {
    ws.on('error', (err) => this.#log.debug({ err, remote }, 'hub: socket error'));
    if (this.#closing) {
      this.#refusals.shutting_down++;
      ws.close(HUB_CLOSE.shutdown, 'control plane shutting down');
      return;
    }
    const conn = new Connection(ws, newChallengeNonce(), Date.now(), remote);
    conn.features = features;
    this.#handshaking.add(conn);
    conn.handshakeTimer = setTimeout(
      () => this.#refuse(conn, 'handshake_timeout', `no hello within ${this.#handshakeTimeoutMs} ms`, HUB_CLOSE.handshakeTimeout),
      this.#handshakeTimeoutMs,
    );
    ws.on('message', (data: RawData, isBinary: boolean) => this.#onFrame(conn, data, isBinary));
    ws.on('pong', () => this.#seen(conn));
    ws.on('close', () => this.#onClose(conn));
    this.#sendRaw(ws, { protocol: PROTOCOL_VERSION, type: 'challenge', nonce: conn.nonce, server_time: Date.now() });
  }

  #onFrame(conn: Connection, data: RawData, isBinary = false): void {
    // Frames already in flight when the hub decided to close are not handled.
    if (conn.phase === 'closed' || conn.ws.readyState !== WebSocket.OPEN) return;
    // Binary frames are shell channel traffic, only on an authenticated connection.
    if (isBinary && conn.phase === 'open' && conn.agentId !== undefined) {
      this.#seen(conn);
      conn.lastFrameAt = conn.lastSeen;
      const bad = this.channels.handleFrame(conn.agentId, Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data));
      if (bad !== undefined) this.#invalid(conn, 'schema_violation', bad);
      return;
    }
    const parsed = parseAgentMessage(data);
    if (!parsed.ok) {
      if (conn.phase !== 'open') {
        this.#refuse(conn, parsed.error.kind, `handshake expected a hello: ${parsed.error.message}`, HUB_CLOSE.policy);
      } else {
        this.#invalid(conn, parsed.error.kind, parsed.error.message);
      }
      return;
    }
    const msg = parsed.message;
    if (conn.phase === 'handshake') {
      if (msg.type !== 'hello') {
        this.#refuse(conn, 'handshake_required', `expected hello, got ${msg.type}`, HUB_CLOSE.policy);
        return;
      }
      conn.phase = 'verifying';
      void this.#onHello(conn, msg).catch((err: unknown) => {
        this.#log.error({ err }, 'hub: handshake failed');
        this.#refuse(conn, 'internal', 'the control plane failed during the handshake', HUB_CLOSE.internal);
      });
      return;
    }
    if (conn.phase === 'verifying' || conn.phase === 'queued') {
      this.#refuse(conn, 'unexpected_message', 'wait for welcome before sending', HUB_CLOSE.policy);
      return;
    }
    this.#seen(conn);
    conn.lastFrameAt = conn.lastSeen;
    this.#onMessage(conn, msg);
  }

  #onMessage(conn: Connection, msg: AgentMessage): void {
    const agentId = conn.agentId ?? '';
    switch (msg.type) {
      case 'heartbeat':
        this.#heartbeat(conn);
        return;
      case 'hello':
        this.#invalid(conn, 'unexpected_message', 'this connection is already authenticated');
        return;
      case 'error':
        this.#log.warn({ agentId, key: msg.key, message: msg.message, commandId: msg.command_id }, 'hub: agent reported an error');
        return;
      default:
        for (const l of this.#listeners) {
          try {
            l.agentMessage?.(agentId, msg);
          } catch (err) {
            this.#log.error({ err, agentId }, 'hub: listener failed');
          }
        }
    }
  }

  async #onHello(conn: Connection, hello: MessageOf<'hello'>): Promise<void> {
    if (hello.nonce !== conn.nonce) {
      this.#unauthorized(conn, hello.agent_id, 'the hello does not answer this connection’s challenge', 'bad_nonce');
      return;
    }
    const agent = await this.#store.findAgent(hello.agent_id);
    if (conn.phase !== 'verifying') return;
    if (!agent) {
      this.#unauthorized(conn, hello.agent_id, 'unknown agent; enroll it again', 'unknown_agent');
      return;
    }
    if (agent.revoked) {
      this.#unauthorized(conn, hello.agent_id, 'this agent’s key was revoked; enroll it again', 'revoked');
      return;
    }
    let ok = false;
    try {
      ok = verifyHello(this.#publicKey(agent.publicKey), agent.id, conn.nonce, hello.signature);
    } catch {
      ok = false;
    }
    if (!ok) {
      this.#unauthorized(conn, hello.agent_id, 'the hello signature does not verify under the registered key', 'bad_signature');
      return;
    }
    // The handshake bound is charged only here, by agents that proved who they are: a
    // flood of unauthenticated peers never takes these tokens, nor places in the line,
    // nor moves the retry slots. Nobody passes the line: while it is not empty, a token
    // is the line's.
    if (this.#lined.size > 0 || !this.#bucket.take()) {
      this.#queueOrRefuse(conn, agent, hello);
      return;
    }
    await this.#welcome(conn, agent, hello);
  }

  /**
   * Over the handshake bound: held in line when the agent's turn is near (or it
   * understands `queued` and its turn is within the line's limit), else refused
   * `overloaded` with a retry slot behind everyone in line. Being held costs the hub an
   * open socket, no work: a refused agent would dial, be challenged and verified again.
   */
  #queueOrRefuse(conn: Connection, agent: AgentIdentity, hello: MessageOf<'hello'>): void {
    const previous = this.#lined.get(agent.id);
    // An agent already in line that dialled again keeps its place, on the new connection.
    const position = previous ? this.#positionOf(previous) : this.#lined.size + 1;
    const waitMs = this.#bucket.msUntil(position);
    const canWait = waitMs <= this.#silentHoldMs || (conn.features.has('queued') && waitMs <= this.#handshakeQueueMs);
    if (!canWait || this.#handshakeQueueMs === 0) {
      this.#stats.refusedOverloaded++;
      const retryAfter = this.#bucket.retryAfterMs(Math.random, this.#bucket.msUntil(this.#lined.size + 1));
      this.#refuse(conn, 'overloaded', `too many agents are connecting; retry in ${retryAfter} ms`, HUB_CLOSE.overloaded, retryAfter);
      return;
    }
    clearTimeout(conn.handshakeTimer);
    this.#handshaking.delete(conn);
    conn.phase = 'queued';
    conn.agentId = agent.id;
    conn.held = { agent, hello };
    this.#stats.handshakesQueued++;
    if (previous) {
      const at = this.#line.indexOf(previous, this.#lineHead);
      this.#line[at] = conn;
      previous.phase = 'closed';
      previous.held = undefined;
      this.#sendRaw(previous.ws, { protocol: PROTOCOL_VERSION, type: 'error', key: 'connection_replaced', message: 'a newer connection of this agent took its place in line' });
      previous.ws.close(HUB_CLOSE.replaced, 'replaced');
    } else {
      this.#line.push(conn);
    }
    this.#lined.set(agent.id, conn);
    if (waitMs > this.#silentHoldMs && conn.features.has('queued')) this.#sendRaw(conn.ws, { protocol: PROTOCOL_VERSION, type: 'queued', position, welcome_within_ms: waitMs });
    this.#scheduleLine();
  }

  /** Place in line (1 = next) of a connection that is in it. */
  #positionOf(conn: Connection): number {
    let position = 0;
    for (let i = this.#lineHead; i < this.#line.length; i++) {
      const c = this.#line[i];
      if (c !== undefined && c.phase === 'queued') position++;
      if (c === conn) return position;
    }
    return this.#lined.size + 1;
  }

  #scheduleLine(): void {
    if (this.#lineTimer !== undefined || this.#lined.size === 0 || this.#closing) return;
    // At least LINE_TICK_MS apart: the agents welcomed in one go share one write transaction
    // (at 400/s a timer per token would commit one connect at a time), for a welcome at most that much later.
    this.#lineTimer = setTimeout(() => {
      this.#lineTimer = undefined;
      this.#drainLine();
    }, Math.max(LINE_TICK_MS, this.#bucket.msUntil(1)));
  }

  /** Welcomes agents from the head of the line while there are tokens. */
  #drainLine(): void {
    while (this.#lineHead < this.#line.length) {
      const conn = this.#line[this.#lineHead];
      if (conn === undefined || conn.phase !== 'queued' || conn.held === undefined) {
        this.#line[this.#lineHead++] = undefined;
        continue;
      }
      if (!this.#bucket.take()) break;
      this.#line[this.#lineHead++] = undefined;
      const { agent, hello } = conn.held;
      conn.held = undefined;
      if (this.#lined.get(agent.id) === conn) this.#lined.delete(agent.id);
      conn.phase = 'verifying';
      this.#welcome(conn, agent, hello).catch((err: unknown) => {
        this.#log.error({ err }, 'hub: handshake failed');
        this.#refuse(conn, 'internal', 'the control plane failed during the handshake', HUB_CLOSE.internal);
      });
    }
    if (this.#lineHead === this.#line.length) {
      this.#line = [];
      this.#lineHead = 0;
    } else if (this.#lineHead > 1024 && this.#lineHead * 2 > this.#line.length) {
      this.#line = this.#line.slice(this.#lineHead);
      this.#lineHead = 0;
    }
    this.#scheduleLine();
  }

  /** Makes a verified connection the agent's live one: state written, welcome sent, listeners told. */
  async #welcome(conn: Connection, agent: AgentIdentity, hello: MessageOf<'hello'>): Promise<void> {
    clearTimeout(conn.handshakeTimer);
    this.#handshaking.delete(conn);
    conn.agentId = agent.id;
    conn.phase = 'open';
    conn.lastSeen = Date.now();
    // The hello was the agent's own frame.
    conn.lastFrameAt = conn.lastSeen;
    // Register before writing, so the old connection's close handler sees it was replaced.
    const previous = this.#open.get(agent.id);
    this.#open.set(agent.id, conn);
    if (previous) {
      previous.phase = 'closed';
      this.#sendRaw(previous.ws, {
        protocol: PROTOCOL_VERSION,
        type: 'error',
        key: 'connection_replaced',
        message: 'a newer connection of this agent took over',
      });
      previous.ws.close(HUB_CLOSE.replaced, 'replaced');
      // The agent ends the sessions of a dropped connection; so do their channels here.
      this.channels.agentGone(agent.id);
      this.#log.info({ agentId: agent.id }, 'hub: older connection replaced');
    }
    const connectedAt = Date.now();
    let stillEnrolled = true;
    const recorded = await this.#writeState(agent.id, async () => {
      stillEnrolled = await this.#store.markConnected(agent.id, {
        connectedAt,
        publicKey: agent.publicKey,
        agentVersion: hello.agent_version,
        hostname: hello.hostname,
        os: hello.os,
        platform: hello.platform ?? null,
      });
    });
    if (conn.phase !== 'open') return;
    if (recorded && !stillEnrolled) {
      // Revoked, or enrolled again with another key, since its hello verified (on any
      // process; the wait in line makes that window seconds long): the row was not written.
      this.#open.delete(agent.id);
      conn.phase = 'verifying';
      this.#unauthorized(conn, agent.id, 'this agent was revoked or enrolled again with a new key; enroll it again', 'revoked');
      return;
    }
    if (!recorded) {
      // Welcomed without its row saying `connected`, the agent would be held here while
      // every other process reads it as disconnected and never routes it a command. It
      // is sent away to dial again (maybe another process); a write that failed yet
      // committed is undone by the disconnect write (only while this node holds the row).
      this.#open.delete(agent.id);
      conn.phase = 'verifying';
      const retryAfter = 1_000 + Math.round(Math.random() * 4_000);
      this.#refuse(conn, 'internal', `the control plane could not record this connection; retry in ${retryAfter} ms`, HUB_CLOSE.internal, retryAfter);
      void this.#writeState(agent.id, () => this.#store.markDisconnected(agent.id, Date.now()));
      return;
    }
    this.#stats.handshakesCompleted++;
    const welcome: ServerMessage = {
      protocol: PROTOCOL_VERSION,
      type: 'welcome',
      agent_id: agent.id,
      heartbeat_interval_ms: this.heartbeatIntervalMs,
      server_time: Date.now(),
      signing_keys: this.#keys.published(),
    };
    conn.ws.send(encodeMessage(welcome));
    conn.welcomed = true;
    this.#log.debug({ agentId: agent.id, remote: conn.remote }, 'hub: agent connected');
    for (const l of this.#listeners) {
      try {
        l.agentConnected?.(agent);
      } catch (err) {
        this.#log.error({ err, agentId: agent.id }, 'hub: listener failed');
      }
    }
  }

  #onClose(conn: Connection): void {
    clearTimeout(conn.handshakeTimer);
    this.#handshaking.delete(conn);
    if (conn.phase === 'queued') {
      // Its place in line is skipped when the line reaches it.
      conn.held = undefined;
      if (conn.agentId !== undefined && this.#lined.get(conn.agentId) === conn) this.#lined.delete(conn.agentId);
    }
    conn.phase = 'closed';
    const agentId = conn.agentId;
    if (agentId === undefined || this.#open.get(agentId) !== conn) return;
    this.#open.delete(agentId);
    this.#dirtySeen.delete(agentId);
    this.channels.agentGone(agentId);
    if (!this.#closing) {
      const at = Math.max(conn.lastSeen, 0);
      void this.#writeState(agentId, () => this.#store.markDisconnected(agentId, at));
    }
    for (const l of this.#listeners) {
      try {
        l.agentDisconnected?.(agentId);
      } catch (err) {
        this.#log.error({ err, agentId }, 'hub: listener failed');
      }
    }
  }

  /** Decoded agent keys, so a reconnect storm does not re-parse DER for every handshake. */
  #publicKey(text: string): KeyObject {
    let key = this.#keyCache.get(text);
    if (!key) {
      key = decodePublicKey(text);
      if (this.#keyCache.size >= 100_000) this.#keyCache.clear();
      this.#keyCache.set(text, key);
    }
    return key;
  }

  /**
   * State writes of one agent run in order, so a fast reconnect cannot be overwritten by
   * the old close. Resolves false (logged) when the write failed.
   */
  #writeState(agentId: string, write: () => Promise<void>): Promise<boolean> {
    const prev = this.#stateChains.get(agentId) ?? Promise.resolve(true);
    const next = prev.then(write).then(
      () => true,
      (err: unknown) => {
        this.#log.error({ err, agentId }, 'hub: writing agent state failed');
        return false;
      },
    );
    this.#stateChains.set(agentId, next);
    void next.then(() => {
      if (this.#stateChains.get(agentId) === next) this.#stateChains.delete(agentId);
    });
    return next;
  }

  #seen(conn: Connection): void {
    const now = Date.now();
    conn.lastSeen = now;
    if (conn.phase === 'open' && conn.agentId !== undefined) this.#dirtySeen.set(conn.agentId, now);
  }

  /**
   * Pings the agents that sent nothing of their own within the last interval. An agent
   * that heartbeats (vmkit-agent does, at the interval told in welcome) already proved
   * it is alive and got the hub's heartbeat back: a ping and its pong would only double
   * the idle traffic of a large fleet. One that only answers pings is pinged every time.
   */
  #pingAll(): void {
    const now = Date.now();
    for (const conn of this.#open.values()) {
      if (conn.ws.readyState !== WebSocket.OPEN) continue;
      // Acks wait for the agent's next heartbeat, but never much more than an interval:
      // an agent that has gone quiet gets them on a heartbeat of the hub's own.
      if (conn.pendingAcks !== undefined && now - conn.pendingAcksSince >= this.heartbeatIntervalMs) this.#heartbeat(conn);
      if (now - conn.lastFrameAt < this.heartbeatIntervalMs) {
        this.#stats.pingsSkipped++;
        continue;
      }
      this.#stats.pingsSent++;
      conn.ws.ping();
    }
  }

  #dropSilent(): void {
    const now = Date.now();
    for (const conn of this.#open.values()) {
      if (now - conn.lastSeen > this.deadAfterMs) {
        this.#stats.deadDropped++;
        this.#log.info({ agentId: conn.agentId, silentMs: now - conn.lastSeen }, 'hub: agent silent, dropping');
        // terminate() emits 'close', whose handler marks the agent disconnected.
        conn.ws.terminate();
      }
    }
  }

  #invalid(conn: Connection, key: ErrorKey, message: string): void {
    this.#stats.invalidFrames++;
    conn.invalidFrames++;
    if (conn.invalidFrames >= this.#maxInvalidFrames) {
      this.#refuse(conn, key, `too many invalid frames; last: ${message}`, HUB_CLOSE.policy);
      return;
    }
    this.#sendRaw(conn.ws, { protocol: PROTOCOL_VERSION, type: 'error', key, message: message.slice(0, 2048) });
  }

  #unauthorized(conn: Connection, agentId: string, message: string, reason: HandshakeRefusal): void {
    this.#stats.refusedUnauthorized++;
    this.#log.warn({ agentId, remote: conn.remote, reason: message }, 'hub: agent refused');
    this.#refuse(conn, 'unauthorized', message, HUB_CLOSE.unauthorized, undefined, reason);
  }

  #refuse(conn: Connection, key: ErrorKey, message: string, code: number, retryAfterMs?: number, reason?: HandshakeRefusal): void {
    if (conn.phase === 'closed' && conn.ws.readyState !== WebSocket.OPEN) return;
    if (conn.phase === 'handshake' || conn.phase === 'verifying' || conn.phase === 'queued') this.#refusals[reason ?? refusalOf(key)]++;
    if (conn.phase === 'queued') {
      conn.held = undefined;
      if (conn.agentId !== undefined && this.#lined.get(conn.agentId) === conn) this.#lined.delete(conn.agentId);
    }
    this.#sendRaw(conn.ws, {
      protocol: PROTOCOL_VERSION,
      type: 'error',
      key,
      message: message.slice(0, 2048),
      ...(retryAfterMs !== undefined && { retry_after_ms: retryAfterMs }),
    });
    // Close reasons are limited to 123 bytes.
    conn.ws.close(code, key.slice(0, 120));
    if (conn.phase !== 'open') {
      clearTimeout(conn.handshakeTimer);
      this.#handshaking.delete(conn);
      conn.phase = 'closed';
    }
  }

  /** The hub's heartbeat, carrying the acks a `heartbeat-acks` agent is owed. */
  #heartbeat(conn: Connection): void {
    const acks = conn.pendingAcks;
    conn.pendingAcks = undefined;
    this.#sendRaw(conn.ws, { protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now(), ...(acks && { result_acks: acks }) });
  }

  #sendRaw(ws: WebSocket, message: ServerMessage): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }
}

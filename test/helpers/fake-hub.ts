import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  decodePublicKey,
  encodeMessage,
  enrollRequestSchema,
  errorBody,
  newChallengeNonce,
  newId,
  parseAgentMessage,
  signCommand,
  verifyHello,
} from '@vmkit/protocol';
import type { AgentMessage, CommandParams, CommandType, EnrollResponse, MessageOf, NewCommand, SignedCommand, SigningKeyPair } from '@vmkit/protocol';
import { WebSocket, WebSocketServer } from 'ws';
import { fixtureKey } from './fixtures.ts';

/**
 * A stand-in control plane for agent tests: a real HTTP server on 127.0.0.1 (port 0)
 * answering `POST /api/agents/enroll`, and a real `ws` server on /agent/v1/connect
 * speaking the agent protocol as the hub does (challenge, hello check, welcome,
 * heartbeats, result_ack). Switches let it misbehave: forged commands, raw frames,
 * overload, refused upgrades, dropped connections, silence.
 */

export interface HubConnection {
  index: number;
  ws: WebSocket;
  openedAt: number;
  agentId?: string;
  helloVerified?: boolean;
  hello?: MessageOf<'hello'>;
  nonce: string;
  welcomedAt?: number;
  closedAt?: number;
  closeCode?: number;
  closeReason?: string;
  messages: AgentMessage[];
}

export interface ReceivedMessage {
  conn: number;
  at: number;
  message: AgentMessage;
}

export interface FakeHubOptions {
  heartbeatIntervalMs?: number;
  signingKey?: SigningKeyPair;
  tokens?: string[];
  /** Serve https:// and wss:// with this certificate and key (PEM) instead of plain http. */
  tls?: { cert: string; key: string };
}

interface RegisteredAgent {
  agentId: string;
  instanceId: string;
  publicKey: string;
  hostname: string;
  os: string;
  agentVersion: string;
}

export class FakeHub {
  readonly server: Server;
  readonly wss: WebSocketServer;
  readonly signingKey: SigningKeyPair;
  /** https:// and wss:// (FakeHubOptions.tls). */
  readonly secure: boolean;
  /** Extra keys announced at enrollment (rotation in progress). */
  announcedKeys: SigningKeyPair[] = [];
  heartbeatIntervalMs: number;
  port = 0;
  readonly tokens = new Set<string>();
  readonly agents = new Map<string, RegisteredAgent>();
  readonly enrollRequests: unknown[] = [];
  readonly connections: HubConnection[] = [];
  readonly received: ReceivedMessage[] = [];
  /** Times at which a WebSocket upgrade was attempted (including refused ones). */
  readonly dialAttempts: number[] = [];
  /** Send result_ack for every result. */
  ackResults = true;
  /** Results for these ids are not acked: the connection is dropped on receipt, once. */
  readonly dropOnResult = new Set<string>();
  /** Answer the next N handshakes with `error` + retry_after_ms, then close. */
  overload: { retryAfterMs: number; remaining: number } | undefined;
  /** Answer upgrades with HTTP 503 (a hub that is up but not taking agents). */
  refuseUpgrades = false;
  /** Do not answer heartbeats and do not ping: a hub that went silent. */
  silent = false;
  /** What a new connection hears first: the protocol's challenge, or a misbehaving greeting. */
  greeting: 'challenge' | 'welcome_first' | 'garbage' = 'challenge';
  /** The connect URL the enrollment answer names (tests override to check the agent's policy). */
  connectUrlOverride: string | undefined;
  /** Sent instead of the enrollment answer (tests of what the agent accepts). */
  enrollAnswerOverride: unknown;

  private constructor(opts: FakeHubOptions) {
    this.signingKey = opts.signingKey ?? fixtureKey('control_plane');
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 200;
    for (const t of opts.tokens ?? []) this.tokens.add(t);
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      this.#onHttp(req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(JSON.stringify({ error: 'internal', message: (err as Error).message }));
      });
    };
    this.secure = opts.tls !== undefined;
    this.server = opts.tls ? createTlsServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest) : createServer(onRequest);
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
    this.server.on('upgrade', (req, socket, head) => this.#onUpgrade(req, socket, head));
  }

  static async start(opts: FakeHubOptions = {}): Promise<FakeHub> {
    const hub = new FakeHub(opts);
    await hub.listen(0);
    return hub;
  }

  get baseUrl(): string {
    return `${this.secure ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  get connectUrl(): string {
    return `${this.secure ? 'wss' : 'ws'}://127.0.0.1:${this.port}/agent/v1/connect`;
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        const addr = this.server.address();
        if (addr && typeof addr === 'object') this.port = addr.port;
        resolve();
      });
    });
  }

  /** The control plane goes away: listener closed, every socket cut. */
  async stop(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** ... and comes back on the same port. */
  async restart(): Promise<void> {
    await this.listen(this.port);
  }

  async close(): Promise<void> {
    if (this.server.listening) await this.stop();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  /** The newest connection that completed the handshake and is still open. */
  current(): HubConnection | undefined {
    return [...this.connections].reverse().find((c) => c.welcomedAt !== undefined && c.closedAt === undefined);
  }

  welcomed(): HubConnection[] {
    return this.connections.filter((c) => c.welcomedAt !== undefined);
  }

  sign<T extends CommandType>(agentId: string, type: T, params: CommandParams<T>, extra: Partial<NewCommand<T>> = {}, key = this.signingKey): SignedCommand {
    return signCommand(key, { agentId, type, params, ...extra });
  }

  /** Sends a command frame (envelope and signature as given) on the current connection. */
  sendCommand(cmd: { envelope: unknown; signature: string }, conn = this.current()): void {
    if (!conn) throw new Error('no agent connected');
    conn.ws.send(JSON.stringify({ protocol: PROTOCOL_VERSION, type: 'command', envelope: cmd.envelope, signature: cmd.signature }));
  }

  sendRaw(frame: string | Buffer, conn = this.current()): void {
    if (!conn) throw new Error('no agent connected');
    conn.ws.send(frame);
  }

  /** Drops every agent connection abruptly (TCP reset, no close frame). */
  dropAll(): void {
    for (const c of this.wss.clients) c.terminate();
  }

  messagesOf<T extends AgentMessage['type']>(type: T, commandId?: string): MessageOf<T>[] {
    return this.received
      .map((r) => r.message)
      .filter((m): m is MessageOf<T> => m.type === type && (commandId === undefined || ('command_id' in m && m.command_id === commandId)));
  }

  async waitFor<T>(probe: () => T | undefined | false, what: string, timeoutMs = 120_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  waitForConnection(count = 1, timeoutMs = 120_000): Promise<HubConnection> {
    return this.waitFor(() => (this.welcomed().length >= count ? this.current() : undefined), `${count} welcomed connection(s)`, timeoutMs);
  }

  waitForResult(commandId: string, count = 1, timeoutMs = 120_000): Promise<MessageOf<'result'>> {
    return this.waitFor(() => {
      const r = this.messagesOf('result', commandId);
      return r.length >= count ? r[count - 1] : undefined;
    }, `result #${count} of ${commandId}`, timeoutMs);
  }

  async #onHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('content-type', 'application/json');
    if (req.method !== 'POST' || req.url !== '/api/agents/enroll') {
      res.statusCode = 404;
      res.end(JSON.stringify(errorBody('not_found')));
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    this.enrollRequests.push(raw);
    // The same schema the control plane's route uses: an agent that sends anything else fails here too.
    const parsed = enrollRequestSchema.safeParse(raw);
    if (!parsed.success) {
      res.statusCode = 400;
      res.end(JSON.stringify(errorBody('invalid_request', `Invalid request: ${parsed.error.issues[0]?.message ?? 'invalid'}`)));
      return;
    }
    const body = parsed.data;
    const token = body.token;
    if (!this.tokens.has(token)) {
      res.statusCode = 401;
      res.end(JSON.stringify(errorBody('enrollment_token_invalid')));
      return;
    }
    this.tokens.delete(token);
    const agent: RegisteredAgent = {
      agentId: newId('agent'),
      instanceId: newId('instance'),
      publicKey: body.public_key,
      hostname: body.hostname,
      os: body.os,
      agentVersion: body.agent_version,
    };
    this.agents.set(agent.agentId, agent);
    const answer: EnrollResponse = {
      agent_id: agent.agentId,
      instance_id: agent.instanceId,
      signing_keys: [this.signingKey, ...this.announcedKeys].map((k) => ({ key_id: k.keyId, public_key: k.publicKey })),
      connect_url: this.connectUrlOverride ?? this.connectUrl,
    };
    res.statusCode = 201;
    res.end(JSON.stringify(this.enrollAnswerOverride ?? answer));
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.dialAttempts.push(Date.now());
    if (req.url !== '/agent/v1/connect' || this.refuseUpgrades) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.#onConnection(ws));
  }

  #onConnection(ws: WebSocket): void {
    const conn: HubConnection = { index: this.connections.length, ws, openedAt: Date.now(), nonce: newChallengeNonce(), messages: [] };
    this.connections.push(conn);
    const send = (m: Parameters<typeof encodeMessage>[0]) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(encodeMessage(m));
    };
    ws.on('close', (code, reason) => {
      conn.closedAt = Date.now();
      conn.closeCode = code;
      conn.closeReason = reason.toString('utf8');
    });
    ws.on('error', () => undefined);
    if (this.overload && this.overload.remaining > 0) {
      this.overload.remaining--;
      send({ protocol: PROTOCOL_VERSION, type: 'error', key: 'rate_limited', message: 'hub overloaded', retry_after_ms: this.overload.retryAfterMs });
      ws.close(1013, 'try again later');
      return;
    }
    if (this.greeting === 'welcome_first') {
      send({ protocol: PROTOCOL_VERSION, type: 'welcome', agent_id: newId('agent'), heartbeat_interval_ms: this.heartbeatIntervalMs, server_time: Date.now(), signing_keys: [] });
    } else if (this.greeting === 'garbage') {
      ws.send('{"protocol":1,"type":"challenge","nonce":"short"}');
    } else {
      send({ protocol: PROTOCOL_VERSION, type: 'challenge', nonce: conn.nonce, server_time: Date.now() });
    }
    ws.on('message', (data: Buffer) => {
      const parsed = parseAgentMessage(data);
      if (!parsed.ok) {
        ws.close(1002, `bad frame: ${parsed.error.kind}`);
        return;
      }
      const msg = parsed.message;
      conn.messages.push(msg);
      this.received.push({ conn: conn.index, at: Date.now(), message: msg });
      if (msg.type === 'hello') {
        const agent = this.agents.get(msg.agent_id);
        conn.agentId = msg.agent_id;
        conn.hello = msg;
        conn.helloVerified = agent !== undefined && msg.nonce === conn.nonce && verifyHello(decodePublicKey(agent.publicKey), msg.agent_id, msg.nonce, msg.signature);
        if (!conn.helloVerified) {
          send({ protocol: PROTOCOL_VERSION, type: 'error', key: 'unauthorized', message: 'unknown agent or bad signature' });
          ws.close(1008, 'handshake refused');
          return;
        }
        conn.welcomedAt = Date.now();
        send({
          protocol: PROTOCOL_VERSION,
          type: 'welcome',
          agent_id: msg.agent_id,
          heartbeat_interval_ms: this.heartbeatIntervalMs,
          server_time: Date.now(),
          signing_keys: [this.signingKey, ...this.announcedKeys].map((k) => ({ key_id: k.keyId, public_key: k.publicKey })),
        });
        return;
      }
      if (msg.type === 'heartbeat') {
        if (!this.silent) send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
        return;
      }
      if (msg.type === 'result') {
        if (this.dropOnResult.delete(msg.command_id)) {
          ws.terminate();
          return;
        }
        if (this.ackResults) send({ protocol: PROTOCOL_VERSION, type: 'result_ack', command_id: msg.command_id });
      }
    });
  }
}

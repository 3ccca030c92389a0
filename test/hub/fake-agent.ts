import type { KeyObject } from 'node:crypto';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import { AGENT_FEATURES_HEADER, PROTOCOL_VERSION, parseServerMessage, signHello } from '@vmkit/protocol';
import type { AgentPlatform, MessageOf, ServerMessage } from '@vmkit/protocol';

/** How a fake agent dials and what its hello says. */
export interface HelloOptions {
  autoPong?: boolean;
  /** The `x-vmkit-agent-features` header, when it sends one. */
  features?: string;
  hostname?: string;
  platform?: AgentPlatform;
}

/**
 * A minimal agent built from @vmkit/protocol for hub-only behaviours: it does the
 * real handshake and lets a test read every frame and send anything, valid or not.
 */
export class FakeAgent {
  readonly ws: WebSocket;
  readonly received: ServerMessage[] = [];
  /** Binary (shell channel) frames the hub sent, in order. */
  readonly binary: Buffer[] = [];
  #binaryWaiters: (() => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: { pred: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('error', () => {});
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      // Binary frames are shell channel traffic: kept apart for the tests that look at them.
      if (isBinary) {
        this.binary.push(data);
        for (const w of this.#binaryWaiters.splice(0)) w();
        return;
      }
      const parsed = parseServerMessage(data);
      if (!parsed.ok) throw new Error(`hub sent an invalid frame: ${parsed.error.message}`);
      this.received.push(parsed.message);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(parsed.message)) return true;
        w.resolve(parsed.message);
        return false;
      });
    });
  }

  /** Opens the socket; resolves once it is open (the challenge may already be queued). */
  static open(url: string, opts: { autoPong?: boolean; features?: string } = {}): Promise<FakeAgent> {
    const ws = new WebSocket(url, { autoPong: opts.autoPong ?? true, ...(opts.features !== undefined && { headers: { [AGENT_FEATURES_HEADER]: opts.features } }) });
    const agent = new FakeAgent(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(agent));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  /** Opens, waits for the challenge and answers it with a signed hello; does not wait for the answer. */
  static async dialAndHello(url: string, agentId: string, key: KeyObject, opts: HelloOptions = {}): Promise<FakeAgent> {
    const agent = await FakeAgent.open(url, opts);
    const challenge = (await agent.next('challenge')) as MessageOf<'challenge'>;
    agent.send({
      protocol: PROTOCOL_VERSION,
      type: 'hello',
      agent_id: agentId,
      nonce: challenge.nonce,
      signature: signHello(key, agentId, challenge.nonce),
      agent_version: '0.1.0-test',
      hostname: opts.hostname ?? 'fake-host',
      os: 'linux-test',
      ...(opts.platform !== undefined && { platform: opts.platform }),
    });
    return agent;
  }

  /** Opens and completes the handshake; resolves with the welcome (or the error that refused it). */
  static async connect(
    url: string,
    agentId: string,
    key: KeyObject,
    opts: HelloOptions = {},
  ): Promise<{ agent: FakeAgent; welcome?: MessageOf<'welcome'>; error?: MessageOf<'error'> }> {
    const agent = await FakeAgent.dialAndHello(url, agentId, key, opts);
    const answer = await agent.nextOf((m) => m.type === 'welcome' || m.type === 'error');
    return answer.type === 'welcome' ? { agent, welcome: answer } : { agent, error: answer as MessageOf<'error'> };
  }

  next(type: ServerMessage['type'], timeoutMs = 5_000): Promise<ServerMessage> {
    return this.nextOf((m) => m.type === type, timeoutMs, type);
  }

  /** The first frame (already received or upcoming) matching pred that no earlier call consumed. */
  nextOf(pred: (m: ServerMessage) => boolean, timeoutMs = 5_000, what = 'frame'): Promise<ServerMessage> {
    const idx = this.received.findIndex(pred);
    if (idx >= 0) {
      const [m] = this.received.splice(idx, 1);
      return Promise.resolve(m as ServerMessage);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(timer);
          const i = this.received.indexOf(m);
          if (i >= 0) this.received.splice(i, 1);
          resolve(m);
        },
      });
    });
  }

  /** Resolves once a binary frame matching pred has been received (checked against all so far). */
  async binaryFrame(pred: (frame: Buffer) => boolean, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.binary.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no matching binary frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.#binaryWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(message: unknown): void {
    this.ws.send(JSON.stringify(message));
  }

  /** Sends the messages in one socket write, so the hub reads them in one go (as it does a fast agent's ack and result). */
  sendTogether(...messages: unknown[]): void {
    // ws has no public handle on its socket; corked, the frames' writes leave as one.
    const socket = (this.ws as unknown as { _socket: Socket })._socket;
    socket.cork();
    for (const m of messages) this.ws.send(JSON.stringify(m));
    socket.uncork();
  }

  sendRaw(data: string | Buffer): void {
    this.ws.send(data);
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }

  kill(): void {
    this.ws.terminate();
  }
}

import type { KeyObject } from 'node:crypto';
import {
  AGENT_FEATURES,
  AGENT_FEATURES_HEADER,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  encodeMessage,
  parseServerMessage,
  platformOf,
  signHello,
} from '@vmkit/protocol';
import type { AgentMessage, MessageOf, RawFrame, ServerMessage } from '@vmkit/protocol';
import WebSocket from 'ws';
import { fullJitterDelay } from './backoff.ts';
import type { BackoffOptions } from './backoff.ts';
import type { Logger } from './log.ts';

export type ConnectionState = 'connecting' | 'handshaking' | 'connected' | 'waiting' | 'stopped';

export interface ConnectionOptions {
  /**
   * The control planes to dial, in order (at least one): each failed dial or dropped
   * connection moves to the next, with the same backoff between dials.
   */
  urls: string[];
  agentId: string;
  agentKey: KeyObject;
  hostname: string;
  os: string;
  agentVersion: string;
  backoff: BackoffOptions;
  /** A connection that stayed up this long resets the backoff. */
  stableMs: number;
  handshakeTimeoutMs: number;
  log: Logger;
  /** The hub welcomed us: re-send what it has not acknowledged. */
  onWelcome(welcome: MessageOf<'welcome'>): void;
  /** `command`, `result_ack`, and heartbeats that carry `result_acks`, once the connection is up. */
  onMessage(message: ServerMessage): void;
  /** Binary frames (shell channels) once the connection is up. */
  onBinary?(frame: Buffer): void;
  onState(state: ConnectionState, info: { nextRetryAt?: number; error?: string; heartbeatMs?: number; url?: string }): void;
}

/** Heartbeats missed before the hub is presumed gone and the socket dropped. */
const SILENCE_LIMIT = 3;
/** WebSocket close codes (RFC 6455). */
const CLOSE_GOING_AWAY = 1001;
const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_POLICY_VIOLATION = 1008;

/** The release platform told in the hello, so rollouts send this agent the right build. */
const PLATFORM = platformOf(process.platform, process.arch);

type Phase = 'await_challenge' | 'await_welcome' | 'ready';

/**
 * The agent's one outbound WebSocket: dial, prove identity (challenge → hello →
 * welcome), heartbeats both ways, and reconnection with backoff that honours the
 * hub's `retry_after_ms`. Everything above it talks through `send` and callbacks.
 */
export class AgentConnection {
  readonly #o: ConnectionOptions;
  #ws: WebSocket | undefined;
  #phase: Phase = 'await_challenge';
  #attempt = 0;
  /** Index in `urls` of the control plane dialled last (or now). */
  #urlIndex = 0;
  #stopping = false;
  #connectedAt: number | undefined;
  #lastHeard = 0;
  #retryNotBefore = 0;
  #timers = new Set<NodeJS.Timeout>();
  #heartbeat: NodeJS.Timeout | undefined;
  #reconnect: NodeJS.Timeout | undefined;
  /** Drops a dial whose challenge and welcome do not arrive in time; a `queued` answer moves it. */
  #handshakeTimer: NodeJS.Timeout | undefined;

  constructor(opts: ConnectionOptions) {
    if (opts.urls.length === 0) throw new Error('AgentConnection needs at least one URL');
    this.#o = opts;
  }

  /** The control plane dialled now, or last. */
  get url(): string {
    return this.#o.urls[this.#urlIndex] ?? '';
  }

  start(): void {
    this.#stopping = false;
    this.#dial();
  }

  get connected(): boolean {
    return this.#phase === 'ready' && this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Sends a message if the connection is up; false means it was not sent. */
  send(message: AgentMessage): boolean {
    if (!this.connected || !this.#ws) return false;
    this.#ws.send(encodeMessage(message));
    return true;
  }

  /** Sends a binary (shell channel) frame if the connection is up; false means it was not sent. */
  sendBinary(frame: Buffer): boolean {
    if (!this.connected || !this.#ws) return false;
    this.#ws.send(frame, { binary: true });
    return true;
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#reconnect) clearTimeout(this.#reconnect);
    const ws = this.#ws;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      ws.close(CLOSE_GOING_AWAY, 'agent shutting down');
      const timer = setTimeout(() => ws.terminate(), 2000);
      await closed;
      clearTimeout(timer);
    }
    this.#clearTimers();
    this.#o.onState('stopped', {});
  }

  #dial(): void {
    if (this.#stopping) return;
    this.#phase = 'await_challenge';
    this.#connectedAt = undefined;
    const url = this.url;
    this.#o.onState('connecting', { url });
    const ws = new WebSocket(url, {
      maxPayload: MAX_FRAME_BYTES,
      handshakeTimeout: this.#o.handshakeTimeoutMs,
      perMessageDeflate: false,
      // The optional messages this agent understands (an older hub ignores the header).
      headers: { 'user-agent': `vmkit-agent/${this.#o.agentVersion}`, [AGENT_FEATURES_HEADER]: AGENT_FEATURES.join(',') },
    });
    this.#ws = ws;
    // Challenge and welcome must both arrive in time, or the socket is dropped.
    this.#armHandshakeTimer(ws, this.#o.handshakeTimeoutMs);

    ws.on('open', () => {
      this.#lastHeard = Date.now();
      this.#o.onState('handshaking', {});
    });
    ws.on('message', (data: RawFrame, isBinary: boolean) => {
      this.#lastHeard = Date.now();
      // JSON messages are text frames; binary frames belong to shell channels.
      if (isBinary) {
        if (this.#phase === 'ready' && Buffer.isBuffer(data)) this.#o.onBinary?.(data);
        else this.#o.log.warn('binary frame outside a ready connection dropped', {});
        return;
      }
      this.#onFrame(ws, data);
    });
    // ws answers pings with pongs by itself; both count as signs of life.
    ws.on('ping', () => {
      this.#lastHeard = Date.now();
    });
    ws.on('pong', () => {
      this.#lastHeard = Date.now();
    });
    ws.on('error', (err) => {
      this.#o.log.warn('connection error', { url, error: err.message });
    });
    ws.on('close', (code, reason) => {
      if (this.#ws === ws) this.#disarmHandshakeTimer();
      if (this.#heartbeat) clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
      if (this.#ws !== ws) return;
      this.#ws = undefined;
      const wasReady = this.#phase === 'ready';
      this.#phase = 'await_challenge';
      this.#o.log.info('disconnected', { url, code, reason: reason.toString('utf8') });
      if (this.#stopping) return;
      this.#scheduleReconnect(wasReady, `closed with ${code}${reason.length > 0 ? ` (${reason.toString('utf8')})` : ''}`);
    });
  }

  #armHandshakeTimer(ws: WebSocket, ms: number): void {
    this.#disarmHandshakeTimer();
    const url = this.url;
    this.#handshakeTimer = this.#timer(() => {
      if (this.#ws === ws && this.#phase !== 'ready') {
        this.#o.log.warn('handshake timed out', { url });
        ws.terminate();
      }
    }, ms);
  }

  #disarmHandshakeTimer(): void {
    if (this.#handshakeTimer === undefined) return;
    clearTimeout(this.#handshakeTimer);
    this.#timers.delete(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
  }

  #scheduleReconnect(wasReady: boolean, why: string): void {
    const now = Date.now();
    if (wasReady && this.#connectedAt !== undefined && now - this.#connectedAt >= this.#o.stableMs) this.#attempt = 0;
    let delay = fullJitterDelay(this.#attempt, this.#o.backoff);
    this.#attempt++;
    if (this.#retryNotBefore > now) delay = Math.max(delay, this.#retryNotBefore - now);
    this.#retryNotBefore = 0;
    // The next dial goes to the next control plane: the one just lost may be the one that died.
    const failed = this.url;
    this.#urlIndex = (this.#urlIndex + 1) % this.#o.urls.length;
    const nextRetryAt = now + delay;
    this.#o.onState('waiting', { nextRetryAt, error: this.#o.urls.length > 1 ? `${failed}: ${why}` : why });
    this.#o.log.info('reconnecting', { in_ms: delay, attempt: this.#attempt, ...(this.#o.urls.length > 1 ? { url: this.url } : {}) });
    this.#reconnect = setTimeout(() => {
      this.#reconnect = undefined;
      this.#dial();
    }, delay);
  }

  #onFrame(ws: WebSocket, data: RawFrame): void {
    const parsed = parseServerMessage(data);
    if (!parsed.ok) {
      const { kind, message } = parsed.error;
      this.#o.log.warn('frame refused', { kind, message: message.slice(0, 300) });
      if (this.#phase !== 'ready') {
        this.#close(ws, CLOSE_PROTOCOL_ERROR, `handshake frame refused: ${kind}`);
        return;
      }
      // Once up, a bad frame is answered and the connection kept: one odd frame
      // (a newer hub, a bug) should not cost the hub its agent.
      this.#sendRaw(ws, { protocol: PROTOCOL_VERSION, type: 'error', key: 'invalid_request', message: `frame refused (${kind}): ${message}`.slice(0, 2048) });
      return;
    }
    const msg = parsed.message;
    if (msg.type === 'error') {
      this.#onError(msg);
      return;
    }
    switch (this.#phase) {
      case 'await_challenge':
        if (msg.type !== 'challenge') return this.#close(ws, CLOSE_PROTOCOL_ERROR, `expected challenge, got ${msg.type}`);
        this.#phase = 'await_welcome';
        this.#sendRaw(ws, {
          protocol: PROTOCOL_VERSION,
          type: 'hello',
          agent_id: this.#o.agentId,
          nonce: msg.nonce,
          signature: signHello(this.#o.agentKey, this.#o.agentId, msg.nonce),
          agent_version: this.#o.agentVersion,
          hostname: this.#o.hostname,
          os: this.#o.os,
          ...(PLATFORM ? { platform: PLATFORM } : {}),
        });
        return;
      case 'await_welcome':
        if (msg.type === 'queued') {
          // Verified, and held in line for a handshake slot: wait for the welcome the hub
          // promises, plus the usual handshake time, instead of dialling again.
          this.#o.log.info('waiting in line for the hub', { position: msg.position, welcome_within_ms: msg.welcome_within_ms });
          this.#armHandshakeTimer(ws, msg.welcome_within_ms + this.#o.handshakeTimeoutMs);
          return;
        }
        if (msg.type !== 'welcome') return this.#close(ws, CLOSE_PROTOCOL_ERROR, `expected welcome, got ${msg.type}`);
        if (msg.agent_id !== this.#o.agentId) return this.#close(ws, CLOSE_POLICY_VIOLATION, 'welcome names another agent');
        this.#onWelcome(ws, msg);
        return;
      case 'ready':
        if (msg.type === 'challenge' || msg.type === 'welcome' || msg.type === 'queued') {
          this.#o.log.warn('unexpected handshake message ignored', { type: msg.type });
          return;
        }
        if (msg.type === 'heartbeat' && msg.result_acks === undefined) return;
        this.#o.onMessage(msg);
        return;
    }
  }

  #onWelcome(ws: WebSocket, welcome: MessageOf<'welcome'>): void {
    this.#phase = 'ready';
    this.#disarmHandshakeTimer();
    this.#connectedAt = Date.now();
    const interval = welcome.heartbeat_interval_ms;
    this.#o.log.info('connected', { url: this.url, heartbeat_ms: interval });
    this.#o.onState('connected', { heartbeatMs: interval, url: this.url });
    this.#heartbeat = setInterval(() => {
      if (Date.now() - this.#lastHeard > SILENCE_LIMIT * interval) {
        this.#o.log.warn('hub silent; dropping the connection', { silent_ms: Date.now() - this.#lastHeard });
        ws.terminate();
        return;
      }
      this.#sendRaw(ws, { protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
    }, interval);
    this.#o.onWelcome(welcome);
  }

  #onError(msg: MessageOf<'error'>): void {
    if (msg.retry_after_ms !== undefined) {
      this.#retryNotBefore = Math.max(this.#retryNotBefore, Date.now() + msg.retry_after_ms);
    }
    this.#o.log.warn('hub reported an error', {
      key: msg.key,
      message: msg.message,
      ...(msg.command_id ? { command_id: msg.command_id } : {}),
      ...(msg.retry_after_ms !== undefined ? { retry_after_ms: msg.retry_after_ms } : {}),
    });
  }

  #sendRaw(ws: WebSocket, message: AgentMessage): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(encodeMessage(message));
  }

  #close(ws: WebSocket, code: number, reason: string): void {
    this.#o.log.warn('closing connection', { code, reason });
    // Close reasons are limited to 123 bytes.
    ws.close(code, Buffer.from(reason, 'utf8').subarray(0, 123).toString('utf8'));
    // Do not wait on a peer that ignores the close.
    this.#timer(() => ws.terminate(), 2000);
  }

  #timer(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
    return t;
  }

  #clearTimers(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    if (this.#reconnect) clearTimeout(this.#reconnect);
  }
}

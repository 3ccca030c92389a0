/**
 * MCP sessions across several control-plane processes on one PostgreSQL database.
 *
 * A session lives in the memory of the process that opened it (its SDK transport, the
 * running calls a `notifications/cancelled` must reach, the standing GET stream), so it
 * is not shared: it is found. Each process records the sessions it holds in
 * `mcp_sessions`; one that gets a request for a session it does not hold looks the
 * session up and, when the holder is a live node, relays the HTTP request to the
 * holder's registered URL and its answer (JSON or an SSE stream) back, both ways as
 * they come. A dead holder, an unknown session or a credential that is not the one
 * the session is bound to: 404 as on one process, and the client initialises again.
 *
 * Forwards are signed: HMAC-SHA256 under a key derived from the secret-box key every
 * process of a deployment shares, over who forwards to whom and when, the method, the
 * session id, a digest of the caller's Authorization header and of the body. The
 * holder takes a request as a forward only when the signature verifies; a request
 * posing as one without it is refused (403). The signature is not what lets a caller
 * in: the holder checks the caller's own Authorization against the session's binding
 * exactly as for a direct request. What it buys: a forward is never forwarded again
 * (no loops), the holder skips the DNS-rebinding check the first process made (the
 * Host is the internal one) and does not count the request against the caller's
 * rate-limit budget a second time (the first process counted it in the shared store).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Db } from '../db/index.ts';
import {
  deleteMcpSessions,
  deleteNodeMcpSessions,
  findMcpSessionHolder,
  forgetMcpSessionsOfDeadNodes,
  recordMcpSession,
  touchMcpSessions,
} from '../db/mcp-sessions.ts';
import type { McpForwardOutcome } from '../metrics/metrics.ts';
import type { McpCaller } from './http.ts';

/** The HKDF purpose of the forwarding key (SecretBox.subkey). */
export const FORWARD_KEY_PURPOSE = 'vmkit mcp forward v1';

/** The headers a forward carries besides the caller's own. */
export const FORWARD_HEADERS = {
  from: 'x-vmkit-mcp-forwarded-by',
  to: 'x-vmkit-mcp-forwarded-to',
  at: 'x-vmkit-mcp-forwarded-at',
  body: 'x-vmkit-mcp-forwarded-body-sha256',
  signature: 'x-vmkit-mcp-forward-signature',
} as const;

/** The caller's headers a forward passes on; everything else (Origin, Cookie, Host, ...) stays behind. */
const PASSED_HEADERS = ['authorization', 'accept', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'user-agent'] as const;

/** Connection-level headers of the holder's answer, not relayed. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'trailer', 'te']);

/** How far a forward's timestamp may be from the holder's clock. */
const FORWARD_MAX_SKEW_MS = 60_000;

export type ForwardCheck = 'none' | 'valid' | 'invalid';

export interface McpSessionDirectory {
  /** Records a new session as held here; resolves once another process can find it. */
  opened(sessionId: string, principal: string | null): Promise<void>;
  /** The session was used (recorded in batches). */
  used(sessionId: string): void;
  /** The session ended here (deleted, expired, evicted); resolves once its record is gone (never rejects). */
  closed(sessionId: string): Promise<void>;
  /**
   * Relays a request for a session not held here to its holder. False when there is
   * nobody to relay to (unknown session, dead or unreachable holder, another
   * credential): the caller answers 404.
   */
  forward(req: IncomingMessage, res: ServerResponse, body: unknown, sessionId: string, caller: McpCaller): Promise<boolean>;
  /** Whether `req` is a forward from a peer (headers only; the body is checked by `bodyMatches`). */
  check(req: IncomingMessage): ForwardCheck;
  /** A verified forward's body is the one that was signed. */
  bodyMatches(req: IncomingMessage, body: unknown): boolean;
}

export interface McpClusterLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface McpClusterOptions {
  db: Db;
  nodeId: string;
  /** The forwarding key: SecretBox.subkey(FORWARD_KEY_PURPOSE), the same in every process. */
  key: Buffer;
  /** A node silent this long is dead (the hub's nodeStaleAfterMs). */
  staleAfterMs: number;
  logger: McpClusterLogger;
  metrics?: { mcpForward(outcome: McpForwardOutcome): void } | undefined;
  now?: () => number;
  /** How often last-used times are written and dead nodes' rows removed. */
  flushMs?: number;
  /** How long connecting to a holder may take before it counts as unreachable. */
  connectTimeoutMs?: number;
}

/** Any of the forward headers present: the request poses as a forward. */
export function posesAsForward(headers: IncomingHttpHeaders): boolean {
  return Object.values(FORWARD_HEADERS).some((name) => headers[name] !== undefined);
}

/** What a session's binding is recorded as: a digest of the principal, never the credential itself. */
export function principalHash(principal: string | null): string | null {
  return principal === null ? null : sha256(`mcp-principal:${principal}`);
}

function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The bytes a forward sends as its body (and the holder hashes again from the parsed body). */
export function forwardBody(body: unknown): Buffer | undefined {
  return body === undefined || body === null ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
}

export interface ForwardFields {
  from: string;
  to: string;
  at: number;
  method: string;
  sessionId: string;
  authorization: string | undefined;
  bodySha256: string;
}

export function forwardSignature(key: Buffer, f: ForwardFields): string {
  const text = [FORWARD_KEY_PURPOSE, f.from, f.to, String(f.at), f.method.toUpperCase(), f.sessionId, sha256(f.authorization ?? ''), f.bodySha256].join('\n');
  return createHmac('sha256', key).update(text, 'utf8').digest('hex');
}

/** The headers that make a request a signed forward. */
export function forwardHeaders(key: Buffer, f: ForwardFields): Record<string, string> {
  return {
    [FORWARD_HEADERS.from]: f.from,
    [FORWARD_HEADERS.to]: f.to,
    [FORWARD_HEADERS.at]: String(f.at),
    [FORWARD_HEADERS.body]: f.bodySha256,
    [FORWARD_HEADERS.signature]: forwardSignature(key, f),
  };
}

function one(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

export class McpSessionCluster implements McpSessionDirectory {
  readonly #o: McpClusterOptions;
  readonly #now: () => number;
  readonly #checked = new WeakMap<IncomingMessage, ForwardCheck>();
  readonly #touched = new Set<string>();
  readonly #http = new HttpAgent({ keepAlive: true });
  readonly #https = new HttpsAgent({ keepAlive: true });
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  constructor(opts: McpClusterOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Forgets the sessions a previous run of this node held (they died with its memory), then keeps the table tidy. */
  async start(): Promise<void> {
    await deleteNodeMcpSessions(this.#o.db, this.#o.nodeId);
    this.#timer = setInterval(() => {
      this.#flushing ??= this.#flush().finally(() => (this.#flushing = undefined));
    }, this.#o.flushMs ?? 60_000);
    this.#timer.unref();
  }

  /** After the sessions ended: this node's rows go, so nobody forwards to it any more. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#flushing;
    // Destroying the agents cuts the relays in flight: a relayed GET stream never ends by
    // itself, and the server's close would wait on it (the client reconnects elsewhere).
    this.#http.destroy();
    this.#https.destroy();
    await deleteNodeMcpSessions(this.#o.db, this.#o.nodeId).catch((err: unknown) =>
      this.#o.logger.warn({ err }, 'mcp: removing this node\'s session rows failed'),
    );
  }

  async opened(sessionId: string, principal: string | null): Promise<void> {
    await recordMcpSession(this.#o.db, { sessionId, nodeId: this.#o.nodeId, principalHash: principalHash(principal), now: this.#now() });
  }

  used(sessionId: string): void {
    this.#touched.add(sessionId);
  }

  async closed(sessionId: string): Promise<void> {
    this.#touched.delete(sessionId);
    try {
      await deleteMcpSessions(this.#o.db, this.#o.nodeId, [sessionId]);
    } catch (err) {
      this.#o.logger.warn({ err, session_id: sessionId }, 'mcp: removing an ended session\'s row failed');
    }
  }

  async #flush(): Promise<void> {
    const { db, nodeId, staleAfterMs } = this.#o;
    const ids = [...this.#touched];
    this.#touched.clear();
    try {
      const now = this.#now();
      await touchMcpSessions(db, nodeId, ids, now);
      await forgetMcpSessionsOfDeadNodes(db, now - staleAfterMs);
    } catch (err) {
      this.#o.logger.warn({ err }, 'mcp: recording session use failed');
    }
  }

  check(req: IncomingMessage): ForwardCheck {
    const known = this.#checked.get(req);
    if (known !== undefined) return known;
    const result = this.#verify(req);
    this.#checked.set(req, result);
    if (result === 'invalid') this.#o.metrics?.mcpForward('refused');
    return result;
  }

  #verify(req: IncomingMessage): ForwardCheck {
    const h = req.headers;
    if (!posesAsForward(h)) return 'none';
    const from = one(h[FORWARD_HEADERS.from]);
    const to = one(h[FORWARD_HEADERS.to]);
    const atText = one(h[FORWARD_HEADERS.at]);
    const bodySha256 = one(h[FORWARD_HEADERS.body]);
    const signature = one(h[FORWARD_HEADERS.signature]);
    const sessionId = one(h['mcp-session-id']);
    if (from === undefined || to === undefined || atText === undefined || bodySha256 === undefined || signature === undefined || sessionId === undefined) {
      return 'invalid';
    }
    const at = Number(atText);
    if (to !== this.#o.nodeId || from === this.#o.nodeId || !/^\d{1,16}$/.test(atText) || Math.abs(this.#now() - at) > FORWARD_MAX_SKEW_MS) return 'invalid';
    const expected = forwardSignature(this.#o.key, {
      from,
      to,
      at,
      method: req.method ?? '',
      sessionId,
      authorization: one(h.authorization),
      bodySha256,
    });
    return sameHex(signature, expected) ? 'valid' : 'invalid';
  }

  bodyMatches(req: IncomingMessage, body: unknown): boolean {
    const claimed = one(req.headers[FORWARD_HEADERS.body]) ?? '';
    const ok = sameHex(claimed, sha256(forwardBody(body) ?? Buffer.alloc(0)));
    if (!ok) this.#o.metrics?.mcpForward('refused');
    return ok;
  }

  async forward(req: IncomingMessage, res: ServerResponse, body: unknown, sessionId: string, caller: McpCaller): Promise<boolean> {
    const { db, nodeId, staleAfterMs } = this.#o;
    const holder = await findMcpSessionHolder(db, sessionId, this.#now() - staleAfterMs);
    if (!holder || holder.nodeId === nodeId) return false;
    // The holder checks the binding too; checked here first, a request it would refuse costs no hop.
    const mine = principalHash(caller.principal);
    if (mine === null || holder.principalHash === null ? mine !== holder.principalHash : !sameHex(mine, holder.principalHash)) return false;
    const outcome = await this.#relay(req, res, body, sessionId, holder.nodeId, holder.url);
    this.#o.metrics?.mcpForward(outcome);
    if (outcome === 'holder_unreachable') {
      this.#o.logger.warn({ session_id: sessionId, holder: holder.nodeId }, 'mcp: the node holding a session did not answer; the client is told to start a new one');
      return false;
    }
    return true;
  }

  #relay(req: IncomingMessage, res: ServerResponse, body: unknown, sessionId: string, holderId: string, holderUrl: string): Promise<McpForwardOutcome> {
    const target = new URL('/mcp', holderUrl);
    const method = req.method ?? 'GET';
    const payload = forwardBody(body);
    const headers: Record<string, string | string[] | number> = {};
    for (const name of PASSED_HEADERS) {
      const value = req.headers[name];
      if (value !== undefined) headers[name] = value;
    }
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    Object.assign(
      headers,
      forwardHeaders(this.#o.key, {
        from: this.#o.nodeId,
        to: holderId,
        at: this.#now(),
        method,
        sessionId,
        authorization: one(req.headers.authorization),
        bodySha256: sha256(payload ?? Buffer.alloc(0)),
      }),
    );
    const https = target.protocol === 'https:';
    const send = https ? httpsRequest : httpRequest;
    const connectTimeoutMs = this.#o.connectTimeoutMs ?? 5_000;
    // Resolves once the holder answered (its headers are relayed, its body streams on) or could not be reached.
    return new Promise((resolve) => {
      let answered = false;
      const upstream = send(target, { method, headers, agent: https ? this.#https : this.#http }, (answer) => {
        answered = true;
        const out: OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries<string | string[] | undefined>(answer.headers)) {
          if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
        }
        res.writeHead(answer.statusCode ?? 502, out);
        // An SSE answer's first event may be a while coming: the client has the headers now.
        res.flushHeaders();
        answer.on('error', () => res.destroy());
        answer.on('aborted', () => res.destroy());
        answer.pipe(res);
        resolve('forwarded');
      });
      upstream.on('socket', (socket) => {
        if (!socket.connecting) return;
        socket.setTimeout(connectTimeoutMs, () => upstream.destroy(new Error(`connecting to ${target.origin} timed out`)));
        socket.once('connect', () => socket.setTimeout(0));
      });
      upstream.on('error', () => {
        if (answered) res.destroy();
        else resolve('holder_unreachable');
      });
      // The client went away (or the answer is complete): the holder's side goes too.
      res.on('close', () => {
        if (!res.writableFinished) upstream.destroy();
      });
      upstream.end(payload);
    });
  }
}

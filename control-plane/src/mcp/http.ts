import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { createMcpServer } from './server.ts';
import type { McpServerOptions } from './server.ts';
import { posesAsForward } from './cluster.ts';
import type { McpSessionDirectory } from './cluster.ts';
import { SessionTransport } from './session-transport.ts';

/**
 * Session mode, chosen over stateless: a cancellation (`notifications/cancelled`)
 * and later messages must reach the server that runs the call, which in stateless
 * mode is a throw-away instance per POST. Auth is still per request: every tool call
 * uses the Authorization header of the POST carrying it.
 *
 * Sessions are bounded so that nobody without a key can push out a user's session:
 * those opened without a valid key live in their own small pool and only ever evict
 * each other; a key holds at most `maxSessionsPerKey` (its own oldest goes first);
 * over `maxSessions` in all, the key holding the most gives up its oldest. Sessions
 * expire when idle, and unknown ids get 404 so clients re-initialise.
 *
 * With several processes (`directory`, see cluster.ts) each session is recorded as held
 * here, and a request for a session held by another live process is relayed to it.
 */
export interface McpHttpOptions extends McpServerOptions {
  /** Sessions of valid keys, all keys together. */
  maxSessions?: number;
  /** Sessions opened without a valid key. */
  maxAnonymousSessions?: number;
  maxSessionsPerKey?: number;
  sessionIdleMs?: number;
  /** Idle time after which a session without a valid key ends. */
  anonymousIdleMs?: number;
  /** Host names (no port) accepted in the Host header; undefined = no check. A function is asked per request. */
  allowedHosts?: readonly string[] | (() => readonly string[] | undefined);
  /** Origins accepted when a browser sends one; undefined = same as allowedHosts. */
  allowedOrigins?: readonly string[];
  maxBodyBytes?: number;
  /** Several processes on one database: where sessions are recorded and found. */
  directory?: McpSessionDirectory;
}

/** Who sends a request, as far as sessions are concerned. */
export interface McpCaller {
  /** The valid API key the request carries; null without one. Decides the pool a new session goes to. */
  keyId: string | null;
  /**
   * The credential a session is bound to: every later request on the session must
   * carry the same (a key id, or a hash of the header); null = no credential.
   */
  principal: string | null;
}

const ANONYMOUS: McpCaller = { keyId: null, principal: null };

interface Session {
  id: string;
  transport: SessionTransport;
  server: McpServer;
  keyId: string | null;
  principal: string | null;
  lastUsed: number;
}

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Host names a listener accepts by default: loopback names when it listens on loopback. */
export function defaultAllowedHosts(listenHost: string, publicUrl?: string): string[] | undefined {
  if (!isLoopbackHost(listenHost)) return undefined;
  const hosts = new Set(LOOPBACK_HOSTS);
  if (!LOOPBACK_HOSTS.includes(listenHost)) hosts.add(listenHost);
  if (publicUrl) hosts.add(new URL(publicUrl).hostname);
  return [...hosts];
}

function hostnameOf(hostHeader: string): string {
  try {
    return new URL(`http://${hostHeader}`).hostname;
  } catch {
    return '';
  }
}

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

export class McpHttpHandler {
  readonly #opts: McpHttpOptions;
  // Each map is kept in least-recently-used order: a used session is moved to the end.
  readonly #anonymous = new Map<string, Session>();
  readonly #keyed = new Map<string, Session>();
  readonly #byKey = new Map<string, Map<string, Session>>();
  readonly #sweeper: NodeJS.Timeout;
  #lastHost: { header: string; name: string } | undefined;

  constructor(opts: McpHttpOptions) {
    this.#opts = opts;
    const idle = opts.sessionIdleMs ?? 30 * 60_000;
    const anonymousIdle = Math.min(idle, opts.anonymousIdleMs ?? 5 * 60_000);
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      this.#sweep(this.#anonymous, now - anonymousIdle);
      this.#sweep(this.#keyed, now - idle);
    }, Math.min(anonymousIdle, 60_000));
    this.#sweeper.unref();
  }

  get sessionCount(): number {
    return this.#anonymous.size + this.#keyed.size;
  }

  /** DNS-rebinding protection: a page on another origin must not drive a loopback server. */
  #rebindingRefusal(req: IncomingMessage): string | undefined {
    const option = this.#opts.allowedHosts;
    const hosts = typeof option === 'function' ? option() : option;
    if (hosts === undefined) return undefined;
    const hostHeader = req.headers.host ?? '';
    // Clients send the same Host on every request: its parse is kept for the next one.
    if (this.#lastHost?.header !== hostHeader) this.#lastHost = { header: hostHeader, name: hostnameOf(hostHeader) };
    const host = this.#lastHost.name;
    if (!hosts.includes(host)) return `Host ${JSON.stringify(req.headers.host ?? '')} is not allowed`;
    const origin = req.headers.origin;
    if (origin !== undefined) {
      const allowed = this.#opts.allowedOrigins;
      let ok: boolean;
      try {
        const o = new URL(origin);
        ok = allowed !== undefined ? allowed.includes(o.origin) : hosts.includes(o.hostname);
      } catch {
        ok = false;
      }
      if (!ok) return `Origin ${JSON.stringify(origin)} is not allowed`;
    }
    return undefined;
  }

  /**
   * Handles POST, GET and DELETE on the MCP endpoint. `body` is the parsed JSON body,
   * if any; `caller` says which key the request carries (none when not given).
   */
  async handle(req: IncomingMessage, res: ServerResponse, body?: unknown, caller: McpCaller = ANONYMOUS): Promise<void> {
    const directory = this.#opts.directory;
    // Another process relaying a request for a session held here; anything posing as one without its signature is refused.
    const forward = directory ? directory.check(req) : posesAsForward(req.headers) ? 'invalid' : 'none';
    if (forward === 'invalid' || (forward === 'valid' && directory?.bodyMatches(req, body) !== true)) {
      return jsonRpcError(res, 403, -32000, 'Forbidden: the request poses as a forward from another control plane but its signature does not verify.');
    }
    // The process that took the request checked its Host and Origin; here the Host is the internal one.
    const refusal = forward === 'valid' ? undefined : this.#rebindingRefusal(req);
    if (refusal) return jsonRpcError(res, 403, -32000, `Forbidden: ${refusal}`);

    const sid = req.headers['mcp-session-id'];
    const sessionId = Array.isArray(sid) ? sid[0] : sid;
    if (sessionId !== undefined) {
      const session = this.#anonymous.get(sessionId) ?? this.#keyed.get(sessionId);
      // Held by another process: relayed there (never a second time: a forward is answered here or not at all).
      if (!session && forward === 'none' && directory) {
        let relayed: boolean;
        try {
          relayed = await directory.forward(req, res, body, sessionId, caller);
        } catch {
          return jsonRpcError(res, 503, -32000, 'Service unavailable: the session could not be looked up; try again.');
        }
        if (relayed) return;
      }
      // A session answers only to the credential that opened it; to anyone else it does not exist.
      if (!session || session.principal !== caller.principal) {
        return jsonRpcError(res, 404, -32001, 'Session not found; initialize a new session.');
      }
      this.#touch(session);
      directory?.used(session.id);
      return session.transport.handleRequest(req, res, body);
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) {
      return jsonRpcError(res, 400, -32000, 'Bad Request: no session id; send initialize first.');
    }
    const id = randomUUID();
    const server = createMcpServer(this.#opts, req.socket.remoteAddress);
    const transport = new SessionTransport({
      sessionIdGenerator: () => id,
      maxRequestBodySize: this.#opts.maxBodyBytes ?? 1024 * 1024,
      // Awaited before the DELETE is answered: once it is, no process finds the session.
      onsessionclosed: (closed) => this.#drop(closed),
    });
    transport.onclose = () => void this.#drop(id);
    // Admitted (and room made) before anything is awaited, so concurrent initialize
    // calls cannot all pass the bounds at once.
    this.#admit({ id, transport, server, keyId: caller.keyId, principal: caller.principal, lastUsed: Date.now() });
    try {
      // Recorded before the client learns the id, so its next request finds the session whichever process it reaches.
      if (directory) {
        try {
          await directory.opened(id, caller.principal);
        } catch {
          return jsonRpcError(res, 503, -32000, 'Service unavailable: the session could not be recorded; try again.');
        }
      }
      await server.connect(transport);
      await transport.sdk.handleRequest(req, res, body);
    } finally {
      if (transport.sessionId === undefined) void this.#drop(id);
    }
  }

  #admit(session: Session): void {
    const { keyId } = session;
    if (keyId === null) {
      const max = Math.max(1, this.#opts.maxAnonymousSessions ?? 100);
      while (this.#anonymous.size >= max && this.#dropOldest(this.#anonymous));
      this.#anonymous.set(session.id, session);
      return;
    }
    const perKey = Math.max(1, this.#opts.maxSessionsPerKey ?? 32);
    while ((this.#byKey.get(keyId)?.size ?? 0) >= perKey && this.#dropOldest(this.#byKey.get(keyId)));
    const max = Math.max(1, this.#opts.maxSessions ?? 1000);
    while (this.#keyed.size >= max && this.#dropOldest(this.#largestKey()));
    this.#keyed.set(session.id, session);
    const mine = this.#byKey.get(keyId) ?? new Map<string, Session>();
    mine.set(session.id, session);
    this.#byKey.set(keyId, mine);
  }

  /** The sessions of the key that holds the most. */
  #largestKey(): Map<string, Session> | undefined {
    let largest: Map<string, Session> | undefined;
    for (const sessions of this.#byKey.values()) if (!largest || sessions.size > largest.size) largest = sessions;
    return largest;
  }

  /** Ends the least recently used of `sessions`; false when there was none (so no loop can spin). */
  #dropOldest(sessions: Map<string, Session> | undefined): boolean {
    const oldest = sessions?.keys().next().value;
    if (oldest === undefined) return false;
    void this.#drop(oldest);
    sessions?.delete(oldest); // already gone; makes progress certain whatever the other maps hold
    return true;
  }

  #touch(session: Session): void {
    session.lastUsed = Date.now();
    const maps = session.keyId === null ? [this.#anonymous] : [this.#keyed, this.#byKey.get(session.keyId)];
    for (const map of maps) {
      if (map?.delete(session.id)) map.set(session.id, session);
    }
  }

  #sweep(sessions: Map<string, Session>, olderThan: number): void {
    // Oldest first: stop at the first one still in use.
    for (const s of [...sessions.values()]) {
      if (s.lastUsed >= olderThan) return;
      void this.#drop(s.id);
    }
  }

  /** Ends a session; resolves once its record is gone too (with several processes). */
  #drop(id: string): Promise<void> {
    const s = this.#anonymous.get(id) ?? this.#keyed.get(id);
    if (!s) return Promise.resolve();
    this.#anonymous.delete(id);
    this.#keyed.delete(id);
    if (s.keyId !== null) {
      const mine = this.#byKey.get(s.keyId);
      mine?.delete(id);
      if (mine?.size === 0) this.#byKey.delete(s.keyId);
    }
    void s.server.close().catch(() => undefined);
    return this.#opts.directory?.closed(id) ?? Promise.resolve();
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    const all = [...this.#anonymous.values(), ...this.#keyed.values()];
    this.#anonymous.clear();
    this.#keyed.clear();
    this.#byKey.clear();
    await Promise.allSettled(all.map((s) => s.server.close()));
  }
}

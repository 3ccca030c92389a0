import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { createMcpServer } from './server.ts';
import type { McpServerOptions } from './server.ts';

/**
 * Session mode, chosen over stateless: a cancellation (`notifications/cancelled`)
 * and later messages must reach the server that runs the call, which in stateless
 * mode is a throw-away instance per POST. Sessions are bounded in number, expire
 * when idle, and unknown ids get 404 so clients re-initialise. Auth is still per
 * request: every tool call uses the Authorization header of the POST carrying it.
 */
export interface McpHttpOptions extends McpServerOptions {
  maxSessions?: number;
  sessionIdleMs?: number;
  /** Host names (no port) accepted in the Host header; undefined = no check. A function is asked per request. */
  allowedHosts?: readonly string[] | (() => readonly string[] | undefined);
  /** Origins accepted when a browser sends one; undefined = same as allowedHosts. */
  allowedOrigins?: readonly string[];
  maxBodyBytes?: number;
}

interface Session {
  transport: StreamableHTTPServerTransport;
  server: McpServer;
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
  readonly #sessions = new Map<string, Session>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(opts: McpHttpOptions) {
    this.#opts = opts;
    const idle = opts.sessionIdleMs ?? 30 * 60_000;
    this.#sweeper = setInterval(() => this.#sweep(Date.now() - idle), Math.min(idle, 60_000));
    this.#sweeper.unref();
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** DNS-rebinding protection: a page on another origin must not drive a loopback server. */
  #rebindingRefusal(req: IncomingMessage): string | undefined {
    const option = this.#opts.allowedHosts;
    const hosts = typeof option === 'function' ? option() : option;
    if (hosts === undefined) return undefined;
    const host = hostnameOf(req.headers.host ?? '');
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

  /** Handles POST, GET and DELETE on the MCP endpoint. `body` is the parsed JSON body, if any. */
  async handle(req: IncomingMessage, res: ServerResponse, body?: unknown): Promise<void> {
    const refusal = this.#rebindingRefusal(req);
    if (refusal) return jsonRpcError(res, 403, -32000, `Forbidden: ${refusal}`);

    const sid = req.headers['mcp-session-id'];
    const sessionId = Array.isArray(sid) ? sid[0] : sid;
    if (sessionId !== undefined) {
      const session = this.#sessions.get(sessionId);
      if (!session) return jsonRpcError(res, 404, -32001, 'Session not found; initialize a new session.');
      session.lastUsed = Date.now();
      return session.transport.handleRequest(req, res, body);
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) {
      return jsonRpcError(res, 400, -32000, 'Bad Request: no session id; send initialize first.');
    }
    this.#makeRoom();
    const clientAddress = req.socket.remoteAddress;
    const server = createMcpServer(this.#opts, clientAddress);
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      maxRequestBodySize: this.#opts.maxBodyBytes ?? 1024 * 1024,
      onsessioninitialized: (id) => {
        this.#sessions.set(id, { transport, server, lastUsed: Date.now() });
      },
      onsessionclosed: (id) => {
        this.#drop(id);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId !== undefined) this.#sessions.delete(transport.sessionId);
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  }

  /** Over the bound, the least recently used session goes first. */
  #makeRoom(): void {
    const max = this.#opts.maxSessions ?? 1000;
    while (this.#sessions.size >= max) {
      let oldest: [string, Session] | undefined;
      for (const entry of this.#sessions) if (!oldest || entry[1].lastUsed < oldest[1].lastUsed) oldest = entry;
      if (!oldest) return;
      this.#drop(oldest[0]);
    }
  }

  #sweep(olderThan: number): void {
    for (const [id, s] of this.#sessions) if (s.lastUsed < olderThan) this.#drop(id);
  }

  #drop(id: string): void {
    const s = this.#sessions.get(id);
    if (!s) return;
    this.#sessions.delete(id);
    void s.server.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    await Promise.allSettled(all.map((s) => s.server.close()));
  }
}

import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { errorBody } from '@vmkit/protocol';
import { dispatchInProcess } from './in-process.ts';
import type { Routing } from './in-process.ts';

/**
 * How MCP tools reach the REST API. Every tool call is a REST call made with the
 * caller's own Authorization header, so REST and MCP share one code path for auth,
 * scopes, rate limits and the audit trail.
 */
export interface GatewayRequest {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  authorization: string | undefined;
  /** The MCP tool on whose behalf the call is made; lands in the audit row. */
  tool: string;
  body?: unknown;
  /** Address of the MCP client, recorded as the audit row's client address. */
  clientAddress?: string | undefined;
  signal?: AbortSignal | undefined;
}

export interface GatewayResponse {
  status: number;
  body: unknown;
  headers: Record<string, string | undefined>;
}

export interface RestGateway {
  request(req: GatewayRequest): Promise<GatewayResponse>;
}

/** The headers that mark a REST call as made by an MCP tool. */
export function mcpHeaders(req: GatewayRequest): Record<string, string> {
  const headers: Record<string, string> = { 'x-vmkit-channel': 'mcp', 'x-vmkit-tool': req.tool, accept: 'application/json' };
  if (req.authorization !== undefined) headers.authorization = req.authorization;
  if (req.body !== undefined) headers['content-type'] = 'application/json';
  return headers;
}

function parseBody(text: string): unknown {
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return errorBody('internal', `The control plane answered with a non-JSON body: ${text.slice(0, 200)}`);
  }
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('The tool call was cancelled.');
}

/** Something with Fastify's `routing` entry point (a Fastify app), without importing Fastify's types here. */
export interface Routable {
  readonly routing: (req: never, res: never) => void;
}

/**
 * In-process: the embedded MCP endpoint hands each REST call to the same Fastify app's
 * router (in-process.ts), with the caller's Authorization header: the route's hooks run as
 * for any request, so auth, scopes, the rate limit and the audit row are the REST API's own.
 */
export class InProcessGateway implements RestGateway {
  readonly #routing: Routing;

  constructor(app: Routable) {
    // Fastify types it for Node's request and response; in-process.ts gives it the part of them it uses.
    this.#routing = app.routing as Routing;
  }

  async request(req: GatewayRequest): Promise<GatewayResponse> {
    const headers = mcpHeaders(req);
    // Every HTTP/1.1 request names a host; this one never left the process.
    headers.host = 'localhost';
    const body = req.body === undefined ? undefined : JSON.stringify(req.body);
    if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
    // Resolved as an HTTP client (and inject) would: `..` segments and all.
    const url = new URL(req.path, 'http://localhost');
    const res = await dispatchInProcess(this.#routing, {
      method: req.method,
      url: url.pathname + url.search,
      headers,
      body,
      remoteAddress: req.clientAddress ?? '127.0.0.1',
    });
    const out: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(res.headers)) out[k] = v === undefined ? undefined : String(v);
    return { status: res.status, body: parseBody(res.body), headers: out };
  }
}

/**
 * Standalone: real HTTP to a remote control plane (as the hosted MCP server does), on
 * node:http with kept-alive connections. fetch (undici behind web streams, plus an
 * AbortSignal pair per call) cost the gateway more CPU than the MCP work around it.
 * Redirects are not followed: a control plane answers its API itself, and a 3xx comes
 * back as the failure it is instead of re-sending the key elsewhere.
 */
export class HttpGateway implements RestGateway {
  readonly #base: URL;
  readonly #timeoutMs: number;
  readonly #request: typeof httpRequest;
  readonly #agent: HttpAgent;

  constructor(baseUrl: string, timeoutMs = 65_000) {
    this.#base = new URL(baseUrl);
    this.#timeoutMs = timeoutMs;
    const https = this.#base.protocol === 'https:';
    this.#request = https ? httpsRequest : httpRequest;
    this.#agent = https ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  }

  request(req: GatewayRequest): Promise<GatewayResponse> {
    const url = new URL(req.path, this.#base);
    const headers = mcpHeaders(req);
    if (req.clientAddress !== undefined) headers['x-forwarded-for'] = req.clientAddress;
    const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
    if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
    const { signal } = req;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<GatewayResponse>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => fail(new Error(`The control plane did not answer within ${this.#timeoutMs} ms.`)), this.#timeoutMs);
      timer.unref();
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        return true;
      };
      const fail = (err: Error) => {
        if (!settle()) return;
        outgoing.destroy();
        reject(err);
      };
      const outgoing = this.#request(url, { method: req.method, headers, agent: this.#agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', fail);
        res.on('end', () => {
          if (!settle()) return;
          const out: Record<string, string | undefined> = {};
          for (const [k, v] of Object.entries(res.headers)) out[k] = Array.isArray(v) ? v.join(', ') : v;
          resolve({ status: res.statusCode ?? 0, body: parseBody(Buffer.concat(chunks).toString('utf8')), headers: out });
        });
      });
      outgoing.on('error', fail);
      const onAbort = () => fail(signal ? abortReason(signal) : new Error('The tool call was cancelled.'));
      signal?.addEventListener('abort', onAbort, { once: true });
      outgoing.end(payload);
    });
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.#agent.destroy();
  }
}

import { errorBody } from '@vmkit/protocol';

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

/** Something with Fastify's `inject`, without importing Fastify's types here. */
export interface Injectable {
  inject(opts: {
    method: GatewayRequest['method'];
    url: string;
    headers: Record<string, string>;
    payload?: string;
    remoteAddress?: string;
  }): Promise<{ statusCode: number; body: string; headers: Record<string, string | string[] | number | undefined> }>;
}

/** In-process: the embedded MCP endpoint calls the same Fastify app through `inject`. */
export class InjectGateway implements RestGateway {
  readonly #app: Injectable;

  constructor(app: Injectable) {
    this.#app = app;
  }

  async request(req: GatewayRequest): Promise<GatewayResponse> {
    const res = await this.#app.inject({
      method: req.method,
      url: req.path,
      headers: mcpHeaders(req),
      ...(req.body === undefined ? {} : { payload: JSON.stringify(req.body) }),
      ...(req.clientAddress === undefined ? {} : { remoteAddress: req.clientAddress }),
    });
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(res.headers)) headers[k] = v === undefined ? undefined : String(v);
    return { status: res.statusCode, body: parseBody(res.body), headers };
  }
}

/** Standalone: real HTTP to a remote control plane (as the hosted MCP server does). */
export class HttpGateway implements RestGateway {
  readonly #base: URL;
  readonly #timeoutMs: number;

  constructor(baseUrl: string, timeoutMs = 65_000) {
    this.#base = new URL(baseUrl);
    this.#timeoutMs = timeoutMs;
  }

  async request(req: GatewayRequest): Promise<GatewayResponse> {
    const url = new URL(req.path, this.#base);
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    const headers = mcpHeaders(req);
    if (req.clientAddress !== undefined) headers['x-forwarded-for'] = req.clientAddress;
    const res = await fetch(url, {
      method: req.method,
      headers,
      ...(req.body === undefined ? {} : { body: JSON.stringify(req.body) }),
      signal,
    });
    const out: Record<string, string | undefined> = {};
    res.headers.forEach((v, k) => {
      out[k] = v;
    });
    return { status: res.status, body: parseBody(await res.text()), headers: out };
  }
}

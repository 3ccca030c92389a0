import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorBody } from '@vmkit/protocol';
import { HttpGateway } from './gateway.ts';
import { McpHttpHandler, defaultAllowedHosts } from './http.ts';
import type { McpCaller } from './http.ts';
import { TOOLS } from './tools/index.ts';

export interface StandaloneOptions {
  /** Base URL of the control plane whose REST API the tools call. */
  gateway: string;
  host: string;
  port: number;
  maxWaitMs?: number;
  /** Extra host names accepted in the Host header (e.g. the public name behind a proxy). */
  allowedHosts?: string[];
}

export interface StandaloneMcp {
  url: string;
  close(): Promise<void>;
}

/**
 * The hosted shape: MCP served at `/`, every tool call forwarded over real HTTP to a
 * remote control plane with the caller's own Bearer key.
 */
export async function startStandaloneMcp(opts: StandaloneOptions): Promise<StandaloneMcp> {
  const loopbackHosts = defaultAllowedHosts(opts.host);
  const allowedHosts = loopbackHosts || opts.allowedHosts ? [...(loopbackHosts ?? []), ...(opts.allowedHosts ?? [])] : undefined;
  const gateway = new HttpGateway(opts.gateway);
  const handler = new McpHttpHandler({
    gateway,
    tools: TOOLS,
    ...(opts.maxWaitMs === undefined ? {} : { maxWaitMs: opts.maxWaitMs }),
    ...(allowedHosts === undefined ? {} : { allowedHosts }),
    // This process cannot tell a valid key from a made-up one (the control plane
    // checks keys on each tool call), so every session is in the one LRU pool; a
    // session is still bound to the Authorization header that opened it.
    maxAnonymousSessions: 1000,
  });
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    // Clients ask for / (or /mcp) every time: parse only what is not that.
    const path = url === '/' || url === '/mcp' ? url : new URL(url, 'http://x').pathname;
    if (path !== '/' && path !== '/mcp') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(errorBody('not_found', 'MCP is served at /.')));
      return;
    }
    if (req.method !== 'POST' && req.method !== 'GET' && req.method !== 'DELETE') {
      res.writeHead(405, { allow: 'GET, POST, DELETE', 'content-type': 'application/json' });
      res.end(JSON.stringify(errorBody('invalid_request', 'Use POST, GET or DELETE.')));
      return;
    }
    readJson(req, 1024 * 1024)
      .then((body) => handler.handle(req, res, body, callerOf(req)))
      .catch((err: unknown) => {
        if (res.headersSent) return res.destroy();
        const tooBig = err instanceof BodyTooLarge;
        res.writeHead(tooBig ? 413 : 400, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            jsonrpc: '2.0',
            error: { code: -32700, message: tooBig ? 'Request body too large.' : 'Parse error: the body is not JSON.' },
            id: null,
          }),
        );
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${hostForUrl}:${port}/`,
    close: async () => {
      await handler.close();
      gateway.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function callerOf(req: IncomingMessage): McpCaller {
  const auth = req.headers.authorization;
  return { keyId: null, principal: auth === undefined ? null : createHash('sha256').update(auth).digest('hex') };
}

class BodyTooLarge extends Error {}

/** The body as JSON (undefined for GET and DELETE); events, not `for await`: an async iterator per request cost more than the read. */
function readJson(req: IncomingMessage, max: number): Promise<unknown> {
  if (req.method !== 'POST') return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > max) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.once('error', reject);
    req.once('end', () => {
      if (size > max) return;
      try {
        resolve(JSON.parse((chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)).toString('utf8')) as unknown);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

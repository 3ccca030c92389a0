import type { IncomingMessage, ServerResponse } from 'node:http';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { StreamableHTTPServerTransportOptions } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js';
import { isJsonContentType } from '@modelcontextprotocol/sdk/shared/mediaType.js';
import { SUPPORTED_PROTOCOL_VERSIONS } from '@modelcontextprotocol/sdk/types.js';
import type { JSONRPCMessage, JSONRPCRequest, MessageExtraInfo, RequestId } from '@modelcontextprotocol/sdk/types.js';

/**
 * One MCP session's transport: the SDK's Streamable HTTP transport, plus a direct JSON
 * answer for the plain case.
 *
 * The Streamable HTTP spec lets the server answer a POST carrying a request either as an
 * SSE stream or as one JSON object. The SDK's transport picks one for the whole session
 * and goes through web streams and a Node/web conversion for every request, which costs
 * as much CPU as the REST call a tool makes. A POST that carries one request, asks for no
 * progress (no `_meta`), and passes the checks the SDK would make (Accept, Content-Type,
 * protocol version, a well-formed JSON-RPC request) is handed to the same SDK server here
 * and its response written as `application/json` in one piece. Everything else (initialize,
 * notifications, batches, requests that want progress, the GET stream, DELETE, and anything
 * the SDK would refuse) goes to the SDK's transport as before, with its own answers.
 */
export class SessionTransport implements Transport {
  readonly sdk: StreamableHTTPServerTransport;
  onclose?: (() => void) | undefined;
  onerror?: ((error: Error) => void) | undefined;
  onmessage?: (<T extends JSONRPCMessage>(message: T, extra?: MessageExtraInfo) => void) | undefined;
  /** Requests answered here, by id: where their response goes. */
  readonly #direct = new Map<RequestId, (response: JSONRPCMessage) => void>();
  /** Direct requests whose client went away: their late response is dropped. */
  readonly #abandoned = new Set<RequestId>();

  constructor(options: StreamableHTTPServerTransportOptions) {
    this.sdk = new StreamableHTTPServerTransport(options);
  }

  get sessionId(): string | undefined {
    return this.sdk.sessionId;
  }

  async start(): Promise<void> {
    this.sdk.onmessage = (message, extra) => this.onmessage?.(message, extra);
    this.sdk.onclose = () => this.onclose?.();
    this.sdk.onerror = (error) => this.onerror?.(error);
    await this.sdk.start();
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    // A response (a request or notification has a method) to a request answered here?
    const id = 'method' in message ? undefined : message.id;
    if (id !== undefined) {
      const answer = this.#direct.get(id);
      if (answer) {
        this.#direct.delete(id);
        return answer(message);
      }
      if (this.#abandoned.delete(id)) return;
    }
    const related = options?.relatedRequestId;
    if (related !== undefined && (this.#direct.has(related) || this.#abandoned.has(related))) {
      // A message about a request answered as JSON has no stream of its own: the session's standing GET stream takes it, if any.
      return this.sdk.send(message);
    }
    return this.sdk.send(message, options);
  }

  async close(): Promise<void> {
    this.#direct.clear();
    this.#abandoned.clear();
    await this.sdk.close();
  }

  /** Handles a request of this (initialised) session: answered here as JSON when it can be, else by the SDK's transport. */
  async handleRequest(req: IncomingMessage, res: ServerResponse, body?: unknown): Promise<void> {
    const request = req.method === 'POST' ? this.#plainRequest(req, body) : undefined;
    if (!request) return this.sdk.handleRequest(req, res, body);
    const sessionId = this.sdk.sessionId;
    await new Promise<void>((resolve) => {
      const onClose = () => {
        if (this.#direct.delete(request.id)) this.#abandoned.add(request.id);
        resolve();
      };
      this.#direct.set(request.id, (response) => {
        res.off('close', onClose);
        const text = JSON.stringify(response);
        // A length instead of chunked framing: the whole answer is one write.
        const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
        if (sessionId !== undefined) headers['mcp-session-id'] = sessionId;
        res.writeHead(200, headers);
        res.end(text);
        resolve();
      });
      res.once('close', onClose);
      this.onmessage?.(request, { requestInfo: { headers: req.headers } });
    });
  }

  /**
   * The body as one JSON-RPC request that can be answered as JSON, or undefined. Only
   * what the SDK's transport would accept as it is: a request it would refuse or treat
   * otherwise is left to it.
   */
  #plainRequest(req: IncomingMessage, body: unknown): JSONRPCRequest | undefined {
    if (this.sdk.sessionId === undefined) return undefined;
    const accept = req.headers.accept;
    if (accept === undefined || !accept.includes('application/json') || !accept.includes('text/event-stream')) return undefined;
    if (!isJsonContentType(req.headers['content-type'])) return undefined;
    const version = req.headers['mcp-protocol-version'];
    if (version !== undefined && (typeof version !== 'string' || !SUPPORTED_PROTOCOL_VERSIONS.includes(version))) return undefined;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
    const m = body as Record<string, unknown>;
    for (const key in m) if (key !== 'jsonrpc' && key !== 'id' && key !== 'method' && key !== 'params') return undefined;
    if (m.jsonrpc !== '2.0' || typeof m.method !== 'string' || m.method === 'initialize') return undefined;
    const id = m.id;
    if (!(typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)))) return undefined;
    if (this.#direct.has(id) || this.#abandoned.has(id)) return undefined;
    const params = m.params;
    if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params) || '_meta' in params)) return undefined;
    return body as JSONRPCRequest;
  }
}

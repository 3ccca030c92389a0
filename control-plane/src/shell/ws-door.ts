import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { RawData, WebSocket } from 'ws';
import type { ErrorKey } from '@vmkit/protocol';
import type { Db } from '../db/index.ts';
import { insertAudit } from '../db/audit.ts';
import type { UpgradeRateLimit } from '../auth/rate-limit.ts';
import { authenticateUpgrade } from '../auth/upgrade-auth.ts';
import { ApiError, isApiError } from '../errors.ts';
import { OperatorControl, SHELL_PATH, ShellQuery } from './operator-wire.ts';
import type { ServerControl } from './operator-wire.ts';
import type { ShellSession, ShellSessionService } from './session.ts';

/** Largest message an operator may send: keystrokes and pastes, not file transfers. */
const MAX_MESSAGE = 1024 * 1024;
const ROUTE = '/api/instances/:id/shell';

function refuse(socket: Duplex, err: ApiError, requestId: string, retryAfterS?: number): void {
  const body = JSON.stringify(err.toBody());
  const auth = err.key === 'unauthorized' ? 'WWW-Authenticate: Bearer realm="vmkit"\r\n' : '';
  const retry = retryAfterS === undefined ? '' : `Retry-After: ${retryAfterS}\r\n`;
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `X-Request-Id: ${requestId}\r\n${auth}${retry}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

function describe(issues: { path: PropertyKey[]; message: string; code?: string; keys?: string[] }[]): string {
  const first = issues[0];
  if (!first) return 'Invalid request.';
  if (first.code === 'unrecognized_keys' && first.keys) {
    return `Invalid request: query has unknown field${first.keys.length > 1 ? 's' : ''} ${first.keys.map((k) => `"${k.slice(0, 40)}"`).join(', ')}.`;
  }
  return `Invalid request: query.${first.path.map(String).join('.')}: ${first.message}.`;
}

export interface WebSocketDoorOptions {
  db: Db;
  sessions: ShellSessionService;
  now: () => number;
  clientAddress: (req: IncomingMessage) => string;
  /** The REST rate limits (per key, else per address); every upgrade costs one request. */
  rateLimit: UpgradeRateLimit;
  logger: { debug(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

/**
 * `GET /api/instances/{id}/shell` as a WebSocket: the key is checked and the session
 * opened before the upgrade is answered, so a refusal is an ordinary HTTP error with a
 * JSON body (and an audit row). Then bytes flow with backpressure both ways: the
 * operator's socket is paused while the channel's window is full, and VM output is
 * acknowledged to the agent only once it is written to the operator's socket.
 */
export class WebSocketDoor {
  readonly #o: WebSocketDoorOptions;
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE, perMessageDeflate: false });

  constructor(opts: WebSocketDoorOptions) {
    this.#o = opts;
  }

  static readonly path = SHELL_PATH;

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    void this.#upgrade(req, socket, head).catch((err: unknown) => {
      this.#o.logger.warn({ err }, 'shell upgrade failed');
      if (!socket.destroyed) refuse(socket, new ApiError('internal'), 'none');
    });
  }

  close(): void {
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
  }

  async #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const requestId = randomUUID();
    const url = new URL(req.url ?? '/', 'http://x');
    let instance: string;
    try {
      instance = decodeURIComponent(SHELL_PATH.exec(url.pathname)?.[1] ?? '');
    } catch {
      refuse(socket, new ApiError('invalid_request', 'Invalid request: the instance in the path is not valid percent-encoding.'), requestId);
      return;
    }
    const clientAddress = this.#o.clientAddress(req);
    // A bearer key, or the dashboard's session cookie from a page of this server.
    const check = await authenticateUpgrade(this.#o.db, req, this.#o.now());
    // As for REST: the key is resolved first, so a valid key spends its own budget and
    // anything else (no key, a made-up one, a revoked one) that of its address.
    const limited = await this.#o.rateLimit({ keyId: check.ok ? check.key.id : null, ip: clientAddress });
    if (limited) {
      const known = check.ok ? check.key : (check.key ?? null);
      if (known) await this.#auditRefusal(known.workspaceId, known.id, instance, limited.error.status, limited.error.key, requestId, clientAddress);
      refuse(socket, limited.error, requestId, limited.retryAfterS);
      return;
    }
    if (!check.ok) {
      if (check.key) await this.#auditRefusal(check.key.workspaceId, check.key.id, instance, check.error.status, check.error.key, requestId, clientAddress);
      refuse(socket, check.error, requestId);
      return;
    }
    const { key } = check;
    const query = ShellQuery.safeParse(Object.fromEntries(url.searchParams));
    if (!query.success) {
      const err = new ApiError('invalid_request', describe(query.error.issues));
      await this.#auditRefusal(key.workspaceId, key.id, instance, err.status, err.key, requestId, clientAddress);
      refuse(socket, err, requestId);
      return;
    }
    let session: ShellSession;
    try {
      session = await this.#o.sessions.open({
        caller: { workspaceId: key.workspaceId, keyId: key.id, scopes: key.scopes, clientAddress, ...(check.sessionHash !== undefined && { dashboardSessionHash: check.sessionHash }) },
        door: 'websocket',
        instance,
        cols: query.data.cols,
        rows: query.data.rows,
        term: query.data.term,
        ...(query.data.command !== undefined && { command: query.data.command }),
        ...(query.data.user !== undefined && { user: query.data.user }),
        method: 'GET',
        route: ROUTE,
        requestId,
      });
    } catch (err) {
      refuse(socket, isApiError(err) ? err : new ApiError('internal'), requestId);
      return;
    }
    if (socket.destroyed) {
      // The operator went away while the agent opened the PTY.
      void session.terminate('operator_closed');
      return;
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#relay(ws, session));
  }

  #relay(ws: WebSocket, session: ShellSession): void {
    const sendControl = (msg: ServerControl) => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
    };
    sendControl({ type: 'opened', session_id: session.id, instance_id: session.instanceId });
    session.onOutput((chunk, done) => {
      if (ws.readyState !== ws.OPEN) return done();
      // The callback runs once the frame is written to the socket: only then is credit returned.
      ws.send(chunk, { binary: true }, () => done());
    });
    session.onDrain(() => {
      if (ws.isPaused) ws.resume();
    });
    session.onEnd((end) => {
      sendControl({ type: 'exit', code: end.code, signal: end.signal, reason: end.reason, message: end.message });
      if (ws.readyState === ws.OPEN) ws.close(1000, end.reason.slice(0, 100));
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      // The server's binaryType is the default 'nodebuffer': a Buffer, or fragments of one.
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary) {
        if (!session.write(buf)) ws.pause();
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(buf.toString('utf8'));
      } catch {
        parsed = undefined;
      }
      const msg = OperatorControl.safeParse(parsed);
      if (!msg.success) {
        sendControl({ type: 'error', error: 'invalid_request', message: 'Invalid request: a text message must be {"type":"resize","cols","rows"} or {"type":"eof"}.' });
        return;
      }
      if (msg.data.type === 'resize') session.resize(msg.data.cols, msg.data.rows);
      else session.eof();
    });
    ws.on('close', () => {
      if (!session.ended) void session.terminate('operator_closed');
    });
    ws.on('error', (err) => this.#o.logger.debug({ err, session_id: session.id }, 'operator socket error'));
  }

  async #auditRefusal(
    workspaceId: string,
    keyId: string,
    instance: string,
    status: number,
    errorKey: ErrorKey,
    requestId: string,
    clientAddress: string,
  ): Promise<void> {
    await insertAudit(this.#o.db, {
      at: this.#o.now(),
      workspaceId,
      keyId,
      channel: 'shell',
      tool: null,
      action: 'shell.refused',
      method: 'GET',
      route: ROUTE,
      targetIds: { instance: instance.slice(0, 128), via: 'websocket' },
      status,
      errorKey,
      requestId,
      clientAddress,
    });
  }
}

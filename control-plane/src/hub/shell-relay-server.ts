/**
 * The holder's end of relayed shell channels: `GET /internal/shell-relay` as a
 * WebSocket (./shell-relay-wire.ts). An upgrade whose signature does not verify (or
 * that was seen before) is refused with 403 before any WebSocket exists, logged and
 * counted. A verified one sends the open request; this process opens the channel on
 * its own hub only (never relayed again) and pipes it both ways, acknowledging the
 * agent's output only as the front's credit for it comes back.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { SHELL_INITIAL_WINDOW, SHELL_MAX_DATA_BYTES, decodeShellFrame, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';
import { WebSocketServer } from 'ws';
import type { RawData, WebSocket } from 'ws';
import { isApiError } from '../errors.ts';
import type { ShellRelayLabel } from '../metrics/metrics.ts';
import type { ShellChannel, ShellExit, ShellOpener } from '../shell/channel.ts';
import { SHELL_RELAY_MAX_MESSAGE, SHELL_RELAY_MAX_SKEW_MS, relayOpenMessage, sameHex, sha256Hex, verifyRelayHeaders } from './shell-relay-wire.ts';
import type { RelayAnswer } from './shell-relay-wire.ts';


export interface ShellRelayServerOptions {
  nodeId: string;
  /** SecretBox.subkey(SHELL_RELAY_KEY_PURPOSE). */
  key: Buffer;
  /** This process's own hub opener: a relayed open is never relayed again. */
  local: ShellOpener;
  logger: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  metrics?: { shellRelay(label: ShellRelayLabel): void } | undefined;
  now?: () => number;
  /** How long a verified relay has to send its open request. */
  openMessageTimeoutMs?: number;
  /** Relay sockets are pinged this often; one that did not answer by the next ping is cut (its channel closed). */
  pingMs?: number;
}

function refuse(socket: Duplex): void {
  const body = JSON.stringify({ error: 'forbidden', message: 'The shell relay signature does not verify.' });
  socket.end(`HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

export class ShellRelayServer {
  readonly #o: ShellRelayServerOptions;
  readonly #now: () => number;
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: SHELL_RELAY_MAX_MESSAGE, perMessageDeflate: false });
  /** Signatures seen within the skew window: a captured relay cannot be played again. */
  readonly #seen = new Map<string, number>();

  constructor(opts: ShellRelayServerOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const now = this.#now();
    const check = verifyRelayHeaders(this.#o.key, this.#o.nodeId, req.headers, now);
    const replayed = check.ok && this.#seen.has(check.signature);
    if (!check.ok || replayed) {
      this.#o.metrics?.shellRelay({ side: 'holder', outcome: 'bad_signature' });
      this.#o.logger.warn(
        { remote: req.socket.remoteAddress, from: req.headers['x-vmkit-shell-relay-from'], why: check.ok ? 'replayed' : check.why },
        'shell relay refused: the request is not a signed relay from a node of this deployment',
      );
      refuse(socket);
      return;
    }
    for (const [sig, until] of this.#seen) if (until < now) this.#seen.delete(sig);
    this.#seen.set(check.signature, check.fields.at + 2 * SHELL_RELAY_MAX_SKEW_MS);
    const { from, requestSha256 } = check.fields;
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#serve(ws, from, requestSha256));
  }

  /** Ends every relay (after the hub closed: their channels have ended and said so). */
  close(): void {
    for (const ws of this.#wss.clients) ws.close(1001, 'shutting down');
    this.#wss.close();
  }

  #serve(ws: WebSocket, from: string, requestSha256: string): void {
    ws.on('error', (err) => this.#o.logger.warn({ err, from }, 'shell relay socket error'));
    const timer = setTimeout(() => ws.terminate(), this.#o.openMessageTimeoutMs ?? 10_000);
    ws.once('close', () => clearTimeout(timer));
    ws.once('message', (data: RawData, isBinary: boolean) => {
      clearTimeout(timer);
      const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary || !sameHex(sha256Hex(raw), requestSha256)) {
        this.#o.metrics?.shellRelay({ side: 'holder', outcome: 'bad_signature' });
        this.#o.logger.warn({ from }, 'shell relay refused: the open request is not the one signed');
        ws.close(1008, 'not the signed request');
        return;
      }
      let parsed: ReturnType<typeof relayOpenMessage.safeParse> | undefined;
      try {
        parsed = relayOpenMessage.safeParse(JSON.parse(raw.toString('utf8')));
      } catch {
        parsed = undefined;
      }
      if (!parsed?.success) {
        this.#answer(ws, { type: 'refused', error: 'invalid_request', message: 'The relayed shell open request is not valid.' });
        ws.close(1000);
        return;
      }
      const { request } = parsed.data;
      void this.#o.local.open(request).then(
        (channel) => {
          if (ws.readyState !== ws.OPEN) {
            channel.close('the relaying control plane went away while the session opened');
            return;
          }
          this.#o.metrics?.shellRelay({ side: 'holder', outcome: 'opened' });
          this.#o.logger.info({ from, agent_id: request.agentId, session_id: request.sessionId, channel: channel.id }, 'shell relay: a channel opened for another control plane');
          this.#answer(ws, { type: 'opened', channel: channel.id, window: SHELL_INITIAL_WINDOW });
          new RelayedChannelPipe(ws, channel).start(this.#o.pingMs ?? 15_000);
        },
        (err: unknown) => {
          this.#o.metrics?.shellRelay({ side: 'holder', outcome: 'refused' });
          const answer: RelayAnswer = isApiError(err)
            ? { type: 'refused', error: err.key, message: err.message.slice(0, 2048) }
            : { type: 'refused', error: 'internal', message: 'Opening the shell channel failed on the control plane holding the agent.' };
          if (!isApiError(err)) this.#o.logger.warn({ err, from }, 'shell relay: opening the channel failed');
          this.#answer(ws, answer);
          ws.close(1000);
        },
      );
    });
  }

  #answer(ws: WebSocket, answer: RelayAnswer): void {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(answer));
  }
}

/** One opened channel piped over one relay socket. */
class RelayedChannelPipe {
  /** The agent's output sent on and not yet credited by the front, oldest first. */
  readonly #unacked: [number, () => void][] = [];
  #credited = 0;
  /** The front's input received and not yet credited back (held by the channel's queue). */
  #inputHeld = 0;
  #exit: ShellExit | undefined;

  readonly ws: WebSocket;
  readonly channel: ShellChannel;
  constructor(
    ws: WebSocket,
    channel: ShellChannel,
  ) {
    this.ws = ws;
    this.channel = channel;
  }

  start(pingMs: number): void {
    const { ws, channel } = this;
    // A front that vanished without closing (a network cut) would keep the remote shell open otherwise.
    let ponged = true;
    ws.on('pong', () => (ponged = true));
    const ping = setInterval(() => {
      if (!ponged) return ws.terminate();
      ponged = false;
      ws.ping();
    }, pingMs);
    ping.unref();
    channel.onDrain(() => this.#grantInput());
    channel.onData((chunk, done) => {
      if (ws.readyState !== ws.OPEN) return done();
      for (let off = 0; off < chunk.length; off += SHELL_MAX_DATA_BYTES) ws.send(encodeShellData(channel.id, chunk.subarray(off, off + SHELL_MAX_DATA_BYTES)), { binary: true });
      this.#unacked.push([chunk.length, done]);
    });
    channel.onExit((exit) => {
      this.#exit = exit;
      if (ws.readyState !== ws.OPEN) return;
      const message = Buffer.from(exit.message ?? '', 'utf8').subarray(0, 1000).toString('utf8').replace(/\uFFFD$/, '');
      ws.send(encodeShellFrame({ kind: 'close', channel: channel.id, reason: exit.reason, code: exit.code, signal: exit.signal, message }), { binary: true });
      ws.close(1000);
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const decoded = isBinary ? decodeShellFrame(raw) : undefined;
      if (!decoded?.ok || decoded.frame.channel !== channel.id) return this.#violation('a frame that does not decode or names another channel');
      this.#onFrame(decoded.frame);
    });
    // The front went away (closed, died, or the network): the remote process is ended.
    ws.on('close', () => {
      clearInterval(ping);
      if (!this.#exit) channel.close('the relaying control plane closed the connection');
      for (const [, done] of this.#unacked.splice(0)) done();
    });
  }

  #onFrame(frame: ShellFrame): void {
    const { channel } = this;
    switch (frame.kind) {
      case 'data':
        if (this.#inputHeld + frame.data.length > SHELL_INITIAL_WINDOW) return this.#violation('input past the window');
        this.#inputHeld += frame.data.length;
        if (channel.write(frame.data)) this.#grantInput();
        return;
      case 'credit':
        this.#credited += frame.bytes;
        while (this.#unacked.length > 0 && (this.#unacked[0] as [number, () => void])[0] <= this.#credited) {
          const [n, done] = this.#unacked.shift() as [number, () => void];
          this.#credited -= n;
          done();
        }
        // Credit for nothing sent is not kept for later.
        if (this.#unacked.length === 0) this.#credited = 0;
        return;
      case 'resize':
        return channel.resize(frame.cols, frame.rows);
      case 'eof':
        return channel.eof();
      case 'close':
        return channel.close(frame.message === '' ? undefined : frame.message);
    }
  }

  #grantInput(): void {
    if (this.#inputHeld === 0 || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(encodeShellFrame({ kind: 'credit', channel: this.channel.id, bytes: this.#inputHeld }), { binary: true });
    this.#inputHeld = 0;
  }

  #violation(what: string): void {
    this.channel.close(`shell relay protocol error: ${what}`);
    this.ws.close(1008, 'protocol error');
  }
}

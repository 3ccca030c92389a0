/**
 * The front's end of a relayed shell channel: a ShellChannel whose bytes go over a
 * WebSocket to the control-plane process holding the agent (./shell-relay-wire.ts).
 *
 * Output from the holder is credited back only when the consumer calls done(), so the
 * holder acknowledges the agent's output no sooner; writes towards the holder stop at
 * the window it granted. The channel ends exactly once: with the holder's close frame
 * (the remote exit), or, when the relay socket drops first, with `agent_disconnected`.
 */
import { SHELL_MAX_WINDOW, decodeShellFrame, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';
import type { RawData, WebSocket } from 'ws';
import { CreditedShellChannel } from './credited-channel.ts';

export interface RelayedShellChannelOptions {
  /** How long close() waits for the holder to confirm before giving up on it. */
  closeTimeoutMs?: number;
  /** The relay socket is pinged this often; a ping unanswered by the next one ends it. */
  pingMs?: number;
}

const HOLDER_GONE = "the control plane holding the agent's connection went away; the shell session ended";

export class RelayedShellChannel extends CreditedShellChannel {
  readonly #ws: WebSocket;
  #pingTimer: NodeJS.Timeout | undefined;
  #ponged = true;
  readonly #onEnd: () => void;

  /** `ws` is open and the holder answered `opened` with this channel id and window. */
  constructor(ws: WebSocket, channel: number, window: number, opts: RelayedShellChannelOptions, onEnd: () => void) {
    super(window, opts.closeTimeoutMs);
    this.id = channel;
    this.#ws = ws;
    this.#onEnd = onEnd;
    ws.on('message', (data: RawData, isBinary: boolean) => this.#onMessage(data, isBinary));
    ws.on('close', () => this.#onSocketClosed());
    ws.on('pong', () => (this.#ponged = true));
    this.#pingTimer = setInterval(() => {
      if (!this.#ponged) {
        this.#ws.terminate();
        return;
      }
      this.#ponged = false;
      this.#ws.ping();
    }, opts.pingMs ?? 15_000);
    this.#pingTimer.unref();
  }

  /** This process is stopping: the holder is told to close, and the channel ends now. */
  abort(message: string): void {
    if (this.exited) return;
    this.sendFrame(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'closed', code: null, signal: null, message: message.slice(0, 1000) }));
    this.#ws.close(1001, 'shutting down');
    this.end({ code: null, signal: null, reason: this.closing ? 'closed' : 'agent_disconnected', message });
  }

  // ---- CreditedShellChannel

  protected sendFrame(frame: Buffer): boolean {
    if (this.#ws.readyState !== this.#ws.OPEN) return false;
    this.#ws.send(frame, { binary: true });
    return true;
  }

  /** The consumer passed `n` bytes on: the holder may acknowledge them to the agent. */
  protected returned(n: number): void {
    this.sendFrame(encodeShellFrame({ kind: 'credit', channel: this.id, bytes: n }));
  }

  protected ended(): void {
    clearInterval(this.#pingTimer);
    this.#onEnd();
  }

  protected override closeGaveUp(): void {
    this.#ws.terminate();
  }

  // ---- the relay socket

  #onMessage(data: RawData, isBinary: boolean): void {
    if (this.exited) return;
    const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    const decoded = isBinary ? decodeShellFrame(raw) : undefined;
    if (!decoded?.ok || decoded.frame.channel !== this.id) {
      this.#fail(`the holder sent ${isBinary ? 'a frame that does not decode or names another channel' : 'an unexpected text message'}`);
      return;
    }
    this.#onFrame(decoded.frame);
  }

  #onFrame(frame: ShellFrame): void {
    switch (frame.kind) {
      case 'data':
        // The holder forwards no more than the agent's window; far past it, something is wrong.
        if (this.outstanding + frame.data.length > SHELL_MAX_WINDOW) return this.#fail('the holder sent past any window');
        return this.received(frame.data);
      case 'credit':
        return this.addCredit(frame.bytes);
      case 'close':
        this.peerClosed(frame);
        this.#ws.close(1000);
        return;
      default:
        return this.#fail(`the holder sent a ${frame.kind} frame`);
    }
  }

  #onSocketClosed(): void {
    if (this.closing) this.end({ code: null, signal: null, reason: 'closed', message: 'the relay closed while the session was closing' });
    else this.end({ code: null, signal: null, reason: 'agent_disconnected', message: HOLDER_GONE });
  }

  #fail(message: string): void {
    this.sendFrame(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'error', code: null, signal: null, message: 'relay protocol error' }));
    this.end({ code: null, signal: null, reason: 'error', message });
    this.#ws.close(1008, 'protocol error');
  }
}

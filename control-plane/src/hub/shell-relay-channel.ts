/**
 * The front's end of a relayed shell channel: a ShellChannel whose bytes go over a
 * WebSocket to the control-plane process holding the agent (./shell-relay-wire.ts).
 *
 * Output from the holder is credited back only when the consumer calls done(), so the
 * holder acknowledges the agent's output no sooner; writes towards the holder stop at
 * the window it granted. The channel ends exactly once: with the holder's close frame
 * (the remote exit), or, when the relay socket drops first, with `agent_disconnected`.
 */
import { SHELL_MAX_DATA_BYTES, SHELL_MAX_WINDOW, decodeShellFrame, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';
import type { RawData, WebSocket } from 'ws';
import type { ShellChannel, ShellExit } from '../shell/channel.ts';

export interface RelayedShellChannelOptions {
  /** How long close() waits for the holder to confirm before giving up on it. */
  closeTimeoutMs?: number;
  /** The relay socket is pinged this often; a ping unanswered by the next one ends it. */
  pingMs?: number;
}

type Pending = { kind: 'data'; chunk: Buffer } | { kind: 'exit'; exit: ShellExit };

const HOLDER_GONE = "the control plane holding the agent's connection went away; the shell session ended";

export class RelayedShellChannel implements ShellChannel {
  readonly id: number;
  readonly #ws: WebSocket;
  readonly #o: RelayedShellChannelOptions;
  // towards the holder
  #credit: number;
  #queue: Buffer[] = [];
  readonly #drainCbs: (() => void)[] = [];
  #blocked = false;
  // from the holder
  #outstanding = 0;
  #dataCb: ((chunk: Buffer, done: () => void) => void) | undefined;
  #exitCb: ((exit: ShellExit) => void) | undefined;
  #pending: Pending[] = [];
  #exit: ShellExit | undefined;
  #closing = false;
  #closeTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #ponged = true;
  readonly #onEnd: () => void;

  /** `ws` is open and the holder answered `opened` with this channel id and window. */
  constructor(ws: WebSocket, channel: number, window: number, opts: RelayedShellChannelOptions, onEnd: () => void) {
    this.id = channel;
    this.#ws = ws;
    this.#credit = window;
    this.#o = opts;
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

  get exited(): ShellExit | undefined {
    return this.#exit;
  }

  // ---- ShellChannel

  write(data: Buffer): boolean {
    if (this.#exit || this.#closing) return false;
    for (let off = 0; off < data.length; off += SHELL_MAX_DATA_BYTES) this.#queue.push(data.subarray(off, off + SHELL_MAX_DATA_BYTES));
    this.#pump();
    const ok = this.#queue.length === 0 && this.#credit > 0;
    if (!ok) this.#blocked = true;
    return ok;
  }

  onDrain(cb: () => void): void {
    this.#drainCbs.push(cb);
  }

  resize(cols: number, rows: number): void {
    if (this.#exit || this.#closing) return;
    this.#send(encodeShellFrame({ kind: 'resize', channel: this.id, cols, rows }));
  }

  eof(): void {
    if (this.#exit || this.#closing) return;
    this.#send(encodeShellFrame({ kind: 'eof', channel: this.id }));
  }

  close(reason?: string): void {
    if (this.#exit || this.#closing) return;
    this.#closing = true;
    this.#queue = [];
    const message = Buffer.from(reason ?? '', 'utf8').subarray(0, 1000).toString('utf8').replace(/\uFFFD$/, '');
    const sent = this.#send(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'closed', code: null, signal: null, message }));
    const end = () => {
      this.#end({ code: null, signal: null, reason: 'closed', ...(reason === undefined ? {} : { message: reason }) });
      this.#ws.terminate();
    };
    if (!sent) end();
    else this.#closeTimer = setTimeout(end, this.#o.closeTimeoutMs ?? 10_000);
  }

  onData(cb: (chunk: Buffer, done: () => void) => void): void {
    this.#dataCb = cb;
    this.#deliverPending();
  }

  onExit(cb: (exit: ShellExit) => void): void {
    this.#exitCb = cb;
    this.#deliverPending();
  }

  /** This process is stopping: the holder is told to close, and the channel ends now. */
  abort(message: string): void {
    if (this.#exit) return;
    this.#send(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'closed', code: null, signal: null, message: message.slice(0, 1000) }));
    this.#ws.close(1001, 'shutting down');
    this.#end({ code: null, signal: null, reason: this.#closing ? 'closed' : 'agent_disconnected', message });
  }

  // ---- the relay socket

  #send(frame: Buffer): boolean {
    if (this.#ws.readyState !== this.#ws.OPEN) return false;
    this.#ws.send(frame, { binary: true });
    return true;
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    if (this.#exit) return;
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
      case 'data': {
        const n = frame.data.length;
        // The holder forwards no more than the agent's window; far past it, something is wrong.
        if (this.#outstanding + n > SHELL_MAX_WINDOW) return this.#fail('the holder sent past any window');
        this.#outstanding += n;
        if (this.#closing) return this.#done(n);
        this.#pending.push({ kind: 'data', chunk: frame.data });
        return this.#deliverPending();
      }
      case 'credit':
        this.#credit += frame.bytes;
        return this.#pump();
      case 'close': {
        const reason = this.#closing ? 'closed' : frame.reason;
        this.#end({ code: frame.code, signal: frame.signal, reason, ...(frame.message === '' ? {} : { message: frame.message }) });
        this.#ws.close(1000);
        return;
      }
      default:
        return this.#fail(`the holder sent a ${frame.kind} frame`);
    }
  }

  #onSocketClosed(): void {
    if (this.#closing) this.#end({ code: null, signal: null, reason: 'closed', message: 'the relay closed while the session was closing' });
    else this.#end({ code: null, signal: null, reason: 'agent_disconnected', message: HOLDER_GONE });
  }

  #fail(message: string): void {
    this.#send(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'error', code: null, signal: null, message: 'relay protocol error' }));
    this.#end({ code: null, signal: null, reason: 'error', message });
    this.#ws.close(1008, 'protocol error');
  }

  #end(exit: ShellExit): void {
    if (this.#exit) return;
    this.#exit = exit;
    clearTimeout(this.#closeTimer);
    clearInterval(this.#pingTimer);
    this.#queue = [];
    this.#onEnd();
    this.#pending.push({ kind: 'exit', exit });
    this.#deliverPending();
  }

  #deliverPending(): void {
    while (this.#pending.length > 0) {
      const next = this.#pending[0] as Pending;
      if (next.kind === 'data') {
        if (!this.#dataCb) return;
        this.#pending.shift();
        let called = false;
        const n = next.chunk.length;
        this.#dataCb(next.chunk, () => {
          if (called) return;
          called = true;
          this.#done(n);
        });
      } else {
        if (!this.#exitCb) return;
        this.#pending.shift();
        this.#exitCb(next.exit);
      }
    }
  }

  /** The consumer passed `n` bytes on: the holder may acknowledge them to the agent. */
  #done(n: number): void {
    this.#outstanding -= n;
    if (this.#exit) return;
    this.#send(encodeShellFrame({ kind: 'credit', channel: this.id, bytes: n }));
  }

  #pump(): void {
    while (this.#queue.length > 0 && this.#credit > 0 && !this.#exit) {
      const head = this.#queue[0] as Buffer;
      const n = Math.min(head.length, this.#credit);
      if (n === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(n);
      this.#credit -= n;
      this.#send(encodeShellData(this.id, head.subarray(0, n)));
    }
    if (this.#blocked && this.#queue.length === 0 && this.#credit > 0) {
      this.#blocked = false;
      for (const cb of this.#drainCbs) cb();
    }
  }
}

import { SHELL_INITIAL_WINDOW, SHELL_MAX_DATA_BYTES, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame, ShellFrameOf } from '@vmkit/protocol';
import type { ShellChannel, ShellExit } from '../shell/channel.ts';
import type { ChannelEndpoint } from './channels.ts';

export interface HubShellChannelOptions {
  agentId: string;
  /** Sends a binary frame to the agent; false when it is not connected. */
  send(frame: Buffer): boolean;
  /** Forgets the channel id (router). */
  release(): void;
  /** How long close() waits for the agent to confirm before giving up on it. */
  closeTimeoutMs?: number;
}

export interface HubShellChannelStats {
  bytesIn: number;
  bytesOut: number;
  /** Most bytes received from the agent and not yet acknowledged with done() at once. */
  maxOutstanding: number;
  /** Frames from the agent that broke its window (the channel is ended on the first). */
  windowViolations: number;
}

type Pending = { kind: 'data'; chunk: Buffer } | { kind: 'exit'; exit: ShellExit };

/**
 * The control plane's end of one shell channel. Data from the agent is held only until
 * the operator side calls done(): credit goes back to the agent then, so this side
 * never holds more than the agent's window. Writes towards the agent stop at the
 * window the agent granted; write() says false and onDrain tells when to go on.
 */
export class HubShellChannel implements ShellChannel, ChannelEndpoint {
  id = 0;
  readonly #o: HubShellChannelOptions;
  readonly stats: HubShellChannelStats = { bytesIn: 0, bytesOut: 0, maxOutstanding: 0, windowViolations: 0 };
  // towards the agent
  #credit = SHELL_INITIAL_WINDOW;
  #queue: Buffer[] = [];
  #drainCbs: (() => void)[] = [];
  #blocked = false;
  // from the agent
  #agentAvailable = SHELL_INITIAL_WINDOW;
  #outstanding = 0;
  #toGrant = 0;
  #dataCb: ((chunk: Buffer, done: () => void) => void) | undefined;
  #exitCb: ((exit: ShellExit) => void) | undefined;
  /** What arrived before the callbacks were set (e.g. an exec's output before open resolved). */
  #pending: Pending[] = [];
  #exit: ShellExit | undefined;
  #closing = false;
  #closeTimer: NodeJS.Timeout | undefined;

  constructor(opts: HubShellChannelOptions) {
    this.#o = opts;
  }

  get exited(): ShellExit | undefined {
    return this.#exit;
  }

  /** The agent started the PTY and lets this side send `window` bytes before its first credit. */
  opened(window: number): void {
    this.#credit = window;
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
    this.#o.send(encodeShellFrame({ kind: 'resize', channel: this.id, cols, rows }));
  }

  eof(): void {
    if (this.#exit || this.#closing) return;
    this.#o.send(encodeShellFrame({ kind: 'eof', channel: this.id }));
  }

  close(reason?: string): void {
    if (this.#exit || this.#closing) return;
    this.#closing = true;
    this.#queue = [];
    const message = Buffer.from(reason ?? '', 'utf8').subarray(0, 1000).toString('utf8').replace(/\uFFFD$/, '');
    const sent = this.#o.send(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'closed', code: null, signal: null, message }));
    // The agent answers with its own close once the process is gone; do not wait forever on it.
    const end = () => this.#end({ code: null, signal: null, reason: 'closed', ...(reason === undefined ? {} : { message: reason }) });
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

  // ---- ChannelEndpoint

  onFrame(frame: ShellFrame): void {
    switch (frame.kind) {
      case 'data':
        return this.#onData(frame.data);
      case 'credit':
        this.#credit += frame.bytes;
        this.#pump();
        return;
      case 'close':
        return this.#onClose(frame);
      default:
        return;
    }
  }

  onAgentGone(): void {
    if (this.#closing) return this.#end({ code: null, signal: null, reason: 'closed', message: 'the agent disconnected while the session was closing' });
    this.#end({ code: null, signal: null, reason: 'agent_disconnected', message: 'the agent disconnected; its shell session ended' });
  }

  // ---- internals

  #onData(chunk: Buffer): void {
    if (this.#exit) return;
    if (chunk.length > this.#agentAvailable) {
      // An agent that ignores its window could make this side buffer without bound.
      this.stats.windowViolations++;
      this.#o.send(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'error', code: null, signal: null, message: 'window exceeded' }));
      this.#end({ code: null, signal: null, reason: 'error', message: `the agent sent past its window (${chunk.length} bytes, ${this.#agentAvailable} left)` });
      return;
    }
    this.#agentAvailable -= chunk.length;
    this.#outstanding += chunk.length;
    this.stats.bytesIn += chunk.length;
    if (this.#outstanding > this.stats.maxOutstanding) this.stats.maxOutstanding = this.#outstanding;
    if (this.#closing) return this.#done(chunk.length);
    this.#pending.push({ kind: 'data', chunk });
    this.#deliverPending();
  }

  #onClose(frame: ShellFrameOf<'close'>): void {
    const reason = this.#closing ? 'closed' : frame.reason;
    this.#end({ code: frame.code, signal: frame.signal, reason, ...(frame.message === '' ? {} : { message: frame.message }) });
  }

  #end(exit: ShellExit): void {
    if (this.#exit) return;
    this.#exit = exit;
    if (this.#closeTimer) clearTimeout(this.#closeTimer);
    this.#queue = [];
    this.#o.release();
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

  #done(n: number): void {
    this.#outstanding -= n;
    this.#toGrant += n;
    if (this.#exit) return;
    // Granting once half the window is used keeps credit frames few.
    if (this.#agentAvailable < SHELL_INITIAL_WINDOW / 2) {
      if (this.#o.send(encodeShellFrame({ kind: 'credit', channel: this.id, bytes: this.#toGrant }))) {
        this.#agentAvailable += this.#toGrant;
        this.#toGrant = 0;
      }
    }
  }

  #pump(): void {
    while (this.#queue.length > 0 && this.#credit > 0 && !this.#exit) {
      const head = this.#queue[0] as Buffer;
      const n = Math.min(head.length, this.#credit);
      if (n === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(n);
      this.#credit -= n;
      this.stats.bytesOut += n;
      this.#o.send(encodeShellData(this.id, head.subarray(0, n)));
    }
    if (this.#blocked && this.#queue.length === 0 && this.#credit > 0) {
      this.#blocked = false;
      for (const cb of this.#drainCbs) cb();
    }
  }
}

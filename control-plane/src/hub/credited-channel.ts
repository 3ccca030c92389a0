import { SHELL_MAX_DATA_BYTES, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrameOf } from '@vmkit/protocol';
import type { ShellChannel, ShellExit } from '../shell/channel.ts';

type Pending = { kind: 'data'; chunk: Buffer } | { kind: 'exit'; exit: ShellExit };

/**
 * What both ends of a shell channel on this side share (the hub's, towards the agent, and
 * the relay's, towards the process holding the agent): credit-based flow control both ways.
 *
 * - Towards the peer: writes are cut into data frames and sent while the peer's credit
 *   lasts; write() says false once it is used up, and onDrain callbacks run when it is
 *   back (`addCredit`) and the queue is empty.
 * - From the peer: data (`received`) and the exit (`end`) are held until the consumer's
 *   callbacks are set, then delivered in order. A chunk counts as outstanding until the
 *   consumer calls its done(); only then `returned(n)` lets the subclass give credit back.
 *
 * Subclasses send frames (`sendFrame`), decide how credit goes back (`returned`), check
 * their peer's window, and free what they hold when the channel ends (`ended`, once).
 */
export abstract class CreditedShellChannel implements ShellChannel {
  id = 0;
  // towards the peer
  #credit: number;
  #queue: Buffer[] = [];
  readonly #drainCbs: (() => void)[] = [];
  #blocked = false;
  // from the peer
  #outstanding = 0;
  #dataCb: ((chunk: Buffer, done: () => void) => void) | undefined;
  #exitCb: ((exit: ShellExit) => void) | undefined;
  /** What arrived before the callbacks were set (e.g. an exec's output before open resolved). */
  #pending: Pending[] = [];
  #exit: ShellExit | undefined;
  #closing = false;
  #closeTimer: NodeJS.Timeout | undefined;
  readonly #closeTimeoutMs: number;

  constructor(credit: number, closeTimeoutMs = 10_000) {
    this.#credit = credit;
    this.#closeTimeoutMs = closeTimeoutMs;
  }

  /** Sends one binary frame to the peer; false when it cannot be sent (gone). */
  protected abstract sendFrame(frame: Buffer): boolean;
  /** The consumer passed `n` bytes on (never called after the end): give the peer credit for them. */
  protected abstract returned(n: number): void;
  /** The channel ended: free what it holds. Called once. */
  protected abstract ended(): void;
  /** close() ended the channel without the peer's confirmation (it could not be told, or did not answer in time). */
  protected closeGaveUp(): void {}
  /** `n` bytes of data were sent (statistics). */
  protected sent(_n: number): void {}

  get exited(): ShellExit | undefined {
    return this.#exit;
  }

  /** close() was called and the peer has not confirmed yet. */
  protected get closing(): boolean {
    return this.#closing;
  }

  /** Bytes received and not yet passed on by the consumer. */
  protected get outstanding(): number {
    return this.#outstanding;
  }

  /** Sets the peer's credit (the window it granted when the channel opened). */
  protected setCredit(bytes: number): void {
    this.#credit = bytes;
  }

  /** The peer granted `bytes` more. */
  protected addCredit(bytes: number): void {
    this.#credit += bytes;
    this.#pump();
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
    this.sendFrame(encodeShellFrame({ kind: 'resize', channel: this.id, cols, rows }));
  }

  eof(): void {
    if (this.#exit || this.#closing) return;
    this.sendFrame(encodeShellFrame({ kind: 'eof', channel: this.id }));
  }

  close(reason?: string): void {
    if (this.#exit || this.#closing) return;
    this.#closing = true;
    this.#queue = [];
    const message = Buffer.from(reason ?? '', 'utf8').subarray(0, 1000).toString('utf8').replace(/\uFFFD$/, '');
    const sent = this.sendFrame(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'closed', code: null, signal: null, message }));
    // The peer answers with its own close once the process is gone; do not wait forever on it.
    const end = () => {
      this.end({ code: null, signal: null, reason: 'closed', ...(reason === undefined ? {} : { message: reason }) });
      this.closeGaveUp();
    };
    if (!sent) end();
    else this.#closeTimer = setTimeout(end, this.#closeTimeoutMs);
  }

  onData(cb: (chunk: Buffer, done: () => void) => void): void {
    this.#dataCb = cb;
    this.#deliverPending();
  }

  onExit(cb: (exit: ShellExit) => void): void {
    this.#exitCb = cb;
    this.#deliverPending();
  }

  // ---- for subclasses

  /** Data from the peer (its window already checked): held until the consumer takes it. */
  protected received(chunk: Buffer): void {
    this.#outstanding += chunk.length;
    if (this.#closing) return this.#done(chunk.length);
    this.#pending.push({ kind: 'data', chunk });
    this.#deliverPending();
  }

  /** The peer's close frame: the exit it reports (`closed` when this side asked for it). */
  protected peerClosed(frame: ShellFrameOf<'close'>): void {
    const reason = this.#closing ? 'closed' : frame.reason;
    this.end({ code: frame.code, signal: frame.signal, reason, ...(frame.message === '' ? {} : { message: frame.message }) });
  }

  /** Ends the channel once; the exit is delivered after any data still held. */
  protected end(exit: ShellExit): void {
    if (this.#exit) return;
    this.#exit = exit;
    clearTimeout(this.#closeTimer);
    this.#queue = [];
    this.ended();
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
    if (this.#exit) return;
    this.returned(n);
  }

  #pump(): void {
    while (this.#queue.length > 0 && this.#credit > 0 && !this.#exit) {
      const head = this.#queue[0] as Buffer;
      const n = Math.min(head.length, this.#credit);
      if (n === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(n);
      this.#credit -= n;
      this.sent(n);
      this.sendFrame(encodeShellData(this.id, head.subarray(0, n)));
    }
    if (this.#blocked && this.#queue.length === 0 && this.#credit > 0) {
      this.#blocked = false;
      for (const cb of this.#drainCbs) cb();
    }
  }
}

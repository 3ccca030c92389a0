import { SHELL_INITIAL_WINDOW, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';
import type { ChannelEndpoint } from './channels.ts';
import { CreditedShellChannel } from './credited-channel.ts';

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

/**
 * The control plane's end of one shell channel. Data from the agent is held only until
 * the operator side calls done(): credit goes back to the agent then, so this side
 * never holds more than the agent's window. Writes towards the agent stop at the
 * window the agent granted; write() says false and onDrain tells when to go on.
 * (The flow control itself is CreditedShellChannel's, shared with the relay's end.)
 */
export class HubShellChannel extends CreditedShellChannel implements ChannelEndpoint {
  readonly #o: HubShellChannelOptions;
  readonly stats: HubShellChannelStats = { bytesIn: 0, bytesOut: 0, maxOutstanding: 0, windowViolations: 0 };
  /** What the agent may still send before this side's next credit. */
  #agentAvailable = SHELL_INITIAL_WINDOW;
  #toGrant = 0;

  constructor(opts: HubShellChannelOptions) {
    super(SHELL_INITIAL_WINDOW, opts.closeTimeoutMs);
    this.#o = opts;
  }

  /** The agent started the PTY and lets this side send `window` bytes before its first credit. */
  opened(window: number): void {
    this.setCredit(window);
  }

  // ---- ChannelEndpoint

  onFrame(frame: ShellFrame): void {
    switch (frame.kind) {
      case 'data':
        return this.#onData(frame.data);
      case 'credit':
        return this.addCredit(frame.bytes);
      case 'close':
        return this.peerClosed(frame);
      default:
        return;
    }
  }

  onAgentGone(): void {
    if (this.closing) return this.end({ code: null, signal: null, reason: 'closed', message: 'the agent disconnected while the session was closing' });
    this.end({ code: null, signal: null, reason: 'agent_disconnected', message: 'the agent disconnected; its shell session ended' });
  }

  // ---- CreditedShellChannel

  protected sendFrame(frame: Buffer): boolean {
    return this.#o.send(frame);
  }

  protected override sent(n: number): void {
    this.stats.bytesOut += n;
  }

  protected ended(): void {
    this.#o.release();
  }

  protected returned(n: number): void {
    this.#toGrant += n;
    // Granting once half the window is used keeps credit frames few.
    if (this.#agentAvailable < SHELL_INITIAL_WINDOW / 2) {
      if (this.#o.send(encodeShellFrame({ kind: 'credit', channel: this.id, bytes: this.#toGrant }))) {
        this.#agentAvailable += this.#toGrant;
        this.#toGrant = 0;
      }
    }
  }

  // ---- internals

  #onData(chunk: Buffer): void {
    if (this.exited) return;
    if (chunk.length > this.#agentAvailable) {
      // An agent that ignores its window could make this side buffer without bound.
      this.stats.windowViolations++;
      this.#o.send(encodeShellFrame({ kind: 'close', channel: this.id, reason: 'error', code: null, signal: null, message: 'window exceeded' }));
      this.end({ code: null, signal: null, reason: 'error', message: `the agent sent past its window (${chunk.length} bytes, ${this.#agentAvailable} left)` });
      return;
    }
    this.#agentAvailable -= chunk.length;
    this.stats.bytesIn += chunk.length;
    // Measured before the consumer may take it (received() can hand it over at once).
    this.stats.maxOutstanding = Math.max(this.stats.maxOutstanding, this.outstanding + chunk.length);
    this.received(chunk);
  }
}

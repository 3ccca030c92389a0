import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { constants } from 'node:os';
import { SHELL_INITIAL_WINDOW, SHELL_MAX_DATA_BYTES, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { ShellCloseReason } from '@vmkit/protocol';
import type { IPty } from 'node-pty';
import type { Logger } from '../../log.ts';
import { ptyQueuedBytes } from './pty-queue.ts';

export interface SessionStats {
  bytesOut: number;
  bytesIn: number;
  /** Times the PTY was paused because the control plane had not returned credit. */
  pauses: number;
  /** Most output bytes held here at once, read from the PTY but not yet sent. */
  maxPendingBytes: number;
}

export interface ShellSessionOptions {
  channel: number;
  pty: IPty;
  idleTimeoutMs: number;
  maxSessionMs: number;
  /** Sends a binary frame on the agent's WebSocket; false when it is down. */
  send(frame: Buffer): boolean;
  log: Logger;
  /** Called once, when the session is over and forgotten. */
  onEnd(session: ShellSession): void;
}

/** Grace between SIGHUP and SIGKILL for the session's process group. */
const KILL_GRACE_MS = 2_000;
/** How often a paused session checks whether its process is gone (see #pause). */
const EXIT_POLL_MS = 25;
/** How often bytes handed to the PTY are checked for having reached it. */
const INBOUND_POLL_MS = 10;

const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/**
 * One PTY bound to one channel. Output is sent only within the credit the control
 * plane granted; without credit the PTY is paused, so the writer blocks in the kernel
 * instead of this process buffering. Input is credited back only once it reached the
 * PTY, so a shell that does not read cannot make the agent hold more than a window.
 */
export class ShellSession {
  readonly channel: number;
  readonly pid: number;
  readonly stats: SessionStats = { bytesOut: 0, bytesIn: 0, pauses: 0, maxPendingBytes: 0 };
  readonly #o: ShellSessionOptions;
  readonly #pty: IPty;
  #credit = SHELL_INITIAL_WINDOW;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #paused = false;
  /** The process is gone: what is left in the PTY is bounded, read it all. */
  #childGone = false;
  #exit: { code: number | null; signal: string | null } | undefined;
  #endReason: ShellCloseReason | undefined;
  #endMessage = '';
  /** Output is dropped: the session is being ended on purpose. */
  #discard = false;
  /** The WebSocket dropped: nothing is sent any more. */
  #detached = false;
  #over = false;
  #lastActivity = Date.now();
  /** What the control plane may still send (its window, from this side). */
  #inAvailable = SHELL_INITIAL_WINDOW;
  #inQueued = 0;
  #inToGrant = 0;
  readonly #timers = new Set<NodeJS.Timeout>();
  #exitPoll: NodeJS.Timeout | undefined;
  #inboundPoll: NodeJS.Timeout | undefined;
  #slaveFd: number | undefined;

  constructor(opts: ShellSessionOptions) {
    this.#o = opts;
    this.channel = opts.channel;
    this.#pty = opts.pty;
    this.pid = opts.pty.pid;
    this.#slaveFd = holdSlave(opts.pty);
    // With encoding null node-pty hands over Buffers (its typings say string).
    this.#pty.onData((d) => this.#onOutput(d as unknown as Buffer));
    this.#pty.onExit(({ exitCode, signal }) => this.#onExit(exitCode, signal));
    this.#armIdle(opts.idleTimeoutMs);
    this.#timer(() => this.terminate('max_length', `the session reached its maximum length of ${Math.round(opts.maxSessionMs / 1000)} s`), opts.maxSessionMs);
  }

  get ended(): boolean {
    return this.#over;
  }

  // ---- control plane → PTY

  /** Bytes from the operator. False when the control plane broke its window (the session is then ended). */
  write(data: Buffer): boolean {
    if (data.length > this.#inAvailable) {
      this.terminate('error', `the control plane sent ${data.length} bytes with only ${this.#inAvailable} of window left`);
      return false;
    }
    this.#inAvailable -= data.length;
    this.stats.bytesIn += data.length;
    this.#touch();
    if (this.#discard || this.#exit) return true;
    this.#pty.write(data);
    this.#inQueued += data.length;
    this.#checkInbound();
    return true;
  }

  resize(cols: number, rows: number): void {
    if (this.#exit) return;
    this.#touch();
    this.#pty.resize(cols, rows);
  }

  /** The operator's input ended: the terminal's EOF character, as a keyboard would send it. */
  eof(): void {
    if (this.#exit || this.#discard) return;
    this.#pty.write('\x04');
  }

  grant(bytes: number): void {
    this.#credit += bytes;
    this.#flush();
  }

  // ---- ending

  /** Ends the session on purpose (idle, max length, operator, error): hang up its process group. */
  terminate(reason: ShellCloseReason, message: string): void {
    if (this.#endReason !== undefined || this.#over) return;
    this.#endReason = reason;
    this.#endMessage = message;
    this.#discard = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#o.log.info('shell session ending', { channel: this.channel, reason, message });
    if (this.#exit) return this.#finish();
    // Read on to EOF so the exit is seen; what is read is dropped.
    this.#resume();
    this.#hangUp();
  }

  /** The agent's WebSocket dropped: the control plane is gone, so is the session. */
  detach(): void {
    if (this.#over) return;
    this.#detached = true;
    this.terminate('agent_disconnected', 'the agent lost its connection to the control plane');
  }

  #hangUp(): void {
    this.#signalGroup('SIGHUP');
    // Outlives the session on purpose: what ignores the hangup is killed all the same.
    setTimeout(() => this.#signalGroup('SIGKILL'), KILL_GRACE_MS).unref();
  }

  #signalGroup(signal: NodeJS.Signals): void {
    try {
      // The PTY's child leads its own session and process group: everything it started goes too.
      process.kill(-this.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return;
      // No such group: gone, or just forked and not yet its own session leader (a close right
      // after open). Then only the child itself is signalled, never the group it still shares.
      try {
        process.kill(this.pid, signal);
      } catch {
        // Already gone.
      }
    }
  }

  // ---- PTY → control plane

  #onOutput(chunk: Buffer): void {
    this.#touch();
    if (this.#discard) return;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes > this.stats.maxPendingBytes) this.stats.maxPendingBytes = this.#pendingBytes;
    this.#flush();
  }

  #flush(): void {
    while (this.#pending.length > 0 && this.#credit > 0) {
      const head = this.#pending[0] as Buffer;
      const n = Math.min(head.length, this.#credit, SHELL_MAX_DATA_BYTES);
      if (n === head.length) this.#pending.shift();
      else this.#pending[0] = head.subarray(n);
      this.#pendingBytes -= n;
      this.#credit -= n;
      this.stats.bytesOut += n;
      if (!this.#detached) this.#o.send(encodeShellData(this.channel, head.subarray(0, n)));
    }
    if (this.#pending.length > 0) this.#pause();
    else this.#resume();
    if (this.#exit && this.#pending.length === 0) this.#finish();
  }

  #pause(): void {
    if (this.#paused || this.#childGone || this.#discard) return;
    this.#paused = true;
    this.stats.pauses++;
    this.#pty.pause();
    this.#o.log.debug('shell output paused: no credit', { channel: this.channel, pending_bytes: this.#pendingBytes });
    // node-pty drops what is still unread 200 ms after the process exits when nobody reads
    // the PTY; so a paused session watches for the exit and then reads the (bounded) rest.
    this.#exitPoll = setInterval(() => {
      if (isAlive(this.pid)) return;
      this.#childGone = true;
      this.#resume();
    }, EXIT_POLL_MS);
  }

  #resume(): void {
    if (this.#exitPoll) clearInterval(this.#exitPoll);
    this.#exitPoll = undefined;
    if (!this.#paused) return;
    this.#paused = false;
    this.#pty.resume();
  }

  #onExit(exitCode: number, signal: number | undefined): void {
    const name = signal ? (SIGNAL_NAMES.get(signal) ?? null) : null;
    this.#exit = { code: name === null ? Math.max(0, Math.min(255, exitCode)) : null, signal: name };
    this.#childGone = true;
    // Whatever else is left in the group (background jobs) is hung up, as a closed terminal would.
    this.#signalGroup('SIGHUP');
    if (this.#pending.length === 0 || this.#discard || this.#detached) this.#finish();
  }

  #finish(): void {
    if (this.#over) return;
    this.#over = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    if (this.#exitPoll) clearInterval(this.#exitPoll);
    if (this.#inboundPoll) clearTimeout(this.#inboundPoll);
    if (this.#slaveFd !== undefined) closeSync(this.#slaveFd);
    this.#slaveFd = undefined;
    const exit = this.#exit ?? { code: null, signal: null };
    const reason = this.#endReason ?? 'exit';
    if (!this.#detached) {
      this.#o.send(
        encodeShellFrame({ kind: 'close', channel: this.channel, reason, code: exit.code, signal: exit.signal, message: truncate(this.#endMessage, 1000) }),
      );
    }
    this.#o.log.info('shell session ended', {
      channel: this.channel,
      pid: this.pid,
      reason,
      code: exit.code,
      signal: exit.signal,
      bytes_out: this.stats.bytesOut,
      bytes_in: this.stats.bytesIn,
      pauses: this.stats.pauses,
      max_pending_bytes: this.stats.maxPendingBytes,
    });
    this.#o.onEnd(this);
  }

  // ---- input credit

  #checkInbound(): void {
    if (this.#inboundPoll) return;
    const left = ptyQueuedBytes(this.#pty);
    const reached = this.#inQueued - left;
    if (reached > 0) {
      this.#inQueued = left;
      this.#inToGrant += reached;
    }
    // Granting only once half the window is used keeps typing free of credit chatter.
    if (this.#inToGrant > 0 && this.#inAvailable < SHELL_INITIAL_WINDOW / 2 && !this.#detached && !this.#over) {
      this.#o.send(encodeShellFrame({ kind: 'credit', channel: this.channel, bytes: this.#inToGrant }));
      this.#inAvailable += this.#inToGrant;
      this.#inToGrant = 0;
    }
    if (left > 0 && !this.#over) {
      this.#inboundPoll = setTimeout(() => {
        this.#inboundPoll = undefined;
        this.#checkInbound();
      }, INBOUND_POLL_MS);
    }
  }

  // ---- timers

  #touch(): void {
    this.#lastActivity = Date.now();
  }

  #armIdle(idleMs: number): void {
    const wait = Math.max(0, this.#lastActivity + idleMs - Date.now());
    this.#timer(() => {
      if (Date.now() - this.#lastActivity >= idleMs) {
        this.terminate('idle_timeout', `no input or output for ${Math.round(idleMs / 1000)} s`);
      } else {
        this.#armIdle(idleMs);
      }
    }, wait);
  }

  #timer(fn: () => void, ms: number): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }
}

/**
 * Keeps the PTY's terminal side open in the agent. When the last process holding it
 * exits, Linux answers reads on the master with EIO and node-pty drops what was still
 * unread (up to a kernel buffer: the tail of a command's output, microsoft/node-pty#72).
 * Held open, the master never sees EIO and the tail is read before node-pty gives up on
 * the exited process (200 ms later). Best effort: without it the session still works.
 */
function holdSlave(pty: IPty): number | undefined {
  const path = (pty as unknown as { _pty?: unknown })._pty;
  if (typeof path !== 'string' || !path.startsWith('/dev/pts/')) return undefined;
  try {
    return openSync(path, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK);
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function truncate(s: string, maxBytes: number): string {
  const b = Buffer.from(s, 'utf8');
  return b.length <= maxBytes ? s : b.subarray(0, maxBytes).toString('utf8').replace(/\uFFFD$/, '');
}

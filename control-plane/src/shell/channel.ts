/**
 * The shell channel API: what the operator doors (the `vmkit shell` WebSocket and the
 * ssh gateway) use to open a PTY on a VM and move its bytes.
 *
 * `ctx.shellOpener.open(req)` signs and sends `shell.open` to the instance's agent
 * and resolves once the agent has the PTY running. Bytes then flow as binary channel
 * frames multiplexed on the agent's one WebSocket (see @vmkit/protocol `shell-frames`).
 *
 * Flow control, both directions:
 * - operator → VM: `write()` returns false once the agent's receive window is full;
 *   wait for `onDrain` before writing more (like a Node stream).
 * - VM → operator: every `onData` chunk must be acknowledged with its `done()` once it
 *   has been passed on (written to the operator's socket, recorded). Only then is the
 *   credit returned to the agent; the agent pauses the PTY while it has no credit, so a
 *   slow operator never grows memory on either side.
 *
 * `onExit` fires exactly once, after the last `onData` chunk; the channel is dead then.
 * Output and exit that arrive before the callbacks are set (an exec that finished at
 * once) are kept and delivered when they are set.
 * Reasons: `exit` (the process ended; `code` or `signal` set), `idle_timeout`,
 * `max_length` (the agent's limits), `agent_disconnected` (the agent's WebSocket
 * dropped), `closed` (someone called `close()`), `error` (`message` says why).
 */

export interface ShellOpenRequest {
  agentId: string;
  /** Account to run as; the agent's configured default when absent. `root` only if the agent allows it. */
  user?: string;
  cols: number;
  rows: number;
  /** TERM for the remote process, e.g. `xterm-256color`. */
  term: string;
  /** Only allowlisted names travel (LANG, LC_*, ...); others are refused with invalid_request. */
  env?: Record<string, string>;
  /** Runs this single command (through the user's shell, `-c`) instead of a login shell. */
  command?: string;
  /** The shell_sessions row (`shs_...`), named in the agent's log for correlation. */
  sessionId?: string;
}

export interface ShellExit {
  code: number | null;
  signal: string | null;
  reason: 'exit' | 'idle_timeout' | 'max_length' | 'agent_disconnected' | 'closed' | 'error';
  message?: string;
}

export interface ShellChannel {
  readonly id: number;
  /** Operator → PTY. Returns false when the peer's window is full: wait for 'drain' before writing more. */
  write(data: Buffer): boolean;
  onDrain(cb: () => void): void;
  resize(cols: number, rows: number): void;
  eof(): void;
  /** Ends the session (kills the remote process). */
  close(reason?: string): void;
  /** VM → operator. Call done() once the bytes are passed on: that returns credit to the agent. */
  onData(cb: (chunk: Buffer, done: () => void) => void): void;
  onExit(cb: (exit: ShellExit) => void): void;
}

/**
 * Signs and sends `shell.open`, resolves once the agent has the PTY running (or rejects
 * with an ApiError: agent_not_connected, shell_disabled, shell_user_refused,
 * too_many_sessions, invalid_request, command_timed_out, ...).
 */
export interface ShellOpener {
  open(req: ShellOpenRequest): Promise<ShellChannel>;
}

declare module '../app.ts' {
  interface AppContext {
    /** Opens PTY channels on agents (set by the agent hub plugin). */
    shellOpener?: ShellOpener;
  }
}

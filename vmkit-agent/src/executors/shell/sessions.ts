import { stat } from 'node:fs/promises';
import { SHELL_INITIAL_WINDOW, decodeShellFrame } from '@vmkit/protocol';
import type { ErrorKey, ShellOpenParams, ShellOpenResult } from '@vmkit/protocol';
import type { IPty } from 'node-pty';
import type * as NodePty from 'node-pty';
import type { Logger } from '../../log.ts';
import type { ExecutorOutcome, ExecutorSpec } from '../types.ts';
import { judgeAccount, lookupAccount, sessionArgv, sessionEnv } from './account.ts';
import type { Account } from './account.ts';
import type { ShellLimits } from './config.ts';
import { ShellSession } from './session.ts';

let ptyModule: Promise<typeof NodePty> | undefined;
/**
 * node-pty and its native addon load with the first shell, not at start: an agent whose
 * addon cannot load (a build without it, a noexec directory) still runs every other command.
 */
function loadPty(): Promise<typeof NodePty> {
  ptyModule ??= import('node-pty');
  return ptyModule;
}

export interface ShellSessionsOptions {
  limits: ShellLimits;
  /** Sends a binary frame on the agent's WebSocket; false when it is down. */
  send(frame: Buffer): boolean;
  log: Logger;
  /** The agent's own uid (tests); default process.getuid(). */
  selfUid?: number;
  lookup?: (name: string) => Promise<Account | undefined>;
  /** Tells the hub about a binary frame that did not decode (as bad text frames are answered). */
  reportInvalid?(message: string): void;
}

export interface ShellSessionsStats {
  open: number;
  /** Frames that did not decode, or named a channel with no session here. */
  droppedFrames: number;
}

/**
 * Every shell session of this agent, keyed by channel: `shell.open` starts one, binary
 * frames from the hub reach it, and a dropped WebSocket ends them all.
 */
export class ShellSessions {
  readonly #o: ShellSessionsOptions;
  readonly #sessions = new Map<number, ShellSession>();
  /** Channels being opened (account lookup, spawn), counted against max_sessions. */
  readonly #opening = new Set<number>();
  /** Bumped when the WebSocket drops: an open that straddles a drop is undone. */
  #connection = 0;
  #dropped = 0;

  constructor(opts: ShellSessionsOptions) {
    this.#o = opts;
  }

  /** The `shell.open` executor: resolves once the PTY runs (or with the refusal). */
  readonly executor: ExecutorSpec<'shell.open'> = {
    exclusive: false,
    run: (params) => this.open(params),
  };

  stats(): ShellSessionsStats {
    return { open: this.#sessions.size, droppedFrames: this.#dropped };
  }

  async open(p: ShellOpenParams): Promise<ExecutorOutcome> {
    const { limits, log } = this.#o;
    if (!limits.enabled) return refuse('shell_disabled', "the shell is disabled in this agent's config (shell.enabled)");
    if (this.#sessions.has(p.channel) || this.#opening.has(p.channel)) return refuse('invalid_request', `channel ${p.channel} is already in use`);
    if (this.#sessions.size + this.#opening.size >= limits.maxSessions) {
      return refuse('too_many_sessions', `this agent already runs ${limits.maxSessions} shell sessions (shell.max_sessions)`);
    }
    const connection = this.#connection;
    this.#opening.add(p.channel);
    try {
      const name = p.user ?? limits.defaultUser;
      const selfUid = this.#o.selfUid ?? process.getuid?.() ?? 0;
      const verdict = judgeAccount(name, await (this.#o.lookup ?? lookupAccount)(name), { allowRoot: limits.allowRoot, selfUid });
      if (!verdict.ok) {
        log.warn('shell refused', { channel: p.channel, user: name, reason: verdict.message });
        return refuse(verdict.key, verdict.message);
      }
      const account = limits.program === null ? verdict.account : { ...verdict.account, shell: limits.program };
      const { file, args } = sessionArgv(account, selfUid, p.command);
      const cwd = (await isDirectory(account.home)) ? account.home : '/';
      let pty: IPty;
      try {
        pty = (await loadPty()).spawn(file, args, { name: p.term, cols: p.cols, rows: p.rows, cwd, env: sessionEnv(account, p.term, p.env), encoding: null });
      } catch (err) {
        return refuse('shell_spawn_failed', `could not start ${file}: ${(err as Error).message}`);
      }
      const session = new ShellSession({
        channel: p.channel,
        pty,
        idleTimeoutMs: limits.idleTimeoutMs,
        maxSessionMs: limits.maxSessionMs,
        send: (frame) => this.#o.send(frame),
        log,
        onEnd: (s) => {
          if (this.#sessions.get(s.channel) === s) this.#sessions.delete(s.channel);
        },
      });
      this.#sessions.set(p.channel, session);
      if (connection !== this.#connection) {
        session.detach();
        return refuse('shell_spawn_failed', 'the connection to the control plane dropped while the shell was starting');
      }
      log.info('shell session started', {
        channel: p.channel,
        pid: session.pid,
        user: account.name,
        mode: p.command === undefined ? 'shell' : 'exec',
        ...(p.session_id === undefined ? {} : { session_id: p.session_id }),
      });
      const output: ShellOpenResult = { channel: p.channel, pid: session.pid, user: account.name, window: SHELL_INITIAL_WINDOW };
      return { status: 'succeeded', output };
    } finally {
      this.#opening.delete(p.channel);
    }
  }

  /** A binary frame from the hub. Frames that do not decode or name no session here are dropped and counted. */
  handleFrame(raw: Buffer): void {
    const decoded = decodeShellFrame(raw);
    if (!decoded.ok) {
      this.#dropped++;
      this.#o.log.warn('shell frame dropped', { reason: decoded.error.reason, message: decoded.error.message.slice(0, 300) });
      this.#o.reportInvalid?.(`binary frame refused (${decoded.error.reason}): ${decoded.error.message}`.slice(0, 2048));
      return;
    }
    const f = decoded.frame;
    const session = this.#sessions.get(f.channel);
    if (!session) {
      this.#dropped++;
      this.#o.log.debug('shell frame for no session dropped', { channel: f.channel, kind: f.kind });
      return;
    }
    switch (f.kind) {
      case 'data':
        session.write(f.data);
        return;
      case 'resize':
        session.resize(f.cols, f.rows);
        return;
      case 'eof':
        session.eof();
        return;
      case 'credit':
        session.grant(f.bytes);
        return;
      case 'close':
        session.terminate('closed', f.message || 'closed by the control plane');
        return;
    }
  }

  /** The WebSocket dropped: every session ends (its process group is hung up, then killed). */
  disconnected(): void {
    this.#connection++;
    for (const s of [...this.#sessions.values()]) s.detach();
  }
}

function refuse(key: ErrorKey, message: string): ExecutorOutcome {
  return { status: 'failed', error: { key, message } };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

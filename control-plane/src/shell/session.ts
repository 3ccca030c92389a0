import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { newId } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';
import type { ShellConfig } from '../config.ts';
import type { Db } from '../db/index.ts';
import { findDashboardSession } from '../db/dashboard-sessions.ts';
import { insertAudit } from '../db/audit.ts';
import { getApiKey } from '../db/api-keys.ts';
import { getSshKeyById } from '../db/ssh-keys.ts';
import { closeOrphanedShellSessions, endShellSession, insertShellSession, updateShellSessionCounters } from '../db/shell-sessions.ts';
import type { OrphanScope } from '../db/shell-sessions.ts';
import { hasScope } from '../auth/scopes.ts';
import { ApiError, isApiError } from '../errors.ts';
import type { ShellChannel, ShellExit, ShellOpener } from './channel.ts';
import { AsciicastWriter, RecordingWriteError } from './recording.ts';
import { resolveInstance } from './resolve-instance.ts';

export type ShellDoor = 'websocket' | 'ssh';

/** Who opens a session, as each door authenticated them. */
export interface ShellCaller {
  workspaceId: string;
  keyId: string;
  scopes: readonly string[];
  /** The SSH key the gateway door authenticated (sessions end when it is deleted). */
  sshKeyId?: string;
  /** The dashboard session (its hash) a browser terminal came through: sessions end at its sign-out. */
  dashboardSessionHash?: string;
  clientAddress: string | null;
}

export interface OpenShellRequest {
  caller: ShellCaller;
  door: ShellDoor;
  /** Instance id or name. */
  instance: string;
  cols: number;
  rows: number;
  term: string;
  env?: Record<string, string>;
  command?: string;
  user?: string;
  /** For the audit rows of the WebSocket door (the ssh door has neither). */
  method?: string;
  route?: string;
  requestId?: string;
}

/** Why a session ended: the channel's reasons plus those the control plane decides. */
export type ShellEndReason =
  | ShellExit['reason']
  | 'key_revoked'
  | 'key_expired'
  | 'ssh_key_removed'
  | 'signed_out'
  | 'operator_closed'
  | 'recording_failed'
  | 'control_plane_stopped';

export interface ShellEnd {
  code: number | null;
  signal: string | null;
  reason: ShellEndReason;
  /** A sentence for the operator when the end was not the process exiting. */
  message: string | null;
}

const END_MESSAGES: Record<Exclude<ShellEndReason, 'exit' | 'error'>, string> = {
  idle_timeout: 'the session was idle for too long',
  max_length: 'the session reached its maximum length',
  agent_disconnected: "the instance's agent disconnected",
  closed: 'the session was closed',
  key_revoked: 'the API key of this session was revoked',
  key_expired: 'the API key of this session expired',
  ssh_key_removed: 'the SSH key of this session was removed',
  signed_out: 'the dashboard session of this terminal was signed out or ended',
  operator_closed: 'the operator closed the connection',
  recording_failed: 'the session recording could not be written, and sessions must be recorded',
  control_plane_stopped: 'the control plane is shutting down',
};

export interface ShellSessionServiceOptions {
  db: Db;
  /** Read at each open: the agent hub sets it when it starts. */
  opener: () => ShellOpener | undefined;
  config: ShellConfig;
  /** Recordings go to `<dataDir>/recordings/<session id>.cast`. */
  dataDir: string;
  /** This process (ctx.nodeId): recorded as the holder of the sessions it opens. */
  nodeId: string;
  /**
   * Several processes on one PostgreSQL database: a node silent this long is dead (the
   * hub's nodeStaleAfterMs). Absent on SQLite, where this process is the only one.
   */
  cluster?: { staleAfterMs: number };
  logger: { warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
  now: () => number;
}

/** Once a channel is asked to close, how long its exit may take before the session is ended without it. */
const CLOSE_GRACE_MS = 10_000;

/**
 * Opens, watches and ends operator shell sessions for both doors: authorizes (scope
 * `shell`, the instance in the caller's workspace, its agent connected), opens the PTY
 * channel, records it, keeps the `shell_sessions` row and the audit trail, and ends
 * sessions whose key is revoked or expired, that sat idle, or ran too long.
 */
export class ShellSessionService {
  readonly #o: ShellSessionServiceOptions;
  readonly #live = new Map<string, ShellSession>();
  #checker: NodeJS.Timeout | undefined;
  #stopping = false;

  constructor(opts: ShellSessionServiceOptions) {
    this.#o = opts;
  }

  get config(): ShellConfig {
    return this.#o.config;
  }

  /** Live sessions (tests, stats). */
  get size(): number {
    return this.#live.size;
  }

  start(): void {
    this.#checker ??= setInterval(() => void this.checkKeys(), this.#o.config.keyCheckMs);
    this.#checker.unref();
  }

  /**
   * At start: ends the sessions a previous run of this process left open (every open one
   * on SQLite; on PostgreSQL only this node's, others may be live elsewhere).
   */
  async closeOrphans(): Promise<number> {
    const { cluster, nodeId, now } = this.#o;
    // Liveness on the heartbeats' clock (../hub/cluster.ts), not the replaceable one of the rows.
    return this.#closeOrphans(cluster ? { kind: 'own', nodeId, liveSince: Date.now() - cluster.staleAfterMs } : { kind: 'all' }, now());
  }

  /**
   * Several processes: ends the sessions of nodes silent since `liveSince` (run at each
   * node heartbeat, ../hub/cluster.ts). Every live node runs it; each row is ended and
   * audited once whichever gets there first.
   */
  async closeSessionsOfDeadNodes(liveSince: number): Promise<number> {
    return this.#closeOrphans({ kind: 'dead', nodeId: this.#o.nodeId, liveSince }, this.#o.now());
  }

  async #closeOrphans(scope: OrphanScope, now: number): Promise<number> {
    const closed = await closeOrphanedShellSessions(this.#o.db, scope, now);
    if (closed.length > 0) {
      const nodes = [...new Set(closed.map((r) => r.nodeId ?? 'unknown'))];
      this.#o.logger.warn({ sessions: closed.length, nodes }, 'shell sessions whose control plane stopped under them were ended (control_plane_stopped)');
    }
    return closed.length;
  }

  /** Ends every live session (the control plane is stopping). */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#checker) clearInterval(this.#checker);
    this.#checker = undefined;
    await Promise.all([...this.#live.values()].map((s) => s.terminate('control_plane_stopped')));
  }

  /**
   * Authorizes and opens a session. Throws ApiError (forbidden, instance_not_found,
   * agent_not_connected, recording_failed, or the channel's
   * own refusals); every refusal is an audit row.
   */
  async open(req: OpenShellRequest): Promise<ShellSession> {
    const { db, config, now } = this.#o;
    const { caller } = req;
    let instanceId: string | null = null;
    const audit = (action: string, status: number, errorKey: ErrorKey | null, targets: Record<string, string>) =>
      insertAudit(db, {
        at: now(),
        workspaceId: caller.workspaceId,
        keyId: caller.keyId,
        channel: 'shell',
        tool: null,
        action,
        method: req.method ?? null,
        route: req.route ?? null,
        targetIds: { ...targets, via: req.door, ...(caller.sshKeyId !== undefined && { ssh_key_id: caller.sshKeyId }) },
        status,
        errorKey,
        requestId: req.requestId ?? null,
        clientAddress: caller.clientAddress,
      });
    let recorder: AsciicastWriter | null = null;
    const sessionId = newId('shellSession');
    try {
      if (this.#stopping) throw new ApiError('agent_not_connected', 'The control plane is shutting down.');
      if (!hasScope(caller.scopes, 'shell')) throw new ApiError('forbidden', `The API key ${caller.keyId} lacks the scope shell.`);
      const { instance, agent } = await resolveInstance(db, caller.workspaceId, req.instance);
      instanceId = instance.id;
      const opener = this.#o.opener();
      if (!agent || agent.state !== 'connected' || !opener) {
        throw new ApiError('agent_not_connected', `The vmkit-agent of instance ${instance.id} is not connected.`);
      }
      const recordingPath = join(this.#o.dataDir, 'recordings', `${sessionId}.cast`);
      try {
        recorder = new AsciicastWriter(
          recordingPath,
          { width: req.cols, height: req.rows, timestamp: Math.floor(now() / 1000), term: req.term, title: `${instance.name} (${instance.id})${req.command === undefined ? '' : `: ${req.command}`}` },
          now,
        );
      } catch (err) {
        // The operator is told that, not where: the path and errno stay in the log.
        if (config.requireRecording) {
          this.#o.logger.error({ err, session_id: sessionId }, 'shell session refused: the recording cannot be written');
          throw new ApiError('recording_failed', 'The recording of this session cannot be written, and this control plane requires every shell session to be recorded.');
        }
        this.#o.logger.error({ err, session_id: sessionId }, 'shell session runs unrecorded: the recording cannot be written');
      }
      const channel = await opener.open({
        agentId: agent.id,
        cols: req.cols,
        rows: req.rows,
        term: req.term,
        ...(req.user !== undefined && { user: req.user }),
        ...(req.env !== undefined && { env: req.env }),
        ...(req.command !== undefined && { command: req.command }),
        // Names the session in the agent's log (and the holder's, when the channel is relayed).
        sessionId,
      });
      const row = await insertShellSession(db, {
        id: sessionId,
        workspaceId: caller.workspaceId,
        instanceId: instance.id,
        keyId: caller.keyId,
        via: req.door,
        recordingPath: recorder?.path ?? null,
        command: req.command ?? null,
        runAs: req.user ?? null,
        startedAt: now(),
        nodeId: this.#o.nodeId,
      });
      await audit('shell.open', 200, null, { instance_id: instance.id, session_id: sessionId });
      const session = new ShellSession(row.id, row.instanceId, caller, channel, recorder, this.#o, (s, end) => this.#ended(s, end, req));
      this.#live.set(session.id, session);
      return session;
    } catch (err) {
      if (recorder) {
        recorder.close();
        rmSync(recorder.path, { force: true });
      }
      const apiErr = isApiError(err) ? err : new ApiError('internal');
      if (!isApiError(err)) this.#o.logger.error({ err }, 'opening a shell session failed');
      await audit('shell.refused', apiErr.status, apiErr.key, instanceId === null ? { instance: req.instance.slice(0, 128) } : { instance_id: instanceId });
      throw apiErr;
    }
  }

  async #ended(session: ShellSession, end: ShellEnd, req: OpenShellRequest): Promise<void> {
    this.#live.delete(session.id);
    const { db, now } = this.#o;
    try {
      await endShellSession(db, session.id, {
        exitCode: end.code,
        exitSignal: end.signal,
        bytesIn: session.bytesIn,
        bytesOut: session.bytesOut,
        endReason: end.reason,
        endedAt: now(),
      });
      await insertAudit(db, {
        at: now(),
        workspaceId: session.caller.workspaceId,
        keyId: session.caller.keyId,
        channel: 'shell',
        tool: null,
        action: 'shell.close',
        method: req.method ?? null,
        route: req.route ?? null,
        targetIds: { instance_id: session.instanceId, session_id: session.id, via: req.door, end_reason: end.reason },
        // A session ended because its recording failed is an error on the trail, findable by its key.
        ...(end.reason === 'recording_failed' ? { status: 503, errorKey: 'recording_failed' as const } : { status: 200, errorKey: null }),
        requestId: req.requestId ?? null,
        clientAddress: session.caller.clientAddress,
      });
    } catch (err) {
      this.#o.logger.error({ err, session_id: session.id }, 'the end of a shell session could not be stored');
    }
  }

  /** Ends at once the browser terminals opened through a dashboard session (its sign-out). */
  endDashboardSession(hash: string): void {
    for (const s of [...this.#live.values()]) {
      if (s.caller.dashboardSessionHash === hash) void s.terminate('signed_out');
    }
  }

  /**
   * Ends sessions whose API key was revoked or expired, whose SSH key was removed, or
   * whose dashboard session ended; saves counters.
   */
  async checkKeys(): Promise<void> {
    const { db, now } = this.#o;
    const t = now();
    for (const s of [...this.#live.values()]) {
      try {
        const key = await getApiKey(db, s.caller.workspaceId, s.caller.keyId);
        if (!key || key.revokedAt !== null) {
          void s.terminate('key_revoked');
          continue;
        }
        if (key.expiresAt !== null && key.expiresAt <= t) {
          void s.terminate('key_expired');
          continue;
        }
        if (s.caller.sshKeyId !== undefined && !(await getSshKeyById(db, s.caller.sshKeyId))) {
          void s.terminate('ssh_key_removed');
          continue;
        }
        if (s.caller.dashboardSessionHash !== undefined) {
          const dashboard = await findDashboardSession(db, s.caller.dashboardSessionHash);
          if (!dashboard || dashboard.session.expiresAt <= t) {
            void s.terminate('signed_out');
            continue;
          }
        }
        await updateShellSessionCounters(db, s.id, s.bytesIn, s.bytesOut);
      } catch (err) {
        this.#o.logger.error({ err, session_id: s.id }, 'checking the key of a shell session failed');
      }
    }
  }
}

type Output = (chunk: Buffer, done: () => void) => void;

/**
 * One live session as a door sees it: bytes both ways with the channel's flow control,
 * resize, and one `onEnd` telling why it ended. Output is recorded before it is handed
 * to the door; the agent gets its credit back only once the door called `done`.
 */
export class ShellSession {
  bytesIn = 0;
  bytesOut = 0;
  #recorder: AsciicastWriter | null;
  #output: Output | undefined;
  readonly #pending: [Buffer, () => void][] = [];
  readonly #endCbs: ((end: ShellEnd) => void)[] = [];
  #end: ShellEnd | undefined;
  #closing: ShellEndReason | undefined;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #idle: NodeJS.Timeout;
  readonly #opts: ShellSessionServiceOptions;
  #finished: Promise<void> | undefined;

  readonly id: string;
  readonly instanceId: string;
  readonly caller: ShellCaller;
  readonly channel: ShellChannel;
  readonly onEnded: (s: ShellSession, end: ShellEnd) => Promise<void>;
  constructor(
    id: string,
    instanceId: string,
    caller: ShellCaller,
    channel: ShellChannel,
    recorder: AsciicastWriter | null,
    opts: ShellSessionServiceOptions,
    onEnded: (s: ShellSession, end: ShellEnd) => Promise<void>,
  ) {
    this.id = id;
    this.instanceId = instanceId;
    this.caller = caller;
    this.channel = channel;
    this.onEnded = onEnded;
    this.#recorder = recorder;
    this.#opts = opts;
    this.#idle = setTimeout(() => void this.terminate('idle_timeout'), opts.config.idleTimeoutMs);
    this.#timers.push(this.#idle, setTimeout(() => void this.terminate('max_length'), opts.config.maxSessionMs));
    channel.onData((chunk, done) => {
      this.#idle.refresh();
      this.bytesOut += chunk.length;
      this.#record((r) => r.output(chunk));
      if (this.#output) this.#output(chunk, done);
      else this.#pending.push([chunk, done]);
    });
    channel.onExit((exit) => this.#finish({ code: exit.code, signal: exit.signal, reason: exit.reason, message: exit.message ?? null }));
  }

  get ended(): ShellEnd | undefined {
    return this.#end;
  }

  /** The door's sink for VM output; chunks that came before it are handed over now. */
  onOutput(cb: Output): void {
    this.#output = cb;
    for (const [chunk, done] of this.#pending.splice(0)) cb(chunk, done);
  }

  /** Called once, after the last output chunk. */
  onEnd(cb: (end: ShellEnd) => void): void {
    if (this.#end) cb(this.#end);
    else this.#endCbs.push(cb);
  }

  /** Operator → VM; false when the channel's window is full (wait for onDrain). */
  write(data: Buffer): boolean {
    if (this.#end || this.#closing) return true;
    this.#idle.refresh();
    this.bytesIn += data.length;
    if (this.#opts.config.recordInput) this.#record((r) => r.input(data));
    return this.channel.write(data);
  }

  onDrain(cb: () => void): void {
    this.channel.onDrain(cb);
  }

  resize(cols: number, rows: number): void {
    if (this.#end || this.#closing) return;
    this.#record((r) => r.resize(cols, rows));
    this.channel.resize(cols, rows);
  }

  eof(): void {
    if (!this.#end && !this.#closing) this.channel.eof();
  }

  /**
   * Ends the session for a reason of the control plane's (or the operator's). Resolves
   * once the end is stored. The channel's own exit is awaited a short while so the last
   * output still reaches the recording; without it the session ends anyway.
   */
  terminate(reason: ShellEndReason): Promise<void> {
    if (this.#end) return this.#finished ?? Promise.resolve();
    if (!this.#closing) {
      this.#closing = reason;
      try {
        this.channel.close(reason);
      } catch (err) {
        this.#opts.logger.warn({ err, session_id: this.id }, 'closing a shell channel failed');
      }
      const grace = setTimeout(() => this.#finish({ code: null, signal: null, reason: 'closed', message: null }), CLOSE_GRACE_MS);
      grace.unref();
      this.#timers.push(grace);
    }
    return new Promise((resolve) => this.onEnd(() => void (this.#finished ?? Promise.resolve()).then(resolve)));
  }

  #record(write: (r: AsciicastWriter) => void): void {
    const r = this.#recorder;
    if (!r) return;
    try {
      write(r);
    } catch (err) {
      this.#recorder = null;
      try {
        r.close();
      } catch {
        // already failing; the first error is the one logged
      }
      this.#opts.logger.error({ err, session_id: this.id }, 'the shell session recording failed');
      if (err instanceof RecordingWriteError && this.#opts.config.requireRecording) void this.terminate('recording_failed');
    }
  }

  #finish(exit: { code: number | null; signal: string | null; reason: ShellEndReason; message: string | null }): void {
    if (this.#end) return;
    for (const t of this.#timers) clearTimeout(t);
    // After a close we asked for, the agent reports `closed` or the killed process's
    // exit: the operator is told our reason instead.
    const reason = this.#closing ?? exit.reason;
    const message = reason === 'exit' ? null : reason === 'error' ? (exit.message ?? 'the session failed') : END_MESSAGES[reason];
    const end: ShellEnd = { code: exit.code, signal: exit.signal, reason, message };
    this.#end = end;
    try {
      this.#recorder?.close();
    } catch (err) {
      this.#opts.logger.error({ err, session_id: this.id }, 'closing the shell session recording failed');
    }
    this.#recorder = null;
    this.#finished = this.onEnded(this, end);
    for (const cb of this.#endCbs.splice(0)) cb(end);
  }
}

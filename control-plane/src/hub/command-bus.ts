import {
  DEFAULT_COMMAND_LIFETIME_MS,
  MAX_COMMAND_LIFETIME_MS,
  PROTOCOL_VERSION,
  canonicalJson,
  commandSigningBytes,
  commandSigningText,
  decodePublicKey,
  prepareCommand,
  signCommandText,
  verifyCommandBatch,
} from '@vmkit/protocol';
import type { CommandEnvelope, CommandParams, CommandType, MessageOf } from '@vmkit/protocol';
import type { AgentLink, CommandReply, HubListener, HubLogger } from './agent-hub.ts';
import { CommandBatchSigner } from './batch-signer.ts';
import type { CommandSignature } from './batch-signer.ts';
import { AgentCommandError, AgentNotConnectedError, CommandAbortedError, CommandBusError, CommandTimeoutError } from './errors.ts';
import type { SigningKeyRing } from './signing-keys.ts';
import type { AgentIdentity, CommandStore, RecordResultOutcome, StoredCommand, StoredResult } from './store.ts';

export type CommandProgress = Omit<MessageOf<'progress'>, 'protocol' | 'type'>;

export interface SendOptions {
  /** How long to wait for the result, queueing included. Default 30 s. */
  timeoutMs?: number;
  /** Called for each `progress` frame, in order. */
  onProgress?: (progress: CommandProgress) => void;
  /**
   * Called once with the command id, as soon as the command is persisted; delivery
   * waits for it, so what it records is on file before the agent can answer.
   */
  onCommandId?: (commandId: string) => void | Promise<void>;
  /** Stop waiting (the command is still stored; a later result is still recorded). */
  signal?: AbortSignal;
  /** Fail at once with AgentNotConnectedError instead of queueing for a disconnected agent. */
  requireConnected?: boolean;
  /** Envelope validity; default max(5 min, timeoutMs), at most 15 min. */
  lifetimeMs?: number;
  /** Sign with this key id instead of the active key (key rotation catch-up only). */
  signWith?: string;
}

export type ResumeOptions = Pick<SendOptions, 'timeoutMs' | 'onProgress' | 'signal'>;

export interface CommandOutcome {
  commandId: string;
  status: 'succeeded';
  output: Record<string, unknown>;
  finishedAt: number;
}

/**
 * How services reach agents: sign, persist, deliver, and await the agent's result.
 * Resolves with the successful result; rejects with AgentCommandError (the agent
 * refused or failed: a wire error) or a CommandBusError (timeout, not connected,
 * aborted: a local error).
 *
 * The in-process implementation below delivers through the hub of this process. A
 * multi-instance deployment adds another implementation with the same interface:
 * `send` persists the command and NOTIFYs (PostgreSQL LISTEN/NOTIFY or NATS); the
 * process holding the agent's socket delivers it and publishes replies back.
 */
export interface CommandBus {
  send<T extends CommandType>(agentId: string, type: T, params: CommandParams<T>, opts?: SendOptions): Promise<CommandOutcome>;
  /** The stored command, its state and result (for status pages and polling). */
  get(commandId: string): Promise<StoredCommand | undefined>;
  /**
   * Awaits a command stored earlier, typically by a process that died before its
   * result came: resolves or rejects as `send` would have. Its result may already be
   * stored, or still arrive from the agent's journal once it reconnects.
   */
  resume(commandId: string, opts?: ResumeOptions): Promise<CommandOutcome>;
  close(): Promise<void>;
}

interface Waiter {
  agentId: string;
  timeoutMs: number;
  resolve(outcome: CommandOutcome): void;
  reject(err: Error): void;
  onProgress: ((p: CommandProgress) => void) | undefined;
  timer: NodeJS.Timeout;
  /** The caller's signal and its listener, when it gave one. */
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** Stops a waiter's timer and abort listener. */
function cleanup(w: Waiter): void {
  clearTimeout(w.timer);
  if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
}

/**
 * Past one process: how the bus reaches agents another process holds, and callers
 * another process serves (PostgreSQL LISTEN/NOTIFY: ../db/pg-command-router.ts). Every
 * body stays in the tables; only ids (and a progress frame) travel.
 */
export interface CommandRouter {
  /** Whether a live node other than this one holds the agent's connection. */
  heldElsewhere(agentId: string): Promise<boolean>;
  /** Every agent a live node other than this one holds. */
  heldElsewhereIds(): Promise<string[]>;
  /** A command for an agent not connected here was stored: tell the live node that holds it, if any. */
  forward(agentId: string, commandId: string): Promise<void>;
  /** A result was stored (no progress) or progress came for a command nobody here awaits: tell the node whose caller does. */
  replied(commandId: string, progress?: CommandProgress): Promise<void>;
  /** This process now awaits the command (resume): replies are to come here. */
  claim(commandId: string): Promise<void>;
}

export interface InProcessCommandBusOptions {
  store: CommandStore;
  link: AgentLink;
  /** Agents connected to other processes (several processes on PostgreSQL); absent: this process holds every agent. */
  router?: CommandRouter;
  keys: SigningKeyRing;
  logger?: HubLogger;
  /** How often queued commands past their expiry are marked `expired`. Default 10 s. */
  sweepIntervalMs?: number;
  /**
   * In-flight commands from before this bus started (a restart lost their waiters) are
   * marked `timed_out` this long after their envelope expired. Default 10 min, room for
   * a reconnecting agent to re-send a journaled result first.
   */
  orphanGraceMs?: number;
  /** Most commands one batch signature covers (./batch-signer.ts). Default 1,024. */
  maxBatchLeaves?: number;
  now?: () => number;
}

type Deliverable = Pick<StoredCommand, 'id' | 'agentId' | 'envelope' | 'signature' | 'batch'>;

/** One agent's ack of one command (another agent's frames never touch it). */
const ackKey = (agentId: string, commandId: string) => `${agentId} ${commandId}`;

/** A queued command is only delivered while it has at least this much life left. */
const DELIVERY_MARGIN_MS = 2_000;

export class InProcessCommandBus implements CommandBus, HubListener {
  readonly #store: CommandStore;
  readonly #link: AgentLink;
  readonly #router: CommandRouter | undefined;
  readonly #keys: SigningKeyRing;
  readonly #log: HubLogger | undefined;
  readonly #waiters = new Map<string, Waiter>();
  readonly #resuming = new Set<string>();
  readonly #replyChains = new Map<string, Promise<void>>();
  /** Acks received and not yet handled (`ackKey`); a result arriving first makes the ack's write moot. */
  readonly #acksWaiting = new Set<string>();
  /** Commands stored as `sent` whose agent was gone at delivery, while they go back to `queued`. */
  readonly #requeuing = new Set<string>();
  /**
   * Commands a `send` (or a queued command's delivery) is taking to the agent right now,
   * from before their row says `sent` until the frame is written: a reconnect's re-send
   * that reads such a row leaves it to them. A count: a send and a pass may deliver the
   * same queued command at once (one of them wins the transition).
   */
  readonly #delivering = new Map<string, number>();
  /**
   * While an agent's re-send pass runs (#flushQueue): the commands delivered to it
   * meanwhile, by the pass or outside it, so that none goes out twice.
   */
  readonly #passes = new Map<string, Set<string>>();
  readonly #sweeper: NodeJS.Timeout;
  readonly #startedAt = Date.now();
  readonly #orphanGraceMs: number;
  readonly #batchSigner: CommandBatchSigner;
  #closed = false;

  constructor(opts: InProcessCommandBusOptions) {
    this.#store = opts.store;
    this.#link = opts.link;
    this.#router = opts.router;
    this.#keys = opts.keys;
    this.#log = opts.logger;
    this.#orphanGraceMs = opts.orphanGraceMs ?? 10 * 60_000;
    this.#batchSigner = new CommandBatchSigner({ maxLeaves: opts.maxBatchLeaves ?? 1024 });
    this.#sweeper = setInterval(() => void this.#sweep(), opts.sweepIntervalMs ?? 10_000);
    this.#sweeper.unref();
  }

  async send<T extends CommandType>(agentId: string, type: T, params: CommandParams<T>, opts: SendOptions = {}): Promise<CommandOutcome> {
    if (this.#closed) throw new CommandBusError('internal', 'the command bus is closed');
    if (opts.requireConnected && !this.#link.isConnected(agentId) && !(await this.#router?.heldElsewhere(agentId))) {
      throw new AgentNotConnectedError(agentId);
    }
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const lifetimeMs = Math.min(MAX_COMMAND_LIFETIME_MS, opts.lifetimeMs ?? Math.max(DEFAULT_COMMAND_LIFETIME_MS, timeoutMs));
    const key = opts.signWith === undefined ? this.#keys.active() : this.#keys.get(opts.signWith);
    if (!key) throw new CommandBusError('internal', `no signing key ${opts.signWith ?? ''}`);
    // An agent held here, and nothing to run between storing and delivering: the command
    // is stored as `sent` and goes out the moment that write committed (one write fewer
    // than queued, then sent). Otherwise it waits as `queued`.
    const direct = opts.onCommandId === undefined && this.#link.isConnected(agentId);
    // Only a command going straight to a connection that reads batch signatures shares one;
    // one that waits may reach a connection that does not (#frame then re-signs it). A
    // batched command is built when its batch is signed (its issued_at is then): while it
    // waits for its turn it holds only these arguments (see CommandBatchSigner).
    let envelope: CommandEnvelope;
    let signed: CommandSignature;
    if (direct && this.#link.supports?.(agentId, 'batch-signature')) {
      ({ value: envelope, ...signed } = await this.#batchSigner.signPrepared(key, () => {
        const p = prepareCommand(key, { agentId, type, params, now: Date.now(), lifetimeMs });
        return { text: commandSigningText(p.canonical), value: p.envelope };
      }));
    } else {
      const p = prepareCommand(key, { agentId, type, params, now: Date.now(), lifetimeMs });
      envelope = p.envelope;
      signed = { signature: signCommandText(key.privateKey, p.canonical) };
    }
    const id = envelope.id;
    const now = envelope.issued_at;
    if (opts.signal?.aborted) throw new CommandAbortedError(id);
    const stored: Omit<StoredCommand, 'result' | 'updatedAt'> = {
      id,
      agentId,
      type,
      envelope,
      signature: signed.signature,
      batch: signed.batch,
      state: direct ? 'sent' : 'queued',
      createdAt: now,
      expiresAt: envelope.expires_at,
    };
    if (direct) this.#deliveryStarts(id);
    try {
      await this.#store.insert(stored);
    } catch (err) {
      this.#deliveryEnds(id);
      throw err;
    }
    const outcome = this.#wait(id, agentId, timeoutMs, opts);
    try {
      if (direct) await this.#deliverStoredAsSent(stored);
      else {
        await opts.onCommandId?.(id);
        if (this.#link.isConnected(agentId)) await this.#deliver(stored);
        else if (this.#router) await this.#forward(agentId, id);
      }
    } catch (err) {
      // Nobody will await `outcome`: forget the waiter so its timer cannot reject it unobserved.
      const waiter = this.#waiters.get(id);
      this.#waiters.delete(id);
      if (waiter) cleanup(waiter);
      throw err;
    }
    return outcome;
  }

  get(commandId: string): Promise<StoredCommand | undefined> {
    return this.#store.get(commandId);
  }

  async resume(commandId: string, opts: ResumeOptions = {}): Promise<CommandOutcome> {
    if (this.#closed) throw new CommandBusError('internal', 'the command bus is closed');
    // Claimed before the first await: of two resumes at once the later is refused, in
    // whatever order a pooled database answers their reads.
    if (this.#waiters.has(commandId) || this.#resuming.has(commandId)) {
      throw new CommandBusError('conflict', `command ${commandId} is already awaited`);
    }
    this.#resuming.add(commandId);
    try {
      const cmd = await this.#store.get(commandId);
      if (!cmd) throw new CommandBusError('command_not_found', `no command ${commandId}`);
      const outcome = this.#wait(commandId, cmd.agentId, opts.timeoutMs ?? 30_000, opts);
      if (this.#router) await this.#claim(commandId);
      // Read again now that the waiter is in place: a result stored meanwhile settles it.
      const now = await this.#store.get(commandId);
      if (now?.result) this.#settle(commandId, now.result);
      else if (now?.state === 'expired' || now?.state === 'timed_out') void this.#giveUp(commandId);
      return outcome;
    } finally {
      this.#resuming.delete(commandId);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const [id, w] of this.#waiters) {
      cleanup(w);
      w.reject(new CommandAbortedError(id));
    }
    this.#waiters.clear();
    return Promise.resolve();
  }

  #wait(id: string, agentId: string, timeoutMs: number, opts: Pick<SendOptions, 'onProgress' | 'signal'>): Promise<CommandOutcome> {
    if (this.#closed) {
      // The bus closed while the caller awaited the database: nobody would settle this wait.
      // Marked handled here; the caller still gets the rejection when it awaits.
      const aborted = Promise.reject(new CommandAbortedError(id));
      aborted.catch(() => undefined);
      return aborted;
    }
    const outcome = new Promise<CommandOutcome>((resolve, reject) => {
      // No closures but the abort listener (only with a signal): a fan-out keeps thousands
      // of waiters alive for seconds, and what they hold is what each scavenge copies.
      const signal = opts.signal;
      const onAbort = signal && (() => void this.#giveUp(id, new CommandAbortedError(id)));
      const waiter: Waiter = { agentId, timeoutMs, resolve, reject, onProgress: opts.onProgress, timer: setTimeout(this.#onTimeout, timeoutMs, id), signal, onAbort };
      if (onAbort) signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.set(id, waiter);
    });
    // send() and resume() still await their own steps (onCommandId, delivery, a read) before
    // they hand this promise to the caller; a close or timeout in between must not surface
    // as an unhandled rejection, which ends the process. The caller still gets the rejection.
    outcome.catch(() => undefined);
    return outcome;
  }

  /** Holder side (routed): a command another process stored for an agent this one holds goes out now. */
  async deliverStored(commandId: string): Promise<void> {
    const cmd = await this.#store.get(commandId);
    if (cmd?.state === 'queued' && this.#link.isConnected(cmd.agentId)) await this.#deliver(cmd);
  }

  /** Caller side (routed): the holder stored a result; a waiter here settles from the stored row. */
  async resultStored(commandId: string): Promise<void> {
    if (!this.#waiters.has(commandId)) return;
    const cmd = await this.#store.get(commandId);
    if (cmd?.result) this.#settle(commandId, cmd.result);
  }

  /** Caller side (routed): a progress frame the holder passed on. */
  progressRelayed(commandId: string, progress: CommandProgress): void {
    this.#progress(commandId, progress);
  }

  /**
   * After notifications may have been missed (the LISTEN connection was lost): what they
   * would have said is read from the tables. Queued commands of the agents held here go
   * out; waiters whose result is stored settle.
   */
  async resync(heldAgentIds: Iterable<string>): Promise<void> {
    for (const agentId of heldAgentIds) await this.#flushQueue(agentId);
    for (const id of [...this.#waiters.keys()]) await this.resultStored(id);
  }

  // HubListener: queued (and sent-but-never-acked) commands go out when the agent connects.
  agentConnected(agent: AgentIdentity): void {
    void this.#flushQueue(agent.id).catch((err: unknown) => this.#log?.error({ err, agentId: agent.id }, 'bus: delivering queued commands failed'));
  }

  agentMessage(agentId: string, message: CommandReply): void {
    // An ack whose command's result arrives before the ack was handled (both in one read,
    // typical of a fast command) is not written: the result's write sets the final state
    // from `sent` just as well, and a command with a result is never re-sent.
    let ackDropped = false;
    if (message.type === 'ack') this.#acksWaiting.add(ackKey(agentId, message.command_id));
    else if (message.type === 'result') ackDropped = this.#acksWaiting.delete(ackKey(agentId, message.command_id));
    // Replies of one agent are handled in arrival order (progress before its result).
    const prev = this.#replyChains.get(agentId) ?? Promise.resolve();
    const next = prev
      .then(() => this.#onReply(agentId, message, ackDropped))
      .catch((err: unknown) => this.#log?.error({ err, agentId, commandId: message.command_id }, 'bus: handling a reply failed'));
    this.#replyChains.set(agentId, next);
    void next.then(() => {
      if (this.#replyChains.get(agentId) === next) this.#replyChains.delete(agentId);
    });
  }

  async #flushQueue(agentId: string): Promise<void> {
    // A pass already running for this agent shares its record.
    const own = !this.#passes.has(agentId);
    const delivered = this.#passes.get(agentId) ?? new Set<string>();
    if (own) this.#passes.set(agentId, delivered);
    try {
      for (const cmd of await this.#store.deliverable(agentId, Date.now() + DELIVERY_MARGIN_MS)) {
        if (cmd.state === 'queued') await this.#deliver(cmd);
        // A `sent` row is re-sent unless it already went out on this connection during the
        // pass, or its own delivery is under way (a send that stored it as the agent connected).
        else if (!this.#requeuing.has(cmd.id) && !this.#delivering.has(cmd.id) && !delivered.has(cmd.id)) {
          const frame = this.#frame(cmd);
          if (frame && this.#link.deliver(agentId, frame)) delivered.add(cmd.id);
        }
      }
    } finally {
      if (own) this.#passes.delete(agentId);
    }
  }

  /** A frame went out: a re-send pass of its agent that is running must not send it again. */
  #sent(agentId: string, commandId: string): void {
    this.#passes.get(agentId)?.add(commandId);
  }

  /**
   * The command frame for the agent's connection now. A batch-signed command for a
   * connection that did not name `batch-signature` (the agent reconnected with an older
   * version) is re-signed singly, but only once its stored batch signature verified under
   * our own key: the database alone must never get an envelope of its own signed. Undefined
   * (logged) when that fails: the command stays undelivered and expires.
   */
  #frame(cmd: Deliverable): MessageOf<'command'> | undefined {
    const { envelope, signature, batch } = cmd;
    if (!batch) return { protocol: PROTOCOL_VERSION, type: 'command', envelope, signature };
    if (this.#link.supports?.(cmd.agentId, 'batch-signature')) return { protocol: PROTOCOL_VERSION, type: 'command', envelope, signature, batch };
    const key = this.#keys.get(envelope.key_id);
    try {
      const canonical = canonicalJson(envelope);
      if (key && verifyCommandBatch(decodePublicKey(key.publicKey), commandSigningBytes(canonical), batch, Buffer.from(signature, 'base64url'))) {
        return { protocol: PROTOCOL_VERSION, type: 'command', envelope, signature: signCommandText(key.privateKey, canonical) };
      }
    } catch {
      // a stored envelope canonicalJson refuses: not ours either
    }
    this.#log?.error({ agentId: cmd.agentId, commandId: cmd.id, keyId: envelope.key_id }, 'bus: a batch-signed command for an agent without batch signatures could not be re-signed (key gone or batch signature invalid); not delivered');
    return undefined;
  }

  /**
   * A command stored as `sent` goes out now. An agent gone now left while the insert
   * committed: the command goes back to `queued`, so it ends `expired` if it never reaches
   * the agent. Until that write committed, a reconnect's re-send skips it (it would be out
   * while the row says queued); an agent back by then gets it at once, else at its next
   * connect. On PostgreSQL a reconnect to another node within the insert's round trip may
   * still re-send it, and the agent answers a second copy from its journal.
   */
  async #deliverStoredAsSent(cmd: Deliverable): Promise<void> {
    try {
      const frame = this.#frame(cmd);
      if (frame && this.#link.deliver(cmd.agentId, frame)) return this.#sent(cmd.agentId, cmd.id);
      // Gone, or connected again and not yet welcomed: back to queued, then the usual way.
      this.#requeuing.add(cmd.id);
    } finally {
      this.#deliveryEnds(cmd.id);
    }
    try {
      await this.#store.transition(cmd.id, ['sent'], 'queued', Date.now());
    } finally {
      this.#requeuing.delete(cmd.id);
    }
    if (this.#link.isConnected(cmd.agentId)) await this.#deliver(cmd);
    else if (this.#router) await this.#forward(cmd.agentId, cmd.id);
  }

  async #deliver(cmd: Deliverable): Promise<void> {
    // One that cannot be framed for this connection stays queued (and expires).
    const framed = this.#frame(cmd);
    if (!framed) return;
    // The conditional transition makes delivery at-most-once per connection even when
    // send() and an agent's (re)connect race for the same queued command. A connection not
    // yet welcomed refuses the frame: the row says `sent`, and the re-send pass that
    // follows the welcome sends it.
    this.#deliveryStarts(cmd.id);
    try {
      if (!(await this.#store.transition(cmd.id, ['queued'], 'sent', Date.now()))) return;
      // A reconnect meanwhile may have brought a connection without batch signatures.
      const frame = framed.batch === undefined || this.#link.supports?.(cmd.agentId, 'batch-signature') ? framed : this.#frame(cmd);
      if (frame && this.#link.deliver(cmd.agentId, frame)) this.#sent(cmd.agentId, cmd.id);
    } finally {
      this.#deliveryEnds(cmd.id);
    }
  }

  #deliveryStarts(commandId: string): void {
    this.#delivering.set(commandId, (this.#delivering.get(commandId) ?? 0) + 1);
  }

  #deliveryEnds(commandId: string): void {
    const n = (this.#delivering.get(commandId) ?? 1) - 1;
    if (n > 0) this.#delivering.set(commandId, n);
    else this.#delivering.delete(commandId);
  }

  async #onReply(agentId: string, msg: CommandReply, ackDropped: boolean): Promise<void> {
    const now = Date.now();
    if (msg.type === 'result') {
      const result: StoredResult = {
        status: msg.status,
        output: msg.output,
        error: msg.error,
        finished_at: msg.finished_at,
      };
      let outcome: RecordResultOutcome;
      try {
        outcome = await this.#store.recordResult(msg.command_id, agentId, result, now);
      } catch (err) {
        // Not stored after all: the dropped ack is written, so the command is not re-sent.
        if (ackDropped) await this.#store.transition(msg.command_id, ['queued', 'sent'], 'acked', now, agentId).catch(() => false);
        throw err;
      }
      if (outcome === 'unknown') this.#log?.warn({ agentId, commandId: msg.command_id }, 'bus: result for an unknown command, acknowledged and dropped');
      // Acknowledge only after the result is stored, so the agent's journal can let go.
      this.#link.acknowledgeResult(agentId, msg.command_id);
      if (outcome === 'stored') {
        if (this.#waiters.has(msg.command_id) || !this.#router) this.#settle(msg.command_id, result);
        else await this.#relay(msg.command_id);
      }
      return;
    }
    if (msg.type === 'ack') {
      // Its result came first and wrote the state (see agentMessage).
      if (!this.#acksWaiting.delete(ackKey(agentId, msg.command_id))) return;
      // One conditional write, no read first: it moves only this agent's own command.
      if (await this.#store.transition(msg.command_id, ['queued', 'sent'], 'acked', now, agentId)) return;
      // Not moved: acked already (a re-sent ack), or not a command of this agent's.
      const cmd = await this.#store.get(msg.command_id);
      if (!cmd || cmd.agentId !== agentId) this.#log?.warn({ agentId, commandId: msg.command_id, type: msg.type }, 'bus: reply for an unknown command');
      return;
    }
    const cmd = await this.#store.get(msg.command_id);
    if (!cmd || cmd.agentId !== agentId) {
      this.#log?.warn({ agentId, commandId: msg.command_id, type: msg.type }, 'bus: reply for an unknown command');
      return;
    }
    await this.#store.transition(cmd.id, ['queued', 'sent', 'acked'], 'running', now);
    const { protocol: _p, type: _t, ...progress } = msg;
    if (this.#waiters.has(cmd.id) || !this.#router) this.#progress(cmd.id, progress);
    else await this.#relay(cmd.id, progress);
  }

  #progress(commandId: string, progress: CommandProgress): void {
    const waiter = this.#waiters.get(commandId);
    if (!waiter?.onProgress) return;
    try {
      waiter.onProgress(progress);
    } catch (err) {
      this.#log?.error({ err, commandId }, 'bus: onProgress threw');
    }
  }

  /** Routing failures never fail the command: it is stored, and the tables are re-read after a lost connection. */
  async #forward(agentId: string, commandId: string): Promise<void> {
    try {
      await this.#router?.forward(agentId, commandId);
    } catch (err) {
      this.#log?.error({ err, agentId, commandId }, 'bus: telling the node that holds the agent failed');
    }
  }

  async #relay(commandId: string, progress?: CommandProgress): Promise<void> {
    try {
      await this.#router?.replied(commandId, progress);
    } catch (err) {
      this.#log?.error({ err, commandId }, 'bus: telling the node that awaits the command failed');
    }
  }

  async #claim(commandId: string): Promise<void> {
    try {
      await this.#router?.claim(commandId);
    } catch (err) {
      this.#log?.error({ err, commandId }, 'bus: recording this node as the awaiting one failed');
    }
  }

  #settle(commandId: string, result: StoredResult): void {
    const waiter = this.#waiters.get(commandId);
    if (!waiter) return;
    this.#waiters.delete(commandId);
    cleanup(waiter);
    if (result.status === 'succeeded') {
      waiter.resolve({ commandId, status: 'succeeded', output: result.output ?? {}, finishedAt: result.finished_at });
    } else {
      waiter.reject(
        new AgentCommandError(commandId, result.status, result.error ?? { key: 'command_failed', message: 'no error given' }, result.output),
      );
    }
  }

  readonly #onTimeout = (commandId: string): void => void this.#giveUp(commandId);

  /** Timeout or abort: record why the command ended without a result, unless one just arrived. */
  async #giveUp(commandId: string, abortError?: CommandAbortedError): Promise<void> {
    const waiter = this.#waiters.get(commandId);
    if (!waiter) return;
    const now = Date.now();
    let state: 'expired' | 'timed_out' | undefined;
    if (await this.#store.transition(commandId, ['queued'], 'expired', now)) state = 'expired';
    else if (await this.#store.transition(commandId, ['sent', 'acked', 'running'], 'timed_out', now)) state = 'timed_out';
    if (this.#waiters.get(commandId) !== waiter) return;
    if (state === undefined) {
      const cmd = await this.#store.get(commandId);
      if (cmd?.result) return this.#settle(commandId, cmd.result);
      state = 'timed_out';
    }
    this.#waiters.delete(commandId);
    cleanup(waiter);
    waiter.reject(abortError ?? new CommandTimeoutError(commandId, state, waiter.timeoutMs));
  }

  async #sweep(): Promise<void> {
    try {
      const now = Date.now();
      const orphans = await this.#store.timeOutOrphans(this.#startedAt, now - this.#orphanGraceMs, now);
      if (orphans.length > 0) this.#log?.warn({ count: orphans.length }, 'bus: in-flight commands from before the restart timed out');
      for (const id of await this.#store.expireQueued(now)) {
        const waiter = this.#waiters.get(id);
        if (!waiter) continue;
        this.#waiters.delete(id);
        cleanup(waiter);
        waiter.reject(new CommandTimeoutError(id, 'expired', waiter.timeoutMs));
      }
    } catch (err) {
      this.#log?.error({ err }, 'bus: expiring queued commands failed');
    }
  }
}

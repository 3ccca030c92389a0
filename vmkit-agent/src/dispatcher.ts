import { MAX_FRAME_BYTES, PROTOCOL_VERSION, encodeMessage, isId } from '@vmkit/protocol';
import type { AgentMessage, CommandEnvelope, CommandType, ErrorKey, MessageOf, RefusalReason } from '@vmkit/protocol';
import type { DeferredOutcome, ExecutorContext, ExecutorOutcome, ExecutorRegistry, ExecutorSpec, KeyRing } from './executors/index.ts';
import type { ResultJournal, ResultMsg } from './journal.ts';
import type { Logger } from './log.ts';
import type { CommandVerifier } from './verify.ts';

export interface DispatcherOptions {
  verifier: CommandVerifier;
  journal: ResultJournal;
  executors: ExecutorRegistry;
  keys: KeyRing;
  log: Logger;
  /** Sends if connected; false when the message could not go out now. */
  send(message: AgentMessage): boolean;
  onCommandFinished?(result: ResultMsg, type: string): void;
  /** An executor deferred its result to the next process (agent.update): restart now. */
  onDeferred?(command: CommandEnvelope): void;
  signal: AbortSignal;
}

/** Runs exclusive executors one at a time. */
class Mutex {
  #tail: Promise<void> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn);
    this.#tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

/**
 * What happens to a `command` frame: verify, remember (replay cache + journal, both
 * on disk) before anything runs, ack, execute, journal the result, send it. Refused
 * commands are answered `refused` with the verifier's reason and never reach an
 * executor.
 */
export class CommandDispatcher {
  readonly #o: DispatcherOptions;
  readonly #exclusive = new Mutex();
  /** Commands being written to the replay cache and journal, before they run. */
  readonly #accepting = new Map<string, Promise<void>>();
  readonly #running = new Set<Promise<void>>();

  constructor(opts: DispatcherOptions) {
    this.#o = opts;
  }

  async handleCommand(msg: MessageOf<'command'>): Promise<void> {
    const rawId = msg.envelope.id;
    const id = isId('command', rawId) ? rawId : undefined;
    const verdict = this.#o.verifier.verify(msg.envelope, msg.signature, msg.batch);
    if (!verdict.ok) {
      // A command id already in the journal was accepted before: the hub is
      // re-sending it (lost ack, reconnect). Answer with the journaled result and
      // never run it again. A copy of one still being accepted waits for it.
      if (id !== undefined && (verdict.reason === 'replayed' || verdict.reason === 'expired')) {
        await this.#accepting.get(id)?.catch(() => undefined);
        if (this.#o.journal.get(id)) return this.#repeat(id, verdict.reason);
      }
      return this.#refuse(id, verdict.reason, verdict.detail);
    }
    const command = verdict.command;
    if (this.#o.journal.get(command.id)) return this.#repeat(command.id, 'journaled');
    // Remembered on disk before anything runs: a crash after this point can neither
    // replay the command nor lose track of it.
    const accepting = (async () => {
      await this.#o.verifier.remember(command);
      await this.#o.journal.begin(command);
    })();
    this.#accepting.set(command.id, accepting);
    try {
      await accepting;
    } catch (err) {
      this.#o.log.error('command could not be recorded; not running it', { command_id: command.id, error: (err as Error).message });
      this.#trySend({
        protocol: PROTOCOL_VERSION,
        type: 'result',
        command_id: command.id,
        status: 'failed',
        error: { key: 'internal', message: `the agent could not record the command durably: ${(err as Error).message}`.slice(0, 2048) },
        finished_at: Date.now(),
      });
      return;
    } finally {
      this.#accepting.delete(command.id);
    }
    const run = this.#execute(command);
    this.#running.add(run);
    try {
      await run;
    } finally {
      this.#running.delete(run);
    }
  }

  /**
   * Waits (bounded) for running executors, so a stop in the middle of a harden lets it
   * finish and journal its result rather than leave it half applied.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.#running.size === 0) return true;
    this.#o.log.info('waiting for running commands before stopping', { count: this.#running.size });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const done = Promise.allSettled([...this.#running]).then(() => true as const);
    const finished = await Promise.race([done, timedOut]);
    clearTimeout(timer);
    return finished;
  }

  #refuse(id: string | undefined, reason: RefusalReason, detail: string): void {
    this.#o.log.warn('command refused', { command_id: id ?? null, reason, detail: detail.slice(0, 500) });
    if (id !== undefined) {
      this.#trySend({
        protocol: PROTOCOL_VERSION,
        type: 'result',
        command_id: id,
        status: 'refused',
        error: { key: reason, message: detail.slice(0, 2048) },
        finished_at: Date.now(),
      });
    } else {
      this.#trySend({ protocol: PROTOCOL_VERSION, type: 'error', key: 'invalid_request', message: `command refused (${reason}): ${detail}`.slice(0, 2048) });
    }
  }

  #repeat(id: string, why: string): void {
    const rec = this.#o.journal.get(id);
    if (!rec) return;
    this.#o.log.info('duplicate command; not running it again', { command_id: id, seen_as: why, state: rec.state });
    this.#trySend({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: id });
    // Still running: its result follows when it finishes.
    if (rec.result) this.#trySend(rec.result);
  }

  async #execute(command: CommandEnvelope): Promise<void> {
    this.#trySend({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: command.id });
    this.#o.log.info('executing command', { command_id: command.id, type: command.type, key_id: command.key_id });
    const spec = this.#o.executors.get(command.type);
    let seq = 0;
    const ctx: ExecutorContext = {
      command,
      progress: (step, state, message, detail) => {
        const sent = this.#trySend({
          protocol: PROTOCOL_VERSION,
          type: 'progress',
          command_id: command.id,
          seq: seq++,
          step: step.slice(0, 64),
          state,
          ...(message === undefined ? {} : { message: message.slice(0, 1024) }),
          ...(detail === undefined ? {} : { detail }),
        });
        if (!sent) this.#o.log.debug('progress not sent', { command_id: command.id, step, state });
      },
      signal: this.#o.signal,
      log: this.#o.log,
      keys: this.#o.keys,
    };
    let outcome: ExecutorOutcome | DeferredOutcome;
    if (!spec) {
      outcome = { status: 'failed', error: { key: 'unsupported_command' satisfies ErrorKey, message: `this agent has no executor for ${command.type}` } };
    } else {
      const run = () => invoke(spec, command, ctx);
      try {
        outcome = await (spec.exclusive ? this.#exclusive.run(run) : run());
      } catch (err) {
        this.#o.log.error('executor threw', { command_id: command.id, type: command.type, error: (err as Error).message });
        outcome = { status: 'failed', error: { key: 'command_failed' satisfies ErrorKey, message: (err as Error).message.slice(0, 2048) || 'executor failed' } };
      }
    }
    if (outcome.status === 'deferred') {
      // The journal keeps it running; the next process of this agent finishes it.
      this.#o.log.info('command outcome deferred to the next start', { command_id: command.id, type: command.type });
      this.#o.onDeferred?.(command);
      return;
    }
    await this.finish(command.id, command.type, outcome);
  }

  /** Journals and sends the result of a command (also one a previous process left running). */
  async finish(commandId: string, type: string, outcome: ExecutorOutcome): Promise<void> {
    const command = { id: commandId, type };
    const result = toResult(command.id, outcome);
    await this.#o.journal.finish(command.id, result);
    this.#o.log.info('command finished', { command_id: command.id, type: command.type, status: result.status, ...(result.error ? { error: result.error.key } : {}) });
    this.#o.onCommandFinished?.(result, command.type);
    this.#trySend(result);
  }

  async handleResultAck(commandId: string): Promise<void> {
    if (!(await this.#o.journal.ack(commandId))) this.#o.log.debug('result_ack for nothing pending', { command_id: commandId });
  }

  /** After (re)connecting: everything the hub has not acknowledged, oldest first. */
  resendUnacked(): number {
    let n = 0;
    for (const result of this.#o.journal.unacked()) {
      if (!this.#trySend(result)) break;
      n++;
    }
    if (n > 0) this.#o.log.info('re-sent unacknowledged results', { count: n });
    return n;
  }

  #trySend(message: AgentMessage): boolean {
    try {
      return this.#o.send(message);
    } catch (err) {
      this.#o.log.error('message could not be encoded', { type: message.type, error: (err as Error).message.slice(0, 300) });
      return false;
    }
  }
}

// The registry is keyed by type, so spec and command always agree; TypeScript
// cannot correlate the two unions, hence the one cast.
function invoke(spec: ExecutorSpec<CommandType>, command: CommandEnvelope, ctx: ExecutorContext): Promise<ExecutorOutcome | DeferredOutcome> {
  return (spec.run as (p: unknown, c: ExecutorContext) => Promise<ExecutorOutcome | DeferredOutcome>)(command.params, ctx);
}

/** Builds the wire result, falling back to a failure when the output cannot travel. */
export function toResult(commandId: string, outcome: ExecutorOutcome, now = Date.now()): ResultMsg {
  const base = { protocol: PROTOCOL_VERSION as typeof PROTOCOL_VERSION, type: 'result' as const, command_id: commandId, finished_at: now };
  const result: ResultMsg =
    outcome.status === 'succeeded'
      ? { ...base, status: 'succeeded', ...(outcome.output ? { output: outcome.output } : {}) }
      : { ...base, status: 'failed', error: outcome.error, ...(outcome.output ? { output: outcome.output } : {}) };
  let size: number;
  try {
    size = Buffer.byteLength(encodeMessage(result));
  } catch (err) {
    return { ...base, status: 'failed', error: { key: 'command_failed', message: `the result is not a valid message: ${(err as Error).message}`.slice(0, 2048) } };
  }
  if (size > MAX_FRAME_BYTES) {
    return { ...base, status: 'failed', error: { key: 'command_failed', message: `the result (${size} bytes) exceeds the ${MAX_FRAME_BYTES}-byte frame limit` } };
  }
  return result;
}

import type { CommandEnvelope, CommandParams, CommandType, ErrorKey, SigningKey } from '@vmkit/protocol';
import type { Logger } from '../log.ts';

export type StepState = 'started' | 'done' | 'failed' | 'skipped';

/** A result body as an executor produces it; the dispatcher adds id and time. */
export type ExecutorOutcome =
  | { status: 'succeeded'; output?: Record<string, unknown> }
  | { status: 'failed'; error: { key: ErrorKey; message: string }; output?: Record<string, unknown> };

/**
 * An executor's answer when the command's outcome is only known after the agent
 * restarts (agent.update): no result now; the journal keeps the command running and
 * the next process finishes it.
 */
export interface DeferredOutcome {
  status: 'deferred';
}

/** The pinned control-plane keys, as `keys.rotate` changes them. */
export interface KeyRing {
  /** Key ids pinned right now. */
  keyIds(): string[];
  /** Replaces the pinned set durably (config file, fsync) and in memory. */
  replace(keys: SigningKey[]): Promise<void>;
  /** The pinned keys with their public halves. */
  list(): SigningKey[];
}

export interface ExecutorContext<T extends CommandType = CommandType> {
  /** The verified envelope this run serves. */
  command: Extract<CommandEnvelope, { type: T }>;
  /** Streams a `progress` message to the hub (best effort: dropped while disconnected). */
  progress(step: string, state: StepState, message?: string, detail?: Record<string, unknown>): void;
  /** Aborted when the daemon shuts down. */
  signal: AbortSignal;
  log: Logger;
  keys: KeyRing;
}

/**
 * Runs one verified command. Throwing is allowed: the dispatcher turns an exception
 * into a `failed` result with key `command_failed`.
 */
export type Executor<T extends CommandType> = (params: CommandParams<T>, ctx: ExecutorContext<T>) => Promise<ExecutorOutcome | DeferredOutcome>;

export interface ExecutorSpec<T extends CommandType> {
  run: Executor<T>;
  /**
   * Exclusive executors (they change the system: harden, keys.rotate) run one at a
   * time; the others (ping, facts) run alongside them.
   */
  exclusive: boolean;
}

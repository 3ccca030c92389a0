import type { CommandParams, CommandType } from '@vmkit/protocol';
import type { CommandBus, CommandOutcome, ResumeOptions, SendOptions } from '../hub/command-bus.ts';
import { AgentCommandError, AgentNotConnectedError, CommandAbortedError, CommandTimeoutError } from '../hub/errors.ts';
import type { StoredCommand } from '../hub/store.ts';
import type { CommandOutcomeLabel } from './metrics.ts';

/** Where the measured bus reports (ControlPlaneMetrics fits). */
export interface CommandMetrics {
  commandFinished(type: string, outcome: CommandOutcomeLabel, seconds: number): void;
}

/** The bounded outcome label of an error `send` rejected with. */
export function commandOutcomeOf(err: unknown): CommandOutcomeLabel {
  if (err instanceof AgentCommandError) return err.key === 'agent_refused' ? 'refused' : 'failed';
  if (err instanceof CommandTimeoutError) return err.state;
  if (err instanceof CommandAbortedError) return 'aborted';
  if (err instanceof AgentNotConnectedError) return 'not_connected';
  return 'error';
}

/**
 * Any CommandBus, with each `send` timed from the call to its outcome (queueing for a
 * disconnected agent included: that is what a caller waits). A decorator, so a
 * LISTEN/NOTIFY bus is measured the same way without a line of its own.
 */
export class MeasuredCommandBus implements CommandBus {
  readonly #bus: CommandBus;
  readonly #metrics: CommandMetrics;

  constructor(bus: CommandBus, metrics: CommandMetrics) {
    this.#bus = bus;
    this.#metrics = metrics;
  }

  // A `then` rather than an async function: a fan-out keeps thousands of sends pending for
  // seconds, and a suspended async frame holds more than a reaction does.
  send<T extends CommandType>(agentId: string, type: T, params: CommandParams<T>, opts?: SendOptions): Promise<CommandOutcome> {
    const started = performance.now();
    let sent: Promise<CommandOutcome>;
    try {
      sent = this.#bus.send(agentId, type, params, opts);
    } catch (err) {
      sent = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return sent.then(
      (outcome) => {
        this.#metrics.commandFinished(type, 'succeeded', (performance.now() - started) / 1000);
        return outcome;
      },
      (err: unknown) => {
        this.#metrics.commandFinished(type, commandOutcomeOf(err), (performance.now() - started) / 1000);
        throw err;
      },
    );
  }

  get(commandId: string): Promise<StoredCommand | undefined> {
    return this.#bus.get(commandId);
  }

  /** Not timed: a resumed command's wait started in another process (or before a restart). */
  resume(commandId: string, opts?: ResumeOptions): Promise<CommandOutcome> {
    return this.#bus.resume(commandId, opts);
  }

  close(): Promise<void> {
    return this.#bus.close();
  }
}

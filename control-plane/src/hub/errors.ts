import type { ErrorKey } from '@vmkit/protocol';

/**
 * Local errors: what went wrong on this side of the wire (nobody answered in time,
 * the agent is not connected, the caller gave up). Each carries a registry key so a
 * route can turn it into `{"error": key, "message": ...}`.
 */
export class CommandBusError extends Error {
  readonly key: ErrorKey;
  readonly commandId: string | undefined;
  constructor(key: ErrorKey, message: string, commandId?: string) {
    super(message);
    this.name = new.target.name;
    this.key = key;
    this.commandId = commandId;
  }
}

export class AgentNotConnectedError extends CommandBusError {
  constructor(agentId: string) {
    super('agent_not_connected', `agent ${agentId} is not connected`);
  }
}

/**
 * No result within the caller's timeout. `state` is `expired` when the command never
 * reached the agent (it stayed queued) and `timed_out` when it did.
 */
export class CommandTimeoutError extends CommandBusError {
  readonly state: 'expired' | 'timed_out';
  constructor(commandId: string, state: 'expired' | 'timed_out', timeoutMs: number) {
    super(
      'command_timed_out',
      state === 'expired'
        ? `command ${commandId} was not delivered within ${timeoutMs} ms: the agent did not connect`
        : `the agent did not answer command ${commandId} within ${timeoutMs} ms`,
      commandId,
    );
    this.state = state;
  }
}

export class CommandAbortedError extends CommandBusError {
  constructor(commandId: string) {
    super('command_timed_out', `the caller stopped waiting for command ${commandId}`, commandId);
  }
}

/**
 * Wire errors: what the agent answered. `agent_refused` when it would not run the
 * command (bad signature, expired, replayed, ...: `reason` is the agent's error key),
 * `command_failed` when it ran and failed.
 */
export class AgentCommandError extends Error {
  readonly key: 'agent_refused' | 'command_failed';
  readonly commandId: string;
  /** The agent's own error key, e.g. `bad_signature` or `lockout_risk`. */
  readonly reason: ErrorKey;
  readonly output: Record<string, unknown> | undefined;
  /** The agent's own sentence, as it sent it. */
  readonly agentMessage: string;
  constructor(commandId: string, status: 'failed' | 'refused', agentError: { key: ErrorKey; message: string }, output?: Record<string, unknown>) {
    super(
      status === 'refused'
        ? `the agent refused command ${commandId}: ${agentError.key}: ${agentError.message}`
        : `command ${commandId} failed on the agent: ${agentError.key}: ${agentError.message}`,
    );
    this.name = 'AgentCommandError';
    this.key = status === 'refused' ? 'agent_refused' : 'command_failed';
    this.commandId = commandId;
    this.reason = agentError.key;
    this.agentMessage = agentError.message;
    this.output = output;
  }
}

import { SHELL_INITIAL_WINDOW, encodeShellFrame, isErrorKey, shellOpenParams, shellOpenResultSchema } from '@vmkit/protocol';
import type { ErrorKey, ShellOpenParams } from '@vmkit/protocol';
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import type { ShellChannel, ShellOpenRequest, ShellOpener } from '../shell/channel.ts';
import type { AgentHub } from './agent-hub.ts';
import type { CommandBus } from './command-bus.ts';
import { AgentCommandError, CommandBusError } from './errors.ts';
import { HubShellChannel } from './shell-channel.ts';

export interface HubShellOpenerOptions {
  hub: Pick<AgentHub, 'isConnected' | 'deliverBinary' | 'channels'>;
  bus: CommandBus;
  /** How long the agent has to start the PTY. Default 30 s. */
  openTimeoutMs?: number;
}

/** What the agent may answer to shell.open that the caller should see under the agent's own key. */
const PASSED_THROUGH: ReadonlySet<ErrorKey> = new Set(['shell_disabled', 'shell_user_refused', 'too_many_sessions', 'shell_spawn_failed', 'invalid_request']);

/**
 * Opens shell channels through this process's hub: a channel id is reserved (so frames
 * that race ahead of the command's result are kept), `shell.open` is signed and sent
 * through the command bus, and the channel is handed over once the agent answers.
 */
export class HubShellOpener implements ShellOpener {
  readonly #o: HubShellOpenerOptions;

  constructor(opts: HubShellOpenerOptions) {
    this.#o = opts;
  }

  async open(req: ShellOpenRequest): Promise<ShellChannel> {
    const { hub, bus } = this.#o;
    if (!hub.isConnected(req.agentId)) throw new ApiError('agent_not_connected');
    const channel = new HubShellChannel({
      agentId: req.agentId,
      send: (frame) => hub.deliverBinary(req.agentId, frame),
      release: () => hub.channels.release(channel.id),
    });
    channel.id = hub.channels.allocate(req.agentId, channel);
    const candidate = {
      channel: channel.id,
      cols: req.cols,
      rows: req.rows,
      term: req.term,
      ...(req.user === undefined ? {} : { user: req.user }),
      ...(req.env === undefined ? {} : { env: req.env }),
      ...(req.command === undefined ? {} : { command: req.command }),
      ...(req.sessionId === undefined ? {} : { session_id: req.sessionId }),
    };
    const parsed = shellOpenParams.safeParse(candidate);
    if (!parsed.success) {
      hub.channels.release(channel.id);
      throw new ApiError('invalid_request', `the shell request is not valid: ${z.prettifyError(parsed.error)}`);
    }
    const params: ShellOpenParams = parsed.data;
    try {
      const outcome = await bus.send(req.agentId, 'shell.open', params, { timeoutMs: this.#o.openTimeoutMs ?? 30_000, requireConnected: true });
      const result = shellOpenResultSchema.safeParse(outcome.output);
      channel.opened(result.success ? result.data.window : SHELL_INITIAL_WINDOW);
      return channel;
    } catch (err) {
      // A session the agent may have started after all (timeout) is told to end.
      hub.deliverBinary(req.agentId, encodeShellFrame({ kind: 'close', channel: channel.id, reason: 'closed', code: null, signal: null, message: 'open failed' }));
      hub.channels.release(channel.id);
      throw toApiError(err);
    }
  }
}

function toApiError(err: unknown): Error {
  if (err instanceof AgentCommandError) {
    const reason = err.reason;
    if (err.key === 'command_failed' && isErrorKey(reason) && PASSED_THROUGH.has(reason)) return new ApiError(reason, err.agentMessage);
    return new ApiError(err.key, err.message);
  }
  if (err instanceof CommandBusError) return new ApiError(err.key, err.message);
  return err instanceof Error ? err : new Error(String(err));
}

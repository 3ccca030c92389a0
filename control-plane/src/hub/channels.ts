import { randomInt } from 'node:crypto';
import { SHELL_MAX_CHANNEL_ID, decodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';

/** What the router hands a channel's frames to. */
export interface ChannelEndpoint {
  onFrame(frame: ShellFrame): void;
  /** The agent's connection closed (or was replaced): the channel is dead. */
  onAgentGone(): void;
}

export interface ChannelStats {
  open: number;
  /** Frames of a kind only the hub sends (resize, eof). Frames that do not decode are the hub's invalid frames. */
  droppedInvalid: number;
  /** Frames naming a channel that is not open. */
  droppedUnknown: number;
  /** Frames naming a channel open on another agent: never delivered there. */
  droppedForeign: number;
}

/**
 * Channel ids and routing for the binary frames on agent connections. Ids are unique
 * across agents (not per agent), so a frame naming another agent's channel is
 * recognised as foreign and dropped rather than delivered.
 */
export class ChannelRouter {
  readonly #channels = new Map<number, { agentId: string; endpoint: ChannelEndpoint }>();
  // A random start: ids of a previous control-plane process are unlikely to be reused
  // while an agent may still be ending their sessions.
  #next = randomInt(1, 0x4000_0000);
  #stats = { droppedInvalid: 0, droppedUnknown: 0, droppedForeign: 0 };

  allocate(agentId: string, endpoint: ChannelEndpoint): number {
    let id = this.#next;
    while (this.#channels.has(id)) id = id >= SHELL_MAX_CHANNEL_ID ? 1 : id + 1;
    this.#next = id >= SHELL_MAX_CHANNEL_ID ? 1 : id + 1;
    this.#channels.set(id, { agentId, endpoint });
    return id;
  }

  release(channel: number): void {
    this.#channels.delete(channel);
  }

  /**
   * A binary frame that arrived on `agentId`'s connection. Returns why, when it does not
   * decode at all (the hub answers it like any malformed frame); otherwise routes or drops it.
   */
  handleFrame(agentId: string, raw: Buffer): string | undefined {
    const decoded = decodeShellFrame(raw);
    if (!decoded.ok) return `binary frame refused (${decoded.error.reason}): ${decoded.error.message}`;
    if (decoded.frame.kind === 'resize' || decoded.frame.kind === 'eof') {
      this.#stats.droppedInvalid++;
      return undefined;
    }
    const entry = this.#channels.get(decoded.frame.channel);
    if (!entry) this.#stats.droppedUnknown++;
    else if (entry.agentId !== agentId) this.#stats.droppedForeign++;
    else entry.endpoint.onFrame(decoded.frame);
    return undefined;
  }

  agentGone(agentId: string): void {
    for (const [id, entry] of [...this.#channels]) {
      if (entry.agentId !== agentId) continue;
      this.#channels.delete(id);
      entry.endpoint.onAgentGone();
    }
  }

  stats(): ChannelStats {
    return { open: this.#channels.size, ...this.#stats };
  }
}

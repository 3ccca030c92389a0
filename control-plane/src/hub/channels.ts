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
  /** Binary frames from agents that did not decode, or carried a kind only the hub sends. */
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

  /** A binary frame that arrived on `agentId`'s connection. */
  handleFrame(agentId: string, raw: Buffer): void {
    const decoded = decodeShellFrame(raw);
    if (!decoded.ok || decoded.frame.kind === 'resize' || decoded.frame.kind === 'eof') {
      this.#stats.droppedInvalid++;
      return;
    }
    const entry = this.#channels.get(decoded.frame.channel);
    if (!entry) {
      this.#stats.droppedUnknown++;
      return;
    }
    if (entry.agentId !== agentId) {
      this.#stats.droppedForeign++;
      return;
    }
    entry.endpoint.onFrame(decoded.frame);
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

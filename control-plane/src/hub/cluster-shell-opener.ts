/**
 * Shell channels when several control-plane processes share one PostgreSQL database:
 * an agent connected here is opened through this process's hub; one held by another
 * live process is opened there, over a signed WebSocket relay to the holder's
 * registered URL (./shell-relay-wire.ts), which opens it locally and pipes the channel.
 * The session (its row, audit, recording) stays with this process; only the PTY's bytes
 * cross.
 */
import { randomBytes } from 'node:crypto';
import { isErrorKey } from '@vmkit/protocol';
import WebSocket from 'ws';
import type { RawData } from 'ws';
import { ApiError } from '../errors.ts';
import type { ShellRelayLabel } from '../metrics/metrics.ts';
import type { ShellChannel, ShellOpenRequest, ShellOpener } from '../shell/channel.ts';
import { RelayedShellChannel } from './shell-relay-channel.ts';
import { SHELL_RELAY_MAX_MESSAGE, SHELL_RELAY_PATH, relayAnswer, relayHeaders, sha256Hex } from './shell-relay-wire.ts';


export interface AgentHolder {
  nodeId: string;
  url: string;
}

export interface ClusterShellOpenerOptions {
  /** Opens on this process's hub (HubShellOpener). */
  local: ShellOpener;
  /** Whether this process holds the agent's connection. */
  holdsLocally: (agentId: string) => boolean;
  /** The live node other than this one holding the agent, and its registered URL. */
  holderOf: (agentId: string) => Promise<AgentHolder | undefined>;
  nodeId: string;
  /** SecretBox.subkey(SHELL_RELAY_KEY_PURPOSE): the same in every process. */
  key: Buffer;
  logger: { warn(obj: object, msg: string): void };
  metrics?: { shellRelay(label: ShellRelayLabel): void } | undefined;
  now?: () => number;
  /** How long the holder has to answer the open (its own agent timeout is 30 s). */
  openTimeoutMs?: number;
  connectTimeoutMs?: number;
  closeTimeoutMs?: number;
  pingMs?: number;
}

const UNREACHABLE = "The control plane holding the instance's agent connection could not be reached.";

/** The holder could not be reached, refused the hop itself, or broke the protocol: the operator is told agent_not_connected. */
class HolderUnreachable extends Error {}

export class ClusterShellOpener implements ShellOpener {
  readonly #o: ClusterShellOpenerOptions;
  readonly #live = new Set<RelayedShellChannel>();

  constructor(opts: ClusterShellOpenerOptions) {
    this.#o = opts;
  }

  /** Relayed channels open now. */
  get relayed(): number {
    return this.#live.size;
  }

  async open(req: ShellOpenRequest): Promise<ShellChannel> {
    if (this.#o.holdsLocally(req.agentId)) return this.#o.local.open(req);
    const holder = await this.#o.holderOf(req.agentId);
    if (!holder) throw new ApiError('agent_not_connected');
    try {
      const channel = await this.#relay(req, holder);
      this.#o.metrics?.shellRelay({ side: 'front', outcome: 'opened' });
      return channel;
    } catch (err) {
      if (err instanceof HolderUnreachable) {
        this.#o.metrics?.shellRelay({ side: 'front', outcome: 'holder_unreachable' });
        this.#o.logger.warn({ err, holder: holder.nodeId, agent_id: req.agentId }, 'shell relay: the holder of the agent could not be reached');
        throw new ApiError('agent_not_connected', UNREACHABLE);
      }
      this.#o.metrics?.shellRelay({ side: 'front', outcome: err instanceof ApiError && err.key === 'command_timed_out' ? 'timed_out' : 'holder_refused' });
      throw err;
    }
  }

  /** This process is stopping: relayed channels end now (their holders close their PTYs). */
  close(): void {
    for (const channel of [...this.#live]) channel.abort('the control plane relaying this session is shutting down');
  }

  #relay(req: ShellOpenRequest, holder: AgentHolder): Promise<ShellChannel> {
    const message = JSON.stringify({ type: 'open', request: req });
    const headers = relayHeaders(this.#o.key, {
      from: this.#o.nodeId,
      to: holder.nodeId,
      at: (this.#o.now ?? Date.now)(),
      nonce: randomBytes(16).toString('base64url'),
      requestSha256: sha256Hex(message),
    });
    const target = new URL(SHELL_RELAY_PATH, holder.url);
    target.protocol = target.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(target, {
      headers,
      perMessageDeflate: false,
      maxPayload: SHELL_RELAY_MAX_MESSAGE,
      handshakeTimeout: this.#o.connectTimeoutMs ?? 5_000,
    });
    return new Promise<ShellChannel>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | undefined, channel?: ShellChannel) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          ws.removeAllListeners('message');
          ws.terminate();
          reject(err);
        } else resolve(channel as ShellChannel);
      };
      const timer = setTimeout(
        () => settle(new ApiError('command_timed_out', 'The control plane holding the agent connection did not answer the shell open in time.')),
        this.#o.openTimeoutMs ?? 45_000,
      );
      ws.on('error', (err) => settle(new HolderUnreachable(`relaying to ${target.origin} failed: ${err.message}`)));
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        // A 403 here is the holder refusing our signature: another secret-box key, or clocks apart.
        settle(new HolderUnreachable(`${target.origin} answered the relay with HTTP ${res.statusCode ?? 0}`));
      });
      ws.on('close', () => settle(new HolderUnreachable(`${target.origin} closed the relay before answering the open`)));
      ws.once('open', () => ws.send(message));
      // Synchronous from the answer to the channel's own listener: frames right behind it are its.
      ws.once('message', (data: RawData, isBinary: boolean) => {
        let parsed: ReturnType<typeof relayAnswer.safeParse> | undefined;
        try {
          const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
          parsed = isBinary ? undefined : relayAnswer.safeParse(JSON.parse(raw.toString('utf8')));
        } catch {
          parsed = undefined;
        }
        if (!parsed?.success) return settle(new HolderUnreachable('the holder answered the open with something else than opened or refused'));
        const answer = parsed.data;
        if (answer.type === 'refused') {
          return settle(new ApiError(isErrorKey(answer.error) ? answer.error : 'internal', answer.message));
        }
        const channel = new RelayedShellChannel(
          ws,
          answer.channel,
          answer.window,
          {
            ...(this.#o.closeTimeoutMs !== undefined && { closeTimeoutMs: this.#o.closeTimeoutMs }),
            ...(this.#o.pingMs !== undefined && { pingMs: this.#o.pingMs }),
          },
          () => this.#live.delete(channel),
        );
        this.#live.add(channel);
        settle(undefined, channel);
      });
    });
  }
}

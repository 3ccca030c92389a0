import type { Config } from '../config.ts';

/** Settings of the agent hub and enrollment; all optional, with defaults below. */
export interface AgentHubConfig {
  /** Told to agents in `welcome`; the hub pings this often. */
  heartbeatIntervalMs: number;
  /** An agent silent this long is marked `disconnected`. */
  deadAfterMs: number;
  handshakeTimeoutMs: number;
  /** Verified handshakes per second; over it agents wait in line or are told `overloaded` with retry_after_ms. */
  handshakesPerSecond: number;
  /** Longest wait in line for a handshake token an agent is offered (`queued`); 0: no line, refuse at once. */
  handshakeQueueMs: number;
  /** Upgrade attempts per second per client address before any hello (burst twice that); more get HTTP 429. */
  preAuthPerAddressPerSecond: number;
  /** Unauthenticated connections held at once; more get HTTP 503. */
  maxPendingHandshakes: number;
  lastSeenFlushMs: number;
  /** Lifetime of an enrollment token. */
  enrollmentTokenTtlMs: number;
  /** Several processes on PostgreSQL: how often this node says it is alive (control_planes.heartbeat_at). */
  nodeHeartbeatMs: number;
  /** A node silent this long is dead: its agents count as connected nowhere. */
  nodeStaleAfterMs: number;
}

declare module '../config.ts' {
  interface Config {
    /** Agent hub settings (control-plane/src/hub/config.ts); env VMKIT_AGENT_* fill what is not set. */
    agentHub?: Partial<AgentHubConfig>;
  }
}

const ENV: Record<keyof AgentHubConfig, string> = {
  heartbeatIntervalMs: 'VMKIT_AGENT_HEARTBEAT_MS',
  deadAfterMs: 'VMKIT_AGENT_DEAD_AFTER_MS',
  handshakeTimeoutMs: 'VMKIT_AGENT_HANDSHAKE_TIMEOUT_MS',
  handshakesPerSecond: 'VMKIT_AGENT_HANDSHAKES_PER_SECOND',
  handshakeQueueMs: 'VMKIT_AGENT_HANDSHAKE_QUEUE_MS',
  preAuthPerAddressPerSecond: 'VMKIT_AGENT_PREAUTH_PER_ADDRESS_PER_SECOND',
  maxPendingHandshakes: 'VMKIT_AGENT_MAX_PENDING_HANDSHAKES',
  lastSeenFlushMs: 'VMKIT_AGENT_LAST_SEEN_FLUSH_MS',
  enrollmentTokenTtlMs: 'VMKIT_ENROLLMENT_TOKEN_TTL_MS',
  nodeHeartbeatMs: 'VMKIT_NODE_HEARTBEAT_MS',
  nodeStaleAfterMs: 'VMKIT_NODE_STALE_AFTER_MS',
};

/** Config wins over VMKIT_AGENT_* environment variables, which win over the defaults. */
export function agentHubConfig(config: Config, env: NodeJS.ProcessEnv = process.env): AgentHubConfig {
  const pick = (k: keyof AgentHubConfig, fallback: number, zeroAllowed = false): number => {
    const fromConfig = config.agentHub?.[k];
    if (fromConfig !== undefined) return fromConfig;
    const raw = env[ENV[k]];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !zeroAllowed)) {
      throw new Error(`${ENV[k]} must be a ${zeroAllowed ? 'non-negative' : 'positive'} number, got "${raw}"`);
    }
    return n;
  };
  const heartbeatIntervalMs = pick('heartbeatIntervalMs', 15_000);
  return {
    heartbeatIntervalMs,
    deadAfterMs: pick('deadAfterMs', heartbeatIntervalMs * 3),
    handshakeTimeoutMs: pick('handshakeTimeoutMs', 10_000),
    handshakesPerSecond: pick('handshakesPerSecond', 200),
    handshakeQueueMs: pick('handshakeQueueMs', 60_000, true),
    preAuthPerAddressPerSecond: pick('preAuthPerAddressPerSecond', 20),
    maxPendingHandshakes: pick('maxPendingHandshakes', 5_000),
    lastSeenFlushMs: pick('lastSeenFlushMs', 5_000),
    enrollmentTokenTtlMs: pick('enrollmentTokenTtlMs', 60 * 60_000),
    ...nodeTimes(pick),
  };
}

function nodeTimes(pick: (k: keyof AgentHubConfig, fallback: number) => number): Pick<AgentHubConfig, 'nodeHeartbeatMs' | 'nodeStaleAfterMs'> {
  const nodeHeartbeatMs = pick('nodeHeartbeatMs', 5_000);
  return { nodeHeartbeatMs, nodeStaleAfterMs: pick('nodeStaleAfterMs', nodeHeartbeatMs * 6) };
}

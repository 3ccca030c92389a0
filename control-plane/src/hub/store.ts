import type { CommandBatch, CommandEnvelope, ErrorKey } from '@vmkit/protocol';

/**
 * What the hub and the command bus need from storage. The data layer implements it
 * once per dialect (SqliteHubStore, PgHubStore; `openHubStore(db)` in
 * src/db/hub-store.ts picks), and the tests run the hub over both.
 */

export interface AgentIdentity {
  id: string;
  instanceId: string;
  workspaceId: string;
  /** base64url raw Ed25519 public key registered at enrollment. */
  publicKey: string;
  revoked: boolean;
  /** Control-plane signing key ids this agent is known to have pinned. */
  pinnedKeyIds: readonly string[];
}

export interface ConnectedInfo {
  connectedAt: number;
  /**
   * The registered key the hello verified under: the row is written only while it still
   * holds that key and is not revoked (a re-enrolment or revocation since the hello wins).
   */
  publicKey: string;
  agentVersion: string;
  hostname: string;
  os: string;
  /** The release platform the agent reported, when it did. */
  platform: string | null;
}

export interface AgentStateStore {
  findAgent(agentId: string): Promise<AgentIdentity | undefined>;
  /** False when the row no longer holds `info.publicKey` or is revoked: nothing was written. */
  markConnected(agentId: string, info: ConnectedInfo): Promise<boolean>;
  markDisconnected(agentId: string, at: number): Promise<void>;
  /** One write for many agents: last_seen is batched, never one write per heartbeat. */
  touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void>;
  /** At start-up (crash leftovers) and on close. */
  markAllDisconnected(at: number): Promise<void>;
  setPinnedKeys(agentId: string, keyIds: readonly string[]): Promise<void>;
}

export const COMMAND_STATES = [
  'queued',
  'sent',
  'acked',
  'running',
  'succeeded',
  'failed',
  'expired',
  'timed_out',
] as const;
export type CommandState = (typeof COMMAND_STATES)[number];

export interface StoredResult {
  status: 'succeeded' | 'failed' | 'refused';
  output?: Record<string, unknown> | undefined;
  error?: { key: ErrorKey; message: string } | undefined;
  finished_at: number;
}

export interface StoredCommand {
  id: string;
  agentId: string;
  type: CommandEnvelope['type'];
  envelope: CommandEnvelope;
  signature: string;
  /**
   * Set when `signature` signs a batch of commands (@vmkit/protocol command-batch.ts): the
   * command's place in it, re-sent with it. Stored in the signature column with the
   * signature (../db/hub-store-shared.ts), so re-delivery sends the same bytes.
   */
  batch?: CommandBatch | undefined;
  state: CommandState;
  createdAt: number;
  updatedAt: number;
  expiresAt: number;
  result?: StoredResult | undefined;
}

export type RecordResultOutcome = 'stored' | 'duplicate' | 'unknown';

export interface CommandStore {
  insert(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>): Promise<void>;
  get(commandId: string): Promise<StoredCommand | undefined>;
  /**
   * Moves a command to `to` only if its state is one of `from` (and, given `agentId`, only
   * if it is that agent's command); says whether it moved.
   */
  transition(commandId: string, from: readonly CommandState[], to: CommandState, at: number, agentId?: string): Promise<boolean>;
  /**
   * Stores a result once (idempotent): `duplicate` when a result is already stored,
   * `unknown` when no such command exists for this agent (nothing is applied).
   */
  recordResult(commandId: string, agentId: string, result: StoredResult, at: number): Promise<RecordResultOutcome>;
  /** Commands to (re)deliver when an agent connects: queued or sent-but-unacked, not expired, oldest first. */
  deliverable(agentId: string, now: number): Promise<StoredCommand[]>;
  /** Marks queued commands whose envelope expired as `expired`; returns their ids. */
  expireQueued(now: number): Promise<string[]>;
  /**
   * Commands in flight (`sent`, `acked`, `running`) created before `createdBefore` whose
   * envelope expired before `expiredBefore` become `timed_out`: after a control-plane
   * restart nobody waits for them any more. A result that still arrives is stored anyway.
   */
  timeOutOrphans(createdBefore: number, expiredBefore: number, at: number): Promise<string[]>;
}


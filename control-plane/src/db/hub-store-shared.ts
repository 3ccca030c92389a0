/** What both dialects' hub stores share: row mapping and the writes drizzle builds well enough. */
import { and, eq, inArray, lt, lte } from 'drizzle-orm';
import { commandBatchSchema } from '@vmkit/protocol';
import type { CommandBatch, CommandEnvelope } from '@vmkit/protocol';
import type { AgentIdentity, CommandState, StoredCommand, StoredResult } from '../hub/store.ts';
import type { Db } from './index.ts';
import { jsonColumn } from './raw.ts';

/** The columns of `commands` the hub reads, as either driver returns them. */
export interface RawCommandRow {
  id: string;
  agent_id: string;
  type: string;
  envelope: unknown;
  signature: string | null;
  state: string;
  created_at: number;
  updated_at: number;
  expires_at: number | null;
  result: unknown;
}

export const COMMAND_COLUMNS = 'id, agent_id, type, envelope, signature, state, created_at, updated_at, expires_at, result';

export function commandFromRow(r: RawCommandRow): StoredCommand {
  const { signature, batch } = signatureFromColumn(r.signature ?? '');
  return {
    id: r.id,
    agentId: r.agent_id,
    type: r.type as CommandEnvelope['type'],
    envelope: jsonColumn<CommandEnvelope>(r.envelope) as CommandEnvelope,
    signature,
    batch,
    state: r.state as CommandState,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    expiresAt: r.expires_at ?? 0,
    result: jsonColumn<StoredResult>(r.result) ?? undefined,
  };
}

/**
 * The `commands.signature` text: the base64url signature alone, or for a batch-signed
 * command `<signature>.<index>.<size>[.<hash>]...` (base64url has no `.`, so a plain
 * signature never reads as a batch). One column both dialects already have, no migration.
 */
export function signatureColumn(cmd: Pick<StoredCommand, 'signature' | 'batch'>): string {
  const b = cmd.batch;
  return b ? [cmd.signature, b.index, b.size, ...b.proof].join('.') : cmd.signature;
}

/** The column read back. A batch part that does not parse is dropped: the agent then refuses the bare signature. */
export function signatureFromColumn(text: string): { signature: string; batch: CommandBatch | undefined } {
  const dot = text.indexOf('.');
  if (dot < 0) return { signature: text, batch: undefined };
  const [signature = '', index, size, ...proof] = text.split('.');
  const int = (s: string | undefined) => (s !== undefined && /^\d{1,9}$/.test(s) ? Number(s) : NaN);
  const parsed = commandBatchSchema.safeParse({ index: int(index), size: int(size), proof });
  return { signature, batch: parsed.success ? parsed.data : undefined };
}

export interface RawAgentRow {
  id: string;
  instance_id: string;
  workspace_id: string;
  public_key: string;
  state: string;
  pinned_key_ids: unknown;
}

export function agentFromRow(row: RawAgentRow): AgentIdentity {
  return {
    id: row.id,
    instanceId: row.instance_id,
    workspaceId: row.workspace_id,
    publicKey: row.public_key,
    revoked: row.state === 'revoked',
    pinnedKeyIds: jsonColumn<string[]>(row.pinned_key_ids) ?? [],
  };
}

export async function markAllDisconnected(db: Db): Promise<void> {
  const { agents } = db.t;
  await db.orm.update(agents).set({ state: 'disconnected' }).where(eq(agents.state, 'connected'));
}

export async function setPinnedKeys(db: Db, agentId: string, keyIds: readonly string[]): Promise<void> {
  const { agents } = db.t;
  await db.orm.update(agents).set({ pinnedKeyIds: [...keyIds] }).where(eq(agents.id, agentId));
}

export async function timeOutOrphans(db: Db, createdBefore: number, expiredBefore: number, at: number): Promise<string[]> {
  const { commands } = db.t;
  const rows = await db.orm
    .update(commands)
    .set({ state: 'timed_out', updatedAt: at })
    .where(
      and(inArray(commands.state, ['sent', 'acked', 'running']), lt(commands.createdAt, createdBefore), lt(commands.expiresAt, expiredBefore)),
    )
    .returning({ id: commands.id });
  return rows.map((r) => r.id);
}

export async function expireQueued(db: Db, now: number): Promise<string[]> {
  const { commands } = db.t;
  const rows = await db.orm
    .update(commands)
    .set({ state: 'expired', updatedAt: now })
    .where(and(eq(commands.state, 'queued'), lte(commands.expiresAt, now)))
    .returning({ id: commands.id });
  return rows.map((r) => r.id);
}

/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Db } from './index.ts';
import { commands } from './schema.ts';

export type CommandRow = typeof commands.$inferSelect;
export type CommandState = 'queued' | 'sent' | 'acked' | 'running' | 'succeeded' | 'failed' | 'expired' | 'timed_out';
export const TERMINAL_COMMAND_STATES: readonly CommandState[] = ['succeeded', 'failed', 'expired', 'timed_out'];

export interface NewCommand {
  /** The envelope's id (cmd_...). */
  id: string;
  workspaceId: string;
  agentId: string;
  instanceId: string;
  type: string;
  envelope: Record<string, unknown>;
  signature?: string | null;
  expiresAt?: number | null;
  state?: CommandState;
}

export async function insertCommand(db: Db, input: NewCommand, now = Date.now()): Promise<CommandRow> {
  const row: CommandRow = {
    ...input,
    signature: input.signature ?? null,
    expiresAt: input.expiresAt ?? null,
    state: input.state ?? 'queued',
    result: null,
    errorKey: null,
    createdAt: now,
    updatedAt: now,
  };
  db.insert(commands).values(row).run();
  return row;
}

export async function getCommand(db: Db, id: string): Promise<CommandRow | undefined> {
  return db.select().from(commands).where(eq(commands.id, id)).get();
}

export type CommandPatch = Partial<Pick<CommandRow, 'state' | 'result' | 'errorKey'>>;

export async function updateCommand(db: Db, id: string, patch: CommandPatch, now = Date.now()): Promise<void> {
  db.update(commands)
    .set({ ...patch, updatedAt: now })
    .where(eq(commands.id, id))
    .run();
}

export async function listCommandsInStates(db: Db, agentId: string, states: readonly CommandState[]): Promise<CommandRow[]> {
  return db
    .select()
    .from(commands)
    .where(and(eq(commands.agentId, agentId), inArray(commands.state, [...states])))
    .orderBy(asc(commands.id))
    .all();
}

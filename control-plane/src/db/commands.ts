/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, desc, eq } from 'drizzle-orm';
import type { Db } from './index.ts';
import { commands } from './schema.ts';

/**
 * Reads of the commands table for routes. The hub's store (hub-store.ts) owns every
 * write: the command state machine lives there, behind the CommandStore interface.
 */
export type CommandRow = typeof commands.$inferSelect;

export async function getCommand(db: Db, id: string): Promise<CommandRow | undefined> {
  return db.select().from(commands).where(eq(commands.id, id)).get();
}

/** The commands sent to one instance's agents, newest first. */
export async function listCommandsOfInstance(db: Db, workspaceId: string, instanceId: string, limit: number): Promise<CommandRow[]> {
  return db
    .select()
    .from(commands)
    .where(and(eq(commands.workspaceId, workspaceId), eq(commands.instanceId, instanceId)))
    .orderBy(desc(commands.createdAt), desc(commands.id))
    .limit(limit)
    .all();
}

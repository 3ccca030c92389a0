import { and, desc, eq } from 'drizzle-orm';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';

/**
 * Reads of the commands table for routes. The hub's store (hub-store.ts) owns every
 * write: the command state machine lives there, behind the CommandStore interface.
 */
export type CommandRow = Row<'commands'>;

export async function getCommand(db: Db, id: string): Promise<CommandRow | undefined> {
  const { commands } = db.t;
  const [row] = await db.orm.select().from(commands).where(eq(commands.id, id));
  return row;
}

/** The commands sent to one instance's agents, newest first. */
export async function listCommandsOfInstance(db: Db, workspaceId: string, instanceId: string, limit: number): Promise<CommandRow[]> {
  const { commands } = db.t;
  return db.orm
    .select()
    .from(commands)
    .where(and(eq(commands.workspaceId, workspaceId), eq(commands.instanceId, instanceId)))
    .orderBy(desc(commands.createdAt), desc(commands.id))
    .limit(limit);
}

/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { eq } from 'drizzle-orm';
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

import { and, asc, eq } from 'drizzle-orm';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { changed } from './tx.ts';

export type HardenFollowUpRow = Row<'hardenFollowUps'>;

export interface NewHardenFollowUp {
  commandId: string;
  workspaceId: string;
  instanceId: string;
  keyId: string | null;
}

/**
 * Records that a harden command's follow-up is owed. The command bus awaits it
 * between the command's insert and its delivery, so no command reaches an agent
 * without its follow-up on record.
 */
export async function insertHardenFollowUp(db: Db, input: NewHardenFollowUp, now: number): Promise<void> {
  await db.orm.insert(db.t.hardenFollowUps).values({ ...input, state: 'owed', answer: null, createdAt: now, finishedAt: null });
}

export async function getHardenFollowUp(db: Db, commandId: string): Promise<HardenFollowUpRow | undefined> {
  const { hardenFollowUps } = db.t;
  const [row] = await db.orm.select().from(hardenFollowUps).where(eq(hardenFollowUps.commandId, commandId));
  return row;
}

/** Follow-ups a previous process left undone, oldest first. */
export async function listOwedHardenFollowUps(db: Db): Promise<HardenFollowUpRow[]> {
  const { hardenFollowUps } = db.t;
  return db.orm.select().from(hardenFollowUps).where(eq(hardenFollowUps.state, 'owed')).orderBy(asc(hardenFollowUps.createdAt), asc(hardenFollowUps.commandId));
}

/** Marks the follow-up done with its answer; false when it was done already (only one finisher wins). */
export async function finishHardenFollowUp(db: Db, commandId: string, answer: Record<string, unknown>, now: number): Promise<boolean> {
  const { hardenFollowUps } = db.t;
  const res = await db.orm
    .update(hardenFollowUps)
    .set({ state: 'done', answer, finishedAt: now })
    .where(and(eq(hardenFollowUps.commandId, commandId), eq(hardenFollowUps.state, 'owed')));
  return changed(res) === 1;
}

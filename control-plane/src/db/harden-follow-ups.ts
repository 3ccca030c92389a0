/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, eq } from 'drizzle-orm';
import type { Db } from './index.ts';
import { hardenFollowUps } from './schema.ts';

export type HardenFollowUpRow = typeof hardenFollowUps.$inferSelect;

export interface NewHardenFollowUp {
  commandId: string;
  workspaceId: string;
  instanceId: string;
  keyId: string | null;
}

/**
 * Records that a harden command's follow-up is owed. Synchronous underneath on
 * purpose: it runs in the same tick as the command's insert, before delivery, so no
 * command reaches an agent without its follow-up on record.
 */
export function insertHardenFollowUp(db: Db, input: NewHardenFollowUp, now: number): void {
  db.insert(hardenFollowUps)
    .values({ ...input, state: 'owed', answer: null, createdAt: now, finishedAt: null })
    .run();
}

export async function getHardenFollowUp(db: Db, commandId: string): Promise<HardenFollowUpRow | undefined> {
  return db.select().from(hardenFollowUps).where(eq(hardenFollowUps.commandId, commandId)).get();
}

/** Follow-ups a previous process left undone, oldest first. */
export async function listOwedHardenFollowUps(db: Db): Promise<HardenFollowUpRow[]> {
  return db.select().from(hardenFollowUps).where(eq(hardenFollowUps.state, 'owed')).orderBy(hardenFollowUps.createdAt).all();
}

/** Marks the follow-up done with its answer; false when it was done already (only one finisher wins). */
export async function finishHardenFollowUp(db: Db, commandId: string, answer: Record<string, unknown>, now: number): Promise<boolean> {
  const r = db
    .update(hardenFollowUps)
    .set({ state: 'done', answer, finishedAt: now })
    .where(and(eq(hardenFollowUps.commandId, commandId), eq(hardenFollowUps.state, 'owed')))
    .run();
  return r.changes === 1;
}

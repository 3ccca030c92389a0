/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, eq, gt, isNull } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { enrollmentTokens } from './schema.ts';

export type EnrollmentTokenRow = typeof enrollmentTokens.$inferSelect;

export async function insertEnrollmentToken(
  db: Db,
  input: { workspaceId: string; instanceId: string; hash: string; expiresAt: number },
  now = Date.now(),
): Promise<EnrollmentTokenRow> {
  const row: EnrollmentTokenRow = { id: newId('enrollmentToken'), ...input, usedAt: null, createdAt: now };
  db.insert(enrollmentTokens).values(row).run();
  return row;
}

export async function findEnrollmentTokenByHash(db: Db, hash: string): Promise<EnrollmentTokenRow | undefined> {
  return db.select().from(enrollmentTokens).where(eq(enrollmentTokens.hash, hash)).get();
}

/**
 * Marks the token used if it is still unused and unexpired, atomically: of two
 * concurrent enrollments with one token, exactly one gets true.
 */
export async function consumeEnrollmentToken(db: Db, id: string, now = Date.now()): Promise<boolean> {
  const res = db
    .update(enrollmentTokens)
    .set({ usedAt: now })
    .where(and(eq(enrollmentTokens.id, id), isNull(enrollmentTokens.usedAt), gt(enrollmentTokens.expiresAt, now)))
    .run();
  return res.changes === 1;
}

/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { eq, lte, sql } from 'drizzle-orm';
import { prepared } from './index.ts';
import type { Db } from './index.ts';
import { apiKeys, dashboardSessions } from './schema.ts';
import type { ApiKeyRow } from './api-keys.ts';

export type DashboardSessionRow = typeof dashboardSessions.$inferSelect;

export async function insertDashboardSession(db: Db, row: DashboardSessionRow): Promise<void> {
  db.insert(dashboardSessions).values(row).run();
}

/** The session of a cookie hash with its API key, in one read (this runs on every dashboard request). */
export async function findDashboardSession(db: Db, hash: string): Promise<{ session: DashboardSessionRow; key: ApiKeyRow } | undefined> {
  const stmt = prepared(db, 'dashboardSessions.byHash', () =>
    db
      .select({ session: dashboardSessions, key: apiKeys })
      .from(dashboardSessions)
      .innerJoin(apiKeys, eq(apiKeys.id, dashboardSessions.keyId))
      .where(eq(dashboardSessions.hash, sql.placeholder('hash')))
      .prepare(),
  );
  return stmt.get({ hash });
}

export async function deleteDashboardSession(db: Db, hash: string): Promise<void> {
  db.delete(dashboardSessions).where(eq(dashboardSessions.hash, hash)).run();
}

/** Sessions past their own end are of no use to anyone: dropped at sign-in time. */
export async function deleteExpiredDashboardSessions(db: Db, now: number): Promise<void> {
  db.delete(dashboardSessions).where(lte(dashboardSessions.expiresAt, now)).run();
}

export async function touchDashboardSession(db: Db, hash: string, now: number): Promise<void> {
  db.update(dashboardSessions).set({ lastSeenAt: now }).where(eq(dashboardSessions.hash, hash)).run();
}

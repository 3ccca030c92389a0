import { eq, lte, sql } from 'drizzle-orm';
import { prepared } from './index.ts';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import type { ApiKeyRow } from './api-keys.ts';

export type DashboardSessionRow = Row<'dashboardSessions'>;

export async function insertDashboardSession(db: Db, row: DashboardSessionRow): Promise<void> {
  await db.orm.insert(db.t.dashboardSessions).values(row);
}

/** The session of a cookie hash with its API key, in one read (this runs on every dashboard request). */
export async function findDashboardSession(db: Db, hash: string): Promise<{ session: DashboardSessionRow; key: ApiKeyRow } | undefined> {
  const { apiKeys, dashboardSessions } = db.t;
  const stmt = prepared(db, 'dashboard_sessions_by_hash', () =>
    db.orm
      .select({ session: dashboardSessions, key: apiKeys })
      .from(dashboardSessions)
      .innerJoin(apiKeys, eq(apiKeys.id, dashboardSessions.keyId))
      .where(eq(dashboardSessions.hash, sql.placeholder('hash')))
      .prepare('dashboard_sessions_by_hash'),
  );
  const [row] = await stmt.execute({ hash });
  return row;
}

export async function deleteDashboardSession(db: Db, hash: string): Promise<void> {
  const { dashboardSessions } = db.t;
  await db.orm.delete(dashboardSessions).where(eq(dashboardSessions.hash, hash));
}

/** Sessions past their own end are of no use to anyone: dropped at sign-in time. */
export async function deleteExpiredDashboardSessions(db: Db, now: number): Promise<void> {
  const { dashboardSessions } = db.t;
  await db.orm.delete(dashboardSessions).where(lte(dashboardSessions.expiresAt, now));
}

export async function touchDashboardSession(db: Db, hash: string, now: number): Promise<void> {
  const { dashboardSessions } = db.t;
  await db.orm.update(dashboardSessions).set({ lastSeenAt: now }).where(eq(dashboardSessions.hash, hash));
}

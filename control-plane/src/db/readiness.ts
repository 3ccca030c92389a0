import { sql } from 'drizzle-orm';
import type { Db } from './index.ts';
import { rawRows } from './raw.ts';

export interface DatabaseReadiness {
  /** reachable and migrated: this process can serve. */
  ready: boolean;
  /** A trivial query answered. */
  reachable: boolean;
  /** The database has every migration this build ships (or newer ones, from a newer process). */
  migrationsApplied: boolean;
  /** Why not ready, in a sentence; absent when ready. */
  reason?: string;
}

/**
 * For /readyz and /healthz: can this process use its database? One query: the newest
 * migration the database recorded, compared with the newest this build ships.
 */
export async function databaseReadiness(db: Db): Promise<DatabaseReadiness> {
  const table = db.dialect === 'postgres' ? sql`drizzle.__drizzle_migrations` : sql`__drizzle_migrations`;
  let latest: number;
  try {
    const [row] = await rawRows<{ latest: number | string | null }>(db, sql`SELECT max(created_at) AS latest FROM ${table}`);
    latest = Number(row?.latest ?? 0);
  } catch (err) {
    return { ready: false, reachable: false, migrationsApplied: false, reason: `the ${db.dialect} database did not answer: ${(err as Error).message}` };
  }
  if (latest < db.latestMigration) {
    return { ready: false, reachable: true, migrationsApplied: false, reason: `the ${db.dialect} database lacks migrations this build ships` };
  }
  return { ready: true, reachable: true, migrationsApplied: true };
}

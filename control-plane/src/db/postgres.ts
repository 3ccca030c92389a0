import { join } from 'node:path';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';
import type { OpenOptions, PostgresDb } from './index.ts';
import { latestMigrationMillis } from './migrations.ts';
import { pgSchema } from './schema.ts';

export const PG_MIGRATIONS_DIR = join(import.meta.dirname, '..', '..', 'drizzle-pg');

/** "vmkitmig" in ASCII as a bigint: the session-level advisory lock every migrating process takes. */
export const MIGRATION_LOCK_KEY = '8533594969606023527';

/**
 * int8 (bigint) arrives as a JS number rather than a string: our bigints are
 * millisecond times, byte counts and GitHub run ids, all far below 2^53. drizzle's
 * own queries map their columns themselves; this serves raw queries (hub store, raw.ts).
 */
const types = new pg.TypeOverrides();
types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));

/**
 * A pool on `url` (10 connections unless told), migrated before it is handed out.
 * A connection that cannot be had in 10 s fails the query rather than hanging the request.
 */
export async function openPostgres(url: string, options: OpenOptions = {}): Promise<PostgresDb> {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolMax ?? 10,
    application_name: 'vmkit-control-plane',
    connectionTimeoutMillis: 10_000,
    types,
  });
  // An idle connection the server dropped emits 'error' on the pool; unhandled, it would end the process.
  pool.on('error', (err) => options.onPoolError?.(err));
  try {
    await migratePostgres(pool);
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw err;
  }
  return {
    dialect: 'postgres',
    pool,
    orm: drizzle({ client: pool }),
    t: pgSchema,
    latestMigration: latestMigrationMillis(PG_MIGRATIONS_DIR),
  };
}

/**
 * Applies pending migrations of `folder` while holding pg_advisory_lock on one
 * connection: processes that start together queue on the lock, the first migrates,
 * the others find nothing left to do. Answers how many migrations this call applied.
 */
export async function migratePostgres(pool: pg.Pool, folder = PG_MIGRATIONS_DIR): Promise<number> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      const before = await appliedMigrations(client);
      await migrate(drizzle({ client }), { migrationsFolder: folder });
      return (await appliedMigrations(client)) - before;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    // A connection that failed mid-way is dropped (which also drops any lock it held).
    client.release(broken);
  }
}

async function appliedMigrations(client: pg.PoolClient): Promise<number> {
  const table = await client.query<{ t: string | null }>("SELECT to_regclass('drizzle.__drizzle_migrations') AS t");
  if (table.rows[0]?.t === null) return 0;
  const res = await client.query<{ n: number }>('SELECT count(*) AS n FROM drizzle.__drizzle_migrations');
  return Number(res.rows[0]?.n ?? 0);
}

import { readMigrationFiles } from 'drizzle-orm/migrator';
import type { DatabaseProbe } from '../metrics/database.ts';
import { MIGRATIONS_DIR } from './index.ts';
import type { Db } from './index.ts';

/** drizzle's bookkeeping table: one row per applied migration, created_at = the migration's folder time. */
const MIGRATIONS_TABLE = '__drizzle_migrations';

let shipped: number[] | undefined;
/** The migrations this build ships (their folder times), read once per process. */
function shippedMigrations(): number[] {
  shipped ??= readMigrationFiles({ migrationsFolder: MIGRATIONS_DIR }).map((m) => m.folderMillis);
  return shipped;
}

/**
 * The SQLite database's health for /readyz and /metrics. There is no pool and no
 * LISTEN/NOTIFY in the embedded database: one connection, in this process.
 */
export class SqliteDatabaseProbe implements DatabaseProbe {
  readonly dialect = 'sqlite';
  readonly #db: Db;

  constructor(db: Db) {
    this.#db = db;
  }

  ping(): Promise<void> {
    // Synchronous in better-sqlite3; a closed handle throws ("The database connection is not open").
    this.#db.$client.prepare('select 1').get();
    return Promise.resolve();
  }

  /** Counted as drizzle's migrator decides: a shipped migration newer than the last applied one is pending. */
  pendingMigrations(): Promise<number> {
    const client = this.#db.$client;
    const table = client.prepare("select 1 from sqlite_master where type = 'table' and name = ?").get(MIGRATIONS_TABLE);
    const last = table === undefined ? undefined : (client.prepare(`select max(created_at) as at from ${MIGRATIONS_TABLE}`).get() as { at: number | null }).at;
    const lastAt = last === null || last === undefined ? -Infinity : Number(last);
    return Promise.resolve(shippedMigrations().filter((at) => at > lastAt).length);
  }
}

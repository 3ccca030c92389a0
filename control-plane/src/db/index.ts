import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import type { BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import * as schema from './schema.ts';

export { schema };

/** The drizzle handle every query module takes. `db.$client` is the raw better-sqlite3 connection. */
export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

export const MIGRATIONS_DIR = join(import.meta.dirname, '..', '..', 'drizzle');
export const DB_FILE_NAME = 'vmkit.sqlite';

/**
 * Opens (creating if needed) `<dataDir>/vmkit.sqlite` in WAL mode with foreign keys
 * on, and applies pending migrations. Pass ':memory:' as dataDir for a throwaway db.
 */
export function openDatabase(dataDir: string): Db {
  let file = ':memory:';
  if (dataDir !== ':memory:') {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    file = join(dataDir, DB_FILE_NAME);
  }
  const sqlite = new Database(file);
  try {
    if (file !== ':memory:') chmodSync(file, 0o600);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('foreign_keys = ON');
    // Another process (the `workspaces create` CLI) may write while the server runs.
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('synchronous = NORMAL');
    const db = drizzle({ client: sqlite, schema });
    migrate(db, { migrationsFolder: MIGRATIONS_DIR });
    return db;
  } catch (err) {
    sqlite.close();
    throw err;
  }
}

export function closeDatabase(db: Db): void {
  if (db.$client.open) db.$client.close();
}

const statements = new WeakMap<Db, Map<string, unknown>>();

/**
 * A prepared drizzle query made once per database handle: building and preparing the
 * SQL costs more than running it, so hot paths (key lookup, audit insert) reuse one.
 */
export function prepared<T>(db: Db, name: string, make: () => T): T {
  let map = statements.get(db);
  if (!map) statements.set(db, (map = new Map<string, unknown>()));
  let stmt = map.get(name) as T | undefined;
  if (stmt === undefined) {
    stmt = make();
    map.set(name, stmt);
  }
  return stmt;
}

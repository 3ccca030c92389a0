import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import type { Orm, SqliteDb } from './index.ts';
import { latestMigrationMillis } from './migrations.ts';
import { sqliteSchema } from './schema.ts';
import type { Tables } from './schema.ts';

export const SQLITE_MIGRATIONS_DIR = join(import.meta.dirname, '..', '..', 'drizzle');
export const DB_FILE_NAME = 'vmkit.sqlite';

/**
 * Opens (creating if needed) `<dataDir>/vmkit.sqlite` in WAL mode with foreign keys
 * on, and applies pending migrations. ':memory:' as dataDir gives a throwaway db.
 */
export function openSqlite(dataDir: string): SqliteDb {
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
    const orm = drizzle({ client: sqlite });
    migrate(orm, { migrationsFolder: SQLITE_MIGRATIONS_DIR });
    return {
      dialect: 'sqlite',
      sqlite,
      // SQLite's builders are awaited like PostgreSQL's (see the rules in index.ts).
      orm: orm as unknown as Orm,
      t: sqliteSchema as unknown as Tables,
      latestMigration: latestMigrationMillis(SQLITE_MIGRATIONS_DIR),
    };
  } catch (err) {
    sqlite.close();
    throw err;
  }
}

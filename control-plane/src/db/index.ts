/**
 * The control plane's database: SQLite (a file in the data directory, the default) or
 * PostgreSQL (`VMKIT_DATABASE_URL=postgres://...`). Every query module in db/ takes a
 * `Db` and is written once for both: `db.orm` is drizzle's query builder and `db.t`
 * the dialect's tables, both typed as PostgreSQL's (the async API, which SQLite's
 * builders honour too when awaited). Rules that keep one body working on both:
 *   - await builders (`const [row] = await db.orm.select()...`), never `.get()`,
 *     `.all()` or `.run()`, which only SQLite has;
 *   - count affected rows with `changed(await ...)`, or use `.returning()`;
 *   - transactions go through `transaction()` (db/tx.ts), never `db.orm.transaction`;
 *   - raw SQL through db/raw.ts; a constraint violation through db/errors.ts.
 */
import type Database from 'better-sqlite3';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { openPostgres } from './postgres.ts';
import { openSqlite } from './sqlite.ts';
import type { Tables } from './schema.ts';

export { DB_FILE_NAME, SQLITE_MIGRATIONS_DIR } from './sqlite.ts';
export { PG_MIGRATIONS_DIR } from './postgres.ts';
export type { Tables } from './schema.ts';

export type Dialect = 'sqlite' | 'postgres';

/** drizzle's query builder as the data layer sees it (see the rules above). */
export type Orm = NodePgDatabase;

interface DbBase {
  readonly orm: Orm;
  /** The dialect's tables. */
  readonly t: Tables;
  /** The `created_at` of the newest migration this build ships (readiness compares it). */
  readonly latestMigration: number;
}

export interface SqliteDb extends DbBase {
  readonly dialect: 'sqlite';
  /** The raw better-sqlite3 connection: only for SQLite fast paths inside db/. */
  readonly sqlite: Database.Database;
}

export interface PostgresDb extends DbBase {
  readonly dialect: 'postgres';
  readonly pool: pg.Pool;
}

export type Db = SqliteDb | PostgresDb;

export interface DatabaseTarget {
  /** The data directory: holds vmkit.sqlite unless databaseUrl is set. ':memory:' for a throwaway SQLite db. */
  dataDir: string;
  /** postgres:// or postgresql:// selects PostgreSQL. */
  databaseUrl?: string | undefined;
}

export interface OpenOptions {
  /** Where a broken idle PostgreSQL connection is reported (the pool replaces it). */
  onPoolError?: (err: Error) => void;
  /** PostgreSQL pool size (default 10). */
  poolMax?: number;
}

/**
 * Opens the database and applies pending migrations: for SQLite `<dataDir>/vmkit.sqlite`
 * (created 0600, WAL), for PostgreSQL a pool on `databaseUrl`, migrated under an
 * advisory lock so processes starting together migrate once. A string is a data dir.
 */
export async function openDatabase(target: string | DatabaseTarget, options: OpenOptions = {}): Promise<Db> {
  const t = typeof target === 'string' ? { dataDir: target } : target;
  if (t.databaseUrl !== undefined && t.databaseUrl !== '') return openPostgres(t.databaseUrl, options);
  return openSqlite(t.dataDir);
}

/** Closes the connection (SQLite) or ends the pool (PostgreSQL). Idempotent. */
export async function closeDatabase(db: Db): Promise<void> {
  if (db.dialect === 'sqlite') {
    if (db.sqlite.open) db.sqlite.close();
    return;
  }
  if (!db.pool.ended) await db.pool.end();
}

/** True for a postgres:// or postgresql:// URL. */
export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url);
}

/** The URL with its password replaced by `***`, for logs. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

const statements = new WeakMap<Db, Map<string, unknown>>();

/**
 * A prepared drizzle query made once per database handle: building the SQL costs more
 * than running it, so hot paths (key lookup) reuse one. Prepare with `.prepare(name)`
 * (PostgreSQL prepares a named statement once per pooled connection; SQLite ignores
 * the name) and run with `await stmt.execute(values)`.
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

/** True once closeDatabase() has run (tests check the server closed it on shutdown). */
export function isDatabaseClosed(db: Db): boolean {
  return db.dialect === 'sqlite' ? !db.sqlite.open : db.pool.ended;
}

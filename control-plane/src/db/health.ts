import { readMigrationFiles } from 'drizzle-orm/migrator';
import type { DatabasePoolStats, DatabaseProbe, NotifyStats } from '../metrics/database.ts';
import type { Db, PostgresDb } from './index.ts';
import { PG_MIGRATIONS_DIR } from './postgres.ts';
import { rawRows, sql } from './raw.ts';
import { SQLITE_MIGRATIONS_DIR } from './sqlite.ts';

const shipped = new Map<string, number[]>();
/** The migrations this build ships for a dialect (their folder times), read once per process. */
function shippedMigrations(folder: string): number[] {
  let times = shipped.get(folder);
  if (!times) shipped.set(folder, (times = readMigrationFiles({ migrationsFolder: folder }).map((m) => m.folderMillis)));
  return times;
}

/**
 * The database's health for /readyz and /metrics, in either dialect. SQLite has no
 * pool and no LISTEN/NOTIFY (one connection, in this process); PostgreSQL adds the pool.
 */
export class DatabaseHealthProbe implements DatabaseProbe {
  readonly dialect: Db['dialect'];
  readonly #db: Db;
  readonly pool?: () => DatabasePoolStats;
  /** PostgreSQL: the command bus's LISTEN connection (not listening until the bus attached it). */
  readonly notify?: () => NotifyStats;
  #notifySource: (() => NotifyStats) | undefined;

  constructor(db: Db) {
    this.#db = db;
    this.dialect = db.dialect;
    if (db.dialect === 'postgres') {
      this.pool = () => poolStats(db);
      this.notify = () => this.#notifySource?.() ?? { listening: false, reconnects: 0, received: 0 };
    }
  }

  /** The command bus's LISTEN connection, once it exists (hub/plugin.ts on PostgreSQL). */
  attachNotify(source: () => NotifyStats): void {
    this.#notifySource = source;
  }

  /** A closed handle or an unreachable server throws. */
  async ping(): Promise<void> {
    await rawRows(this.#db, sql`select 1`);
  }

  /** Counted as drizzle's migrator decides: a shipped migration newer than the last applied one is pending. */
  async pendingMigrations(): Promise<number> {
    const db = this.#db;
    let lastAt = -Infinity;
    if (db.dialect === 'sqlite') {
      const [table] = await rawRows(db, sql`select 1 from sqlite_master where type = 'table' and name = '__drizzle_migrations'`);
      if (table) lastAt = await lastApplied(db, sql`__drizzle_migrations`);
      return shippedMigrations(SQLITE_MIGRATIONS_DIR).filter((at) => at > lastAt).length;
    }
    const [table] = await rawRows<{ t: string | null }>(db, sql`select to_regclass('drizzle.__drizzle_migrations') as t`);
    if (table?.t) lastAt = await lastApplied(db, sql`drizzle.__drizzle_migrations`);
    return shippedMigrations(PG_MIGRATIONS_DIR).filter((at) => at > lastAt).length;
  }
}

async function lastApplied(db: Db, table: ReturnType<typeof sql>): Promise<number> {
  const [row] = await rawRows<{ at: number | string | null }>(db, sql`select max(created_at) as at from ${table}`);
  return row?.at === null || row?.at === undefined ? -Infinity : Number(row.at);
}

function poolStats(db: PostgresDb): DatabasePoolStats {
  const { pool } = db;
  return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max ?? 10 };
}

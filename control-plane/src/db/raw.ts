/**
 * Raw SQL for the few places drizzle's builder does not fit (health checks, tests
 * that read a table as stored). Write it with drizzle's `sql` template, which places
 * each dialect's parameters; the text itself must be valid in both dialects.
 * bigint arrives as a number in both; a JSON column arrives as text from SQLite and
 * parsed from PostgreSQL (jsonColumn() reads either).
 */
import type { SQL } from 'drizzle-orm';

/** drizzle's sql template, for callers outside the control plane's package (tests). */
export { sql } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import { SQLiteSyncDialect } from 'drizzle-orm/sqlite-core';
import type { Db } from './index.ts';

const sqliteDialect = new SQLiteSyncDialect();
const pgDialect = new PgDialect();

export async function rawRows<T = Record<string, unknown>>(db: Db, query: SQL): Promise<T[]> {
  if (db.dialect === 'sqlite') {
    const q = sqliteDialect.sqlToQuery(query);
    return db.sqlite.prepare(q.sql).all(...q.params) as T[];
  }
  const q = pgDialect.sqlToQuery(query);
  return (await db.pool.query(q.sql, q.params)).rows as T[];
}

/** Runs a statement that returns no rows; answers how many rows it changed. */
export async function rawExec(db: Db, query: SQL): Promise<number> {
  if (db.dialect === 'sqlite') {
    const q = sqliteDialect.sqlToQuery(query);
    return db.sqlite.prepare(q.sql).run(...q.params).changes;
  }
  const q = pgDialect.sqlToQuery(query);
  return (await db.pool.query(q.sql, q.params)).rowCount ?? 0;
}

/** A JSON column's value from a raw row of either dialect. */
export function jsonColumn<T>(value: unknown): T | null {
  if (value === null || value === undefined) return null;
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

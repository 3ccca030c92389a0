/**
 * Transactions written once for both dialects. better-sqlite3 runs a transaction
 * synchronously (a body that awaits would let other requests' statements in), while
 * node-postgres needs one awaited connection. So a body is a generator that yields
 * its queries: SQLite runs each at once inside BEGIN IMMEDIATE, PostgreSQL awaits each
 * on the transaction's connection. A body does nothing but database work.
 *
 *   const won = await transaction(db, function* (tx, t) {
 *     const [token] = yield* rows(tx.select().from(t.enrollmentTokens).where(...));
 *     if (!token) return false;
 *     return (yield* exec(tx.update(t.enrollmentTokens).set({ usedAt: now }).where(...))) === 1;
 *   });
 */
import { sql } from 'drizzle-orm';
import type { BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import type { Db, Orm } from './index.ts';
import type { Tables } from './schema.ts';

export interface TxStep {
  kind: 'rows' | 'exec';
  query: PromiseLike<unknown>;
}

export type TxBody<R> = (tx: Orm, t: Tables) => Generator<TxStep, R, unknown>;

/** The rows of a select, or of a write with `.returning()`. */
export function* rows<T>(query: PromiseLike<T[]>): Generator<TxStep, T[], unknown> {
  return (yield { kind: 'rows', query }) as T[];
}

/** Runs a write without `.returning()`; answers how many rows it changed. */
export function* exec(query: PromiseLike<unknown>): Generator<TxStep, number, unknown> {
  return (yield { kind: 'exec', query }) as number;
}

/** How many rows a write changed: node-postgres says rowCount, better-sqlite3 says changes. */
export function changed(result: unknown): number {
  const r = result as { rowCount?: number | null; changes?: number } | null | undefined;
  return r?.rowCount ?? r?.changes ?? 0;
}

/** Runs the body in one transaction: all of it or none of it. */
export async function transaction<R>(db: Db, body: TxBody<R>): Promise<R> {
  if (db.dialect === 'sqlite') {
    const orm = db.orm as unknown as BetterSQLite3Database;
    return orm.transaction((tx) => driveSync(body(tx as unknown as Orm, db.t)), { behavior: 'immediate' });
  }
  return db.orm.transaction(async (tx) => {
    const steps = body(tx, db.t);
    let next = steps.next();
    while (!next.done) {
      const res = await next.value.query;
      next = steps.next(next.value.kind === 'rows' ? res : changed(res));
    }
    return next.value;
  });
}

/**
 * Runs the body in one transaction that concurrent callers in every process take in
 * turn: on PostgreSQL under the transaction-scoped advisory lock `lockKey` (needed where
 * READ COMMITTED would let two transactions both see "nothing there yet" and both write);
 * SQLite's BEGIN IMMEDIATE already serialises writers, so the key is not needed there.
 */
export function lockedTransaction<R>(db: Db, lockKey: bigint, body: TxBody<R>): Promise<R> {
  if (db.dialect === 'sqlite') return transaction(db, body);
  return transaction(db, function* (tx, t) {
    yield* exec(tx.execute(sql`SELECT pg_advisory_xact_lock(${lockKey.toString()}::bigint)`));
    return yield* body(tx, t);
  });
}

interface SyncQuery {
  all(): unknown[];
  run(): { changes: number };
}

function driveSync<R>(steps: Generator<TxStep, R, unknown>): R {
  let next = steps.next();
  while (!next.done) {
    const q = next.value.query as unknown as SyncQuery;
    next = steps.next(next.value.kind === 'rows' ? q.all() : q.run().changes);
  }
  return next.value;
}

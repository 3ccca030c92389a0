/**
 * Group commit for the hub's hot writes: every write issued while the event loop works
 * through one burst of frames (handshakes, acks, results, state changes) is committed
 * in one transaction, instead of one transaction per message. A write's promise settles
 * only after its transaction committed, so whoever awaits it (the bus before it
 * delivers a command, before it tells a caller the result) gets exactly the durability
 * a write of its own gave: batching merges concurrent writes, it delays none past its
 * commit.
 *
 * Order: writes commit in the order they were issued. Writes that depend on each other
 * are issued one after the other's promise settled (the hub and the bus await each
 * state change before the next of the same agent or command), so they never share a
 * batch out of order nor race in two batches.
 */
import type { Database } from 'better-sqlite3';
import type pg from 'pg';

export interface WriteBatchOptions {
  /** A batch is committed at once when it holds this many writes. Default 512. */
  maxBatch?: number;
}

interface Pending<Op, R> {
  op: Op;
  resolve(value: R): void;
  reject(err: unknown): void;
}

/** Counters for benchmarks and tests: how many writes shared how many transactions. */
export interface WriteBatchStats {
  writes: number;
  transactions: number;
}

/** SQLite: the batch runs synchronously in one `BEGIN … COMMIT` at the next turn of the event loop. */
export class SqliteWriteBatch {
  readonly #sqlite: Database;
  readonly #max: number;
  #queue: Pending<() => unknown, unknown>[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  readonly stats: WriteBatchStats = { writes: 0, transactions: 0 };

  constructor(sqlite: Database, opts: WriteBatchOptions = {}) {
    this.#sqlite = sqlite;
    this.#max = opts.maxBatch ?? 512;
  }

  /** Runs `op` (prepared statements, synchronous) inside the next batch's transaction. */
  run<T>(op: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
      if (this.#queue.length >= this.#max) this.flush();
      else this.#scheduled ??= setImmediate(() => this.flush());
    });
  }

  /** Commits what is queued now. */
  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    if (!this.#sqlite.open) {
      const err = new Error('the database is closed');
      for (const p of batch) p.reject(err);
      return;
    }
    const outcomes: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    try {
      this.#sqlite.transaction(() => {
        for (const p of batch) {
          try {
            outcomes.push({ ok: true, value: p.op() });
          } catch (err) {
            // A failed statement is undone on its own (SQLite's statement rollback) and the
            // others stand, as if each had been its own transaction; an error that ended the
            // transaction itself fails the whole batch, nothing of it committed.
            if (!this.#sqlite.inTransaction) throw err;
            outcomes.push({ ok: false, err });
          }
        }
      })();
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    this.stats.writes += batch.length;
    this.stats.transactions++;
    batch.forEach((p, i) => {
      const o = outcomes[i];
      if (o?.ok) p.resolve(o.value);
      else p.reject(o?.err);
    });
  }
}

export interface PgWriteBatchOptions extends WriteBatchOptions {
  /** Batches committing at once, each on its own pooled connection. Default 2. */
  maxInFlight?: number;
}

/**
 * PostgreSQL: the batch's statements run in order on one pooled connection inside
 * `BEGIN … COMMIT`: one commit (one WAL flush) for the lot. While `maxInFlight` batches
 * are committing, new writes wait and join the next batch, so batches grow with load.
 * A statement that fails rolls the batch back; its writes are then run one by one, each
 * in its own transaction as before batching, so one bad write fails alone. A failed
 * COMMIT fails every write of the batch (whether it committed is not known).
 */
export class PgWriteBatch {
  readonly #pool: pg.Pool;
  readonly #max: number;
  readonly #maxInFlight: number;
  #queue: Pending<pg.QueryConfig, pg.QueryResult>[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  #inFlight = 0;
  readonly stats: WriteBatchStats = { writes: 0, transactions: 0 };

  constructor(pool: pg.Pool, opts: PgWriteBatchOptions = {}) {
    this.#pool = pool;
    this.#max = opts.maxBatch ?? 512;
    this.#maxInFlight = opts.maxInFlight ?? 2;
  }

  query(q: pg.QueryConfig): Promise<pg.QueryResult> {
    return new Promise<pg.QueryResult>((resolve, reject) => {
      this.#queue.push({ op: q, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#inFlight >= this.#maxInFlight || this.#scheduled) return;
    this.#scheduled = setImmediate(() => {
      this.#scheduled = undefined;
      this.#next();
    });
  }

  #next(): void {
    while (this.#inFlight < this.#maxInFlight && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#max);
      this.#inFlight++;
      void this.#commit(batch).finally(() => {
        this.#inFlight--;
        if (this.#queue.length > 0) this.#schedule();
      });
    }
  }

  async #commit(batch: Pending<pg.QueryConfig, pg.QueryResult>[]): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    const results: pg.QueryResult[] = [];
    let statementsDone = false;
    try {
      if (batch.length === 1) {
        const [only] = batch;
        if (only) results.push(await client.query(only.op));
      } else {
        await client.query('BEGIN');
        for (const p of batch) results.push(await client.query(p.op));
        statementsDone = true;
        await client.query('COMMIT');
      }
    } catch (err) {
      if (statementsDone || batch.length === 1) {
        // A COMMIT that failed may or may not have applied: the connection is not reused.
        client.release(statementsDone ? true : undefined);
        for (const p of batch) p.reject(err);
        return;
      }
      let rolledBack = true;
      try {
        await client.query('ROLLBACK');
      } catch {
        rolledBack = false;
      }
      client.release(rolledBack ? undefined : true);
      for (const p of batch) {
        try {
          p.resolve(await this.#pool.query(p.op));
        } catch (e) {
          p.reject(e);
        }
      }
      return;
    }
    client.release();
    this.stats.writes += batch.length;
    this.stats.transactions++;
    batch.forEach((p, i) => p.resolve(results[i] as pg.QueryResult));
  }
}

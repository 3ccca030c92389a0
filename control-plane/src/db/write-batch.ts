/**
 * Group commit for the hub's hot writes: every write issued while the event loop works
 * through one burst of frames (handshakes, acks, results, state changes) is committed
 * in one transaction, instead of one transaction per message. A write's promise settles
 * only after its transaction committed, so whoever awaits it (the bus before it
 * delivers a command, before it tells a caller the result) gets exactly the durability
 * a write of its own gave: batching merges concurrent writes, it delays none past its
 * commit.
 *
 * Order: writes that depend on each other are issued one after the other's promise
 * settled (the hub and the bus await each state change before the next of the same
 * agent or command), so they never share a batch nor race in two batches. Within a
 * batch, SQLite runs the writes in the order they were issued; PostgreSQL runs them
 * grouped by kind (one multi-row statement per kind), which the independence of a
 * batch's writes makes equivalent.
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

/** Counters for benchmarks and tests: how many writes shared how many transactions (and, on PostgreSQL, statements). */
export interface WriteBatchStats {
  writes: number;
  transactions: number;
  statements: number;
}

/** SQLite: the batch runs synchronously in one `BEGIN … COMMIT` at the next turn of the event loop. */
export class SqliteWriteBatch {
  readonly #sqlite: Database;
  readonly #max: number;
  #queue: Pending<() => unknown, unknown>[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  readonly stats: WriteBatchStats = { writes: 0, transactions: 0, statements: 0 };

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
    this.stats.statements += batch.length;
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
 * A write that shares one statement with the other writes of its kind in a batch: the
 * statement takes one array per column (`unnest`) and returns the key of every row it
 * wrote, which is this write's answer (1 row or 0). A write alone runs it with one row.
 */
export interface MergeableWrite {
  /** Writes of the same kind in one batch become one statement. */
  kind: string;
  /** This write's key among the merged statement's returned `key` column. */
  key: string;
  /** This write's values, one per column of the merged statement. */
  row: readonly unknown[];
  /** The statement for many rows, given one array per column; it must return a `key` column. */
  merged(columns: unknown[][]): pg.QueryConfig;
}

/** What a batched write answers: how many rows it changed. */
export interface WriteResult {
  rowCount: number;
}

/** A plain statement, or a write of a kind that merges. */
type PgWrite = { plain: pg.QueryConfig; merge?: undefined } | { plain?: undefined; merge: MergeableWrite };

/** Mergeable writes of one kind in one statement; each answers whether its row was written. */
async function runMerged(client: pg.Pool | pg.PoolClient, group: readonly MergeableWrite[]): Promise<WriteResult[]> {
  const first = group[0];
  if (!first) return [];
  const columns = first.row.map((_, c) => group.map((w) => w.row[c]));
  const { rows } = await client.query<{ key: string }>(first.merged(columns));
  const written = new Set(rows.map((r) => r.key));
  return group.map((w) => ({ rowCount: written.has(w.key) ? 1 : 0 }));
}

/** One write on its own, outside any batch statement. */
async function runAlone(client: pg.Pool | pg.PoolClient, write: PgWrite): Promise<WriteResult> {
  if (write.merge) return (await runMerged(client, [write.merge]))[0] ?? { rowCount: 0 };
  return { rowCount: (await client.query(write.plain)).rowCount ?? 0 };
}

/**
 * PostgreSQL: the batch's statements run on one pooled connection inside
 * `BEGIN … COMMIT`: one commit (one WAL flush) for the lot. Writes of one kind that
 * can be merged (a state change, a result, an insert) run as one multi-row statement
 * instead of one round trip each; a kind whose writes touch one row twice is not
 * merged. Writes of a batch are independent by construction (see the top of this
 * file), so running them grouped by kind changes no outcome. While `maxInFlight` batches
 * are committing, new writes wait and join the next batch, so batches grow with load.
 * A statement that fails rolls the batch back; its writes are then run one by one, each
 * in its own transaction as before batching, so one bad write fails alone. A failed
 * COMMIT fails every write of the batch (whether it committed is not known).
 */
export class PgWriteBatch {
  readonly #pool: pg.Pool;
  readonly #max: number;
  readonly #maxInFlight: number;
  #queue: Pending<PgWrite, WriteResult>[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  #inFlight = 0;
  readonly stats: WriteBatchStats = { writes: 0, transactions: 0, statements: 0 };

  constructor(pool: pg.Pool, opts: PgWriteBatchOptions = {}) {
    this.#pool = pool;
    this.#max = opts.maxBatch ?? 512;
    this.#maxInFlight = opts.maxInFlight ?? 2;
  }

  /** A plain statement, run on its own within the batch's transaction. */
  query(q: pg.QueryConfig): Promise<WriteResult> {
    return this.#enqueue({ plain: q });
  }

  /** A write whose kind merges: the writes of its kind in the same batch share one statement. */
  write(merge: MergeableWrite): Promise<WriteResult> {
    return this.#enqueue({ merge });
  }

  #enqueue(op: PgWrite): Promise<WriteResult> {
    return new Promise<WriteResult>((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
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

  async #commit(batch: Pending<PgWrite, WriteResult>[]): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    const results: WriteResult[] = new Array<WriteResult>(batch.length);
    let statementsDone = false;
    let statements = 0;
    try {
      if (batch.length === 1) {
        const [only] = batch;
        if (only) results[0] = await runAlone(client, only.op);
        statements = 1;
      } else {
        await client.query('BEGIN');
        for (const group of groupsOf(batch)) {
          statements++;
          if ('plain' in group) {
            results[group.index] = await runAlone(client, { plain: group.plain });
            continue;
          }
          const answers = await runMerged(client, group.writes.map((w) => w.merge));
          group.writes.forEach((w, i) => (results[w.index] = answers[i] ?? { rowCount: 0 }));
        }
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
          p.resolve(await runAlone(this.#pool, p.op));
        } catch (e) {
          p.reject(e);
        }
      }
      return;
    }
    client.release();
    this.stats.writes += batch.length;
    this.stats.statements += statements;
    this.stats.transactions++;
    batch.forEach((p, i) => p.resolve(results[i] ?? { rowCount: 0 }));
  }
}

/** A statement of a batch: a plain write alone, or the writes of one mergeable kind. */
type Group = { index: number; plain: pg.QueryConfig } | { writes: { index: number; merge: MergeableWrite }[] };

/**
 * The statements of a batch, in the order their kinds first appear: each mergeable kind
 * one group (unless two of its writes share a key: then each alone), every plain write
 * alone.
 */
function groupsOf(batch: readonly Pending<PgWrite, WriteResult>[]): Group[] {
  const groups: Group[] = [];
  const byKind = new Map<string, { index: number; merge: MergeableWrite }[]>();
  batch.forEach((p, index) => {
    const { merge } = p.op;
    if (!merge) {
      groups.push({ index, plain: p.op.plain });
      return;
    }
    let writes = byKind.get(merge.kind);
    if (!writes) {
      writes = [];
      byKind.set(merge.kind, writes);
      groups.push({ writes });
    }
    writes.push({ index, merge });
  });
  return groups.flatMap((group) => {
    if ('plain' in group || group.writes.length < 2) return [group];
    const keys = new Set(group.writes.map((w) => w.merge.key));
    return keys.size === group.writes.length ? [group] : group.writes.map((w) => ({ writes: [w] }));
  });
}

/**
 * PostgreSQL reads by key that arrive together (the handshakes of a reconnecting fleet)
 * become one `= ANY($1)` query per turn of the event loop instead of one round trip
 * each. `fetch` answers for a list of distinct keys; a key it leaves out answers
 * `missing`. A failed query fails every read of its batch.
 */
export class PgKeyedReads<V> {
  readonly #fetch: (keys: string[]) => Promise<Map<string, V>>;
  readonly #missing: V;
  readonly #max: number;
  #queue = new Map<string, { resolve(value: V): void; reject(err: unknown): void }[]>();
  #scheduled: NodeJS.Immediate | undefined;
  readonly stats = { reads: 0, queries: 0 };

  constructor(fetch: (keys: string[]) => Promise<Map<string, V>>, missing: V, opts: { maxBatch?: number } = {}) {
    this.#fetch = fetch;
    this.#missing = missing;
    this.#max = opts.maxBatch ?? 500;
  }

  read(key: string): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      let waiting = this.#queue.get(key);
      if (!waiting) this.#queue.set(key, (waiting = []));
      waiting.push({ resolve, reject });
      this.stats.reads++;
      if (this.#queue.size >= this.#max) this.#run();
      else this.#scheduled ??= setImmediate(() => this.#run());
    });
  }

  #run(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const batch = this.#queue;
    this.#queue = new Map();
    if (batch.size === 0) return;
    this.stats.queries++;
    this.#fetch([...batch.keys()]).then(
      (found) => {
        for (const [key, waiting] of batch) for (const w of waiting) w.resolve(found.get(key) ?? this.#missing);
      },
      (err: unknown) => {
        for (const waiting of batch.values()) for (const w of waiting) w.reject(err);
      },
    );
  }
}

import type pg from 'pg';

interface RouteLike {
  method?: string | readonly string[];
  url?: string;
}
/**
 * What @fastify/rate-limit hands a store: the limit's settings and, for a route's own
 * limit, its route (as `routeInfo` at run time; its typings say the route itself).
 */
interface StoreParams extends RouteLike {
  routeInfo?: RouteLike;
}

type IncrCallback = (err: Error | null, res?: { current: number; ttl: number }) => void;

/** Rows of windows that ended this long ago are deleted (every sweep, by whichever process). */
const KEEP_MS = 3_600_000;
const SWEEP_MS = 60_000;

/** The database's clock in ms: every process counts windows by one clock, not its own. */
const DB_NOW = `(extract(epoch from clock_timestamp()) * 1000)::bigint`;

const INCR: pg.QueryConfig = {
  name: 'rate_limit_incr',
  // One statement: the first request of a key opens its window; a request after the
  // window ended opens a new one; any other counts in the current one. Row-locked by the
  // upsert, so concurrent requests through several processes are counted one by one.
  text: `INSERT INTO rate_limits AS r (key, window_start, count) VALUES ($1, ${DB_NOW}, 1)
         ON CONFLICT (key) DO UPDATE SET
           count = CASE WHEN r.window_start + $2 <= ${DB_NOW} THEN 1 ELSE r.count + 1 END,
           window_start = CASE WHEN r.window_start + $2 <= ${DB_NOW} THEN ${DB_NOW} ELSE r.window_start END
         RETURNING count, (r.window_start + $2 - ${DB_NOW})::bigint AS ttl`,
};

const READ: pg.QueryConfig = {
  name: 'rate_limit_read',
  text: `SELECT count, (window_start + $2 - ${DB_NOW})::bigint AS ttl FROM rate_limits WHERE key = $1`,
};

/**
 * @fastify/rate-limit's store for several control-plane processes on one PostgreSQL
 * database: a key's budget (600/min by default) is the fleet's total, not each process's.
 * Fixed windows, as the in-memory store counts them, timed by the database's clock. A
 * route with a limit of its own (the MCP envelope's) counts under its own prefix, as the
 * in-memory store gives it a store of its own. Old windows are swept once a minute.
 */
export function pgRateLimitStore(
  pool: pg.Pool,
  onSweepError?: (err: unknown) => void,
): { Store: new (params: StoreParams) => PgRateLimitStore; close: () => void } {
  let sweeper: NodeJS.Timeout | undefined;
  let closed = false;
  const sweep = () => {
    // A failed sweep leaves old rows for the next one; counting never reads them.
    pool.query(`DELETE FROM rate_limits WHERE window_start < ${DB_NOW} - $1`, [KEEP_MS]).catch((err: unknown) => onSweepError?.(err));
  };
  return {
    Store: class extends PgRateLimitStore {
      constructor(params: StoreParams) {
        super(pool, prefixOf(params));
        if (!sweeper && !closed) {
          sweeper = setInterval(sweep, SWEEP_MS);
          sweeper.unref();
        }
      }
    },
    close: () => {
      closed = true;
      if (sweeper) clearInterval(sweeper);
      sweeper = undefined;
    },
  };
}

function prefixOf(params: StoreParams): string {
  const route = params.routeInfo ?? (params.url === undefined ? undefined : params);
  if (!route) return 'all';
  const m = route.method;
  const method = typeof m === 'string' ? m : (m ?? []).join(',');
  return `${method} ${route.url ?? ''}`;
}

export class PgRateLimitStore {
  readonly #pool: pg.Pool;
  readonly #prefix: string;

  constructor(pool: pg.Pool, prefix: string) {
    this.#pool = pool;
    this.#prefix = prefix;
  }

  incr(key: string, cb: IncrCallback, timeWindow: number): void {
    this.#pool.query<{ count: number; ttl: string }>({ ...INCR, values: [`${this.#prefix}|${key}`, timeWindow] }).then(
      ({ rows }) => {
        const row = rows[0];
        cb(null, { current: row?.count ?? 1, ttl: Math.max(0, Number(row?.ttl ?? timeWindow)) });
      },
      (err: unknown) => cb(err as Error),
    );
  }

  read(key: string, cb: IncrCallback, timeWindow: number): void {
    this.#pool.query<{ count: number; ttl: string }>({ ...READ, values: [`${this.#prefix}|${key}`, timeWindow] }).then(
      ({ rows }) => {
        const row = rows[0];
        const ttl = Number(row?.ttl ?? 0);
        cb(null, row && ttl > 0 ? { current: row.count, ttl } : { current: 0, ttl: 0 });
      },
      (err: unknown) => cb(err as Error),
    );
  }

  child(params: StoreParams): PgRateLimitStore {
    return new PgRateLimitStore(this.#pool, prefixOf(params));
  }
}

/**
 * What the metrics and /readyz need to know of the database, whatever the dialect.
 * The data layer implements it for both dialects (db/health.ts: PostgreSQL adds
 * `pool()`); a LISTEN/NOTIFY bus will add `notify()`.
 */
export interface DatabaseProbe {
  /** `sqlite` or `postgres`: a label on the database series. */
  readonly dialect: string;
  /** Runs a trivial query; throws when the database cannot answer it. */
  ping(): Promise<void>;
  /** Migrations shipped with this build that the database has not applied (0 when up to date). */
  pendingMigrations(): Promise<number>;
  /** The connection pool right now, where there is one. */
  pool?(): DatabasePoolStats;
  /** The LISTEN/NOTIFY connection the command bus relies on, where there is one. */
  notify?(): NotifyStats;
}

export interface DatabasePoolStats {
  /** Connections open (idle and in use). */
  total: number;
  idle: number;
  /** Queries waiting for a connection. */
  waiting: number;
  /** The pool's upper bound. */
  max: number;
}

export interface NotifyStats {
  /** Whether the LISTEN connection is up and subscribed right now. */
  listening: boolean;
  /** Times the LISTEN connection was lost and made again since start. */
  reconnects: number;
  /** Notifications received since start. */
  received: number;
}

/** One channel of change events between processes (services/change-events/cluster.ts), counted since start. */
export interface ChangeEventStats {
  /** The NOTIFY channel, e.g. vmkit_deploy_events: a label. */
  channel: string;
  /** NOTIFYs sent for this process's changes. */
  sent: number;
  /** NOTIFYs that failed (those waiters elsewhere answer at their wait_ms). */
  failed: number;
  /** Changes folded into a NOTIFY already under way for the same row. */
  coalesced: number;
  /** Notifications of other processes' changes heard. */
  received: number;
  /** Times the LISTEN connection listened (again) and every waiter woke to re-read, the first listen included. */
  resyncs: number;
}

/** Settles with the promise, or rejects after `ms`: a database that hangs is as unready as one that refuses. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

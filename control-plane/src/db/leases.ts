/**
 * Leases on long work (running deploys and agent rollouts): the columns lease_owner
 * (a node id), lease_expires_at and lease_generation on the work's own row. One
 * process drives a row while it holds the lease; it renews all its leases with one
 * UPDATE per kind, and any process claims rows whose lease ran out:
 *
 *   - PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED in a transaction, then the UPDATE
 *     that names the claimant, so processes claiming together never take the same row;
 *   - SQLite (one process): the same body under BEGIN IMMEDIATE.
 *
 * Every claim raises the generation. A driver's writes are fenced by owner and
 * generation (`fenced*` below and in deploys.ts / agent-rollouts.ts): a process that
 * lost its lease while paused has its next write refused with LeaseLost, in the same
 * transaction as the write, and stops there. Times are this host's wall clock
 * (Date.now()), never a test's replaced clock.
 */
import { and, asc, eq, inArray, isNull, lt, notInArray, or, sql } from 'drizzle-orm';
import type { SQL } from 'drizzle-orm';
import type { Db } from './index.ts';
import type { Tables } from './schema.ts';
import { rows, transaction } from './tx.ts';

export type LeaseKind = 'deploys' | 'agentRollouts';

/** A lease this process holds: writes about the row are fenced with it. */
export interface Lease {
  id: string;
  nodeId: string;
  generation: number;
}

/** A claimed row, with whoever held it before (null: nobody, e.g. released at a clean stop). */
export interface Claimed extends Lease {
  previousOwner: string | null;
}

export interface LeaseTerms {
  nodeId: string;
  /** Wall-clock ms. */
  now: number;
  durationMs: number;
}

/** A write refused because this process no longer holds the row's lease. */
export class LeaseLost extends Error {
  override name = 'LeaseLost';
  readonly kind: LeaseKind;
  readonly id: string;
  constructor(
    kind: LeaseKind,
    id: string,
  ) {
    super(`the lease on ${kind === 'deploys' ? 'deploy' : 'rollout'} ${id} is held by another process now`);
    this.kind = kind;
    this.id = id;
  }
}

/**
 * Both tables carry the same lease columns beside `id` and `status`, the only ones used
 * here; the deploys table's type stands for either (drizzle cannot type a union of tables).
 */
function tableOf(t: Tables, kind: LeaseKind): Tables['deploys'] {
  return (kind === 'deploys' ? t.deploys : t.agentRollouts) as unknown as Tables['deploys'];
}

/** The lease columns of a new row its creator drives at once (generation 1). */
export function newLease(terms: LeaseTerms): { leaseOwner: string; leaseExpiresAt: number; leaseGeneration: number } {
  return { leaseOwner: terms.nodeId, leaseExpiresAt: terms.now + terms.durationMs, leaseGeneration: 1 };
}

/** The WHERE of a fenced write: this row, still ours at this generation. */
export function fenceOf(t: Tables, kind: LeaseKind, lease: Lease): SQL {
  const table = tableOf(t, kind);
  return and(eq(table.id, lease.id), eq(table.leaseOwner, lease.nodeId), eq(table.leaseGeneration, lease.generation)) as SQL;
}

export interface ClaimOptions {
  /** Rows this process drives already (never claimed again). */
  exclude?: readonly string[];
  /** Every running row whatever its lease (SQLite at start: the only process there is). */
  all?: boolean;
  /** At most this many per claim (the rest at the next one). */
  limit?: number;
}

/**
 * Claims running rows nobody holds: unowned (released), lease expired, or owned by this
 * very node id but not driven (this process restarted under the same id). Answers the
 * rows now leased to `terms.nodeId`, each with its new generation.
 */
export async function claimLeases(db: Db, kind: LeaseKind, terms: LeaseTerms, opts: ClaimOptions = {}): Promise<Claimed[]> {
  const exclude = [...(opts.exclude ?? [])];
  return transaction(db, function* (tx, t) {
    const table = tableOf(t, kind);
    const free = or(isNull(table.leaseOwner), isNull(table.leaseExpiresAt), lt(table.leaseExpiresAt, terms.now), eq(table.leaseOwner, terms.nodeId));
    const where = and(eq(table.status, 'running'), opts.all === true ? undefined : free, exclude.length > 0 ? notInArray(table.id, exclude) : undefined);
    const select = tx
      .select({ id: table.id, owner: table.leaseOwner })
      .from(table)
      .where(where)
      .orderBy(asc(table.id))
      .limit(opts.limit ?? 100);
    // SQLite's builder has no FOR UPDATE (BEGIN IMMEDIATE already holds the one writer lock).
    const found = yield* rows(db.dialect === 'postgres' ? select.for('update', { skipLocked: true }) : select);
    if (found.length === 0) return [];
    const claimed = yield* rows(
      tx
        .update(table)
        .set({ leaseOwner: terms.nodeId, leaseExpiresAt: terms.now + terms.durationMs, leaseGeneration: sqlPlusOne(table) })
        .where(
          inArray(
            table.id,
            found.map((r) => r.id),
          ),
        )
        .returning({ id: table.id, generation: table.leaseGeneration }),
    );
    const before = new Map(found.map((r) => [r.id, r.owner]));
    return claimed
      .map((c) => ({ id: c.id, nodeId: terms.nodeId, generation: c.generation, previousOwner: before.get(c.id) ?? null }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  });
}

function sqlPlusOne(table: Tables['deploys']): SQL<number> {
  // drizzle's sql template places the column in either dialect.
  return sql<number>`${table.leaseGeneration} + 1`;
}

/**
 * Extends this node's leases on `ids` (the rows it drives) with one UPDATE; answers the
 * ids still held. An id missing from the answer was claimed by another process (or
 * ended): its driver must stop.
 */
export async function renewLeases(db: Db, kind: LeaseKind, terms: LeaseTerms, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const table = tableOf(db.t, kind);
  const renewed = await db.orm
    .update(table)
    .set({ leaseExpiresAt: terms.now + terms.durationMs })
    .where(and(inArray(table.id, [...ids]), eq(table.leaseOwner, terms.nodeId), eq(table.status, 'running')))
    .returning({ id: table.id });
  return new Set(renewed.map((r) => r.id));
}

/** Who holds each of `ids` now and whether it still runs (rows that no longer exist are left out). */
export async function leaseStates(db: Db, kind: LeaseKind, ids: readonly string[]): Promise<Map<string, { owner: string | null; running: boolean }>> {
  if (ids.length === 0) return new Map();
  const table = tableOf(db.t, kind);
  const rows = await db.orm.select({ id: table.id, owner: table.leaseOwner, status: table.status }).from(table).where(inArray(table.id, [...ids]));
  return new Map(rows.map((r) => [r.id, { owner: r.owner, running: r.status === 'running' }]));
}

/** Gives up this node's leases on `ids` (a clean stop): any process may claim them at once. */
export async function releaseLeases(db: Db, kind: LeaseKind, nodeId: string, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const table = tableOf(db.t, kind);
  const released = await db.orm
    .update(table)
    .set({ leaseOwner: null, leaseExpiresAt: null })
    .where(and(inArray(table.id, [...ids]), eq(table.leaseOwner, nodeId)))
    .returning({ id: table.id });
  return released.length;
}

/** Who holds a row's lease now (tests, logs). */
export async function leaseOf(db: Db, kind: LeaseKind, id: string): Promise<{ owner: string | null; expiresAt: number | null; generation: number } | undefined> {
  const table = tableOf(db.t, kind);
  const [row] = await db.orm
    .select({ owner: table.leaseOwner, expiresAt: table.leaseExpiresAt, generation: table.leaseGeneration })
    .from(table)
    .where(eq(table.id, id));
  return row;
}

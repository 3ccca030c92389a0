import { and, asc, desc, eq, gte, inArray, sql } from 'drizzle-orm';
import type { SQL } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import { isUniqueViolation } from './errors.ts';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { exec, rows, transaction } from './tx.ts';
import { LeaseLost, fenceOf, newLease } from './leases.ts';
import type { Lease, LeaseTerms } from './leases.ts';

export type RolloutRow = Row<'agentRollouts'>;
export type RolloutTargetRow = Row<'agentRolloutTargets'>;
export type RolloutStatus = 'running' | 'succeeded' | 'failed' | 'stopped';
export type TargetState = 'pending' | 'updating' | 'succeeded' | 'rolled_back' | 'failed' | 'timed_out' | 'skipped';

/** Target states that count against max_failures. */
export const FAILED_TARGET_STATES: readonly TargetState[] = ['rolled_back', 'failed', 'timed_out'];

export interface NewRollout {
  workspaceId: string;
  keyId: string | null;
  version: string;
  allowDowngrade: boolean;
  selection: RolloutRow['selection'];
  batchSize: number;
  maxFailures: number;
  targets: { instanceId: string; agentId: string; platform: string; fromVersion: string | null }[];
  /** The rollout is leased to the process that creates it (leases.ts). */
  lease?: LeaseTerms;
}

/**
 * Inserts a `running` rollout and its targets in one transaction, unless the workspace
 * has a running rollout already: the partial unique index
 * `agent_rollouts_one_running_per_workspace` is the lock. Answers the rollout that holds it.
 */
export async function createRunningRollout(db: Db, input: NewRollout, now = Date.now()): Promise<{ rollout: RolloutRow; created: boolean }> {
  const row: RolloutRow = {
    id: newId('agentRollout'),
    workspaceId: input.workspaceId,
    keyId: input.keyId,
    version: input.version,
    allowDowngrade: input.allowDowngrade,
    selection: input.selection,
    batchSize: input.batchSize,
    maxFailures: input.maxFailures,
    status: 'running',
    errorKey: null,
    errorMessage: null,
    createdAt: now,
    updatedAt: now,
    finishedAt: null,
    ...(input.lease ? newLease(input.lease) : { leaseOwner: null, leaseExpiresAt: null, leaseGeneration: 0 }),
  };
  const targets: RolloutTargetRow[] = input.targets.map((target, seq) => ({
    id: newId('rolloutTarget'),
    rolloutId: row.id,
    instanceId: target.instanceId,
    agentId: target.agentId,
    seq,
    batch: Math.floor(seq / input.batchSize),
    platform: target.platform,
    state: 'pending',
    fromVersion: target.fromVersion,
    toVersion: null,
    commandId: null,
    errorKey: null,
    errorMessage: null,
    startedAt: null,
    finishedAt: null,
  }));
  try {
    await transaction(db, function* (tx, t) {
      yield* exec(tx.insert(t.agentRollouts).values(row));
      if (targets.length > 0) yield* exec(tx.insert(t.agentRolloutTargets).values(targets));
    });
  } catch (err) {
    // The only unique index an insert here can hit is the one running rollout per workspace (ids are random).
    if (!isUniqueViolation(err)) throw err;
    const running = await findRunningRollout(db, input.workspaceId);
    if (running) return { rollout: running, created: false };
    throw err;
  }
  return { rollout: row, created: true };
}

export async function findRunningRollout(db: Db, workspaceId: string): Promise<RolloutRow | undefined> {
  const { agentRollouts } = db.t;
  const [row] = await db.orm
    .select()
    .from(agentRollouts)
    .where(and(eq(agentRollouts.workspaceId, workspaceId), eq(agentRollouts.status, 'running')));
  return row;
}

export async function getRollout(db: Db, workspaceId: string, id: string): Promise<RolloutRow | undefined> {
  const { agentRollouts } = db.t;
  const [row] = await db.orm
    .select()
    .from(agentRollouts)
    .where(and(eq(agentRollouts.workspaceId, workspaceId), eq(agentRollouts.id, id)));
  return row;
}

/** Only for the service, which already holds the rollout. */
export async function getRolloutById(db: Db, id: string): Promise<RolloutRow | undefined> {
  const { agentRollouts } = db.t;
  const [row] = await db.orm.select().from(agentRollouts).where(eq(agentRollouts.id, id));
  return row;
}

/** A workspace's rollouts, newest first. */
export async function listRollouts(db: Db, workspaceId: string, limit = 100): Promise<RolloutRow[]> {
  const { agentRollouts } = db.t;
  return db.orm.select().from(agentRollouts).where(eq(agentRollouts.workspaceId, workspaceId)).orderBy(desc(agentRollouts.id)).limit(limit);
}

/** Every running rollout of every workspace (start-up resume). */
export async function listRunningRollouts(db: Db): Promise<RolloutRow[]> {
  const { agentRollouts } = db.t;
  return db.orm.select().from(agentRollouts).where(eq(agentRollouts.status, 'running')).orderBy(asc(agentRollouts.id));
}

export async function listRolloutTargets(db: Db, rolloutId: string): Promise<RolloutTargetRow[]> {
  const { agentRolloutTargets } = db.t;
  return db.orm.select().from(agentRolloutTargets).where(eq(agentRolloutTargets.rolloutId, rolloutId)).orderBy(asc(agentRolloutTargets.seq));
}

/**
 * Per-state counts of many rollouts' targets (for listings), the states in the order of
 * each rollout's first target in them: read in target order, so the same rollout lists the
 * same way every time (PostgreSQL returns an unordered read in whatever order its pages hold).
 */
export async function countTargetsByState(db: Db, rolloutIds: string[]): Promise<Map<string, Record<string, number>>> {
  const out = new Map<string, Record<string, number>>();
  if (rolloutIds.length === 0) return out;
  const { agentRolloutTargets } = db.t;
  const rows = await db.orm
    .select({ rolloutId: agentRolloutTargets.rolloutId, state: agentRolloutTargets.state })
    .from(agentRolloutTargets)
    .where(inArray(agentRolloutTargets.rolloutId, rolloutIds))
    .orderBy(asc(agentRolloutTargets.rolloutId), asc(agentRolloutTargets.seq));
  for (const r of rows) {
    const counts = out.get(r.rolloutId) ?? {};
    counts[r.state] = (counts[r.state] ?? 0) + 1;
    out.set(r.rolloutId, counts);
  }
  return out;
}

export type TargetPatch = Partial<Pick<RolloutTargetRow, 'state' | 'toVersion' | 'commandId' | 'errorKey' | 'errorMessage' | 'startedAt' | 'finishedAt'>>;

export async function updateTarget(db: Db, id: string, patch: TargetPatch): Promise<void> {
  const { agentRolloutTargets } = db.t;
  await db.orm.update(agentRolloutTargets).set(patch).where(eq(agentRolloutTargets.id, id));
}

/** Every target still `pending` becomes `skipped` with this reason; answers the ones that did. */
export async function skipPendingTargets(db: Db, rolloutId: string, reason: { errorKey: string; errorMessage: string }, now: number): Promise<RolloutTargetRow[]> {
  const { agentRolloutTargets } = db.t;
  return db.orm
    .update(agentRolloutTargets)
    .set({ state: 'skipped', errorKey: reason.errorKey, errorMessage: reason.errorMessage, finishedAt: now })
    .where(and(eq(agentRolloutTargets.rolloutId, rolloutId), eq(agentRolloutTargets.state, 'pending')))
    .returning();
}

export type RolloutPatch = Partial<Pick<RolloutRow, 'status' | 'errorKey' | 'errorMessage' | 'finishedAt'>>;

export async function updateRollout(db: Db, id: string, patch: RolloutPatch, now: number): Promise<void> {
  const { agentRollouts } = db.t;
  await db.orm
    .update(agentRollouts)
    .set({ ...patch, updatedAt: now })
    .where(eq(agentRollouts.id, id));
}

/** Marks the rollout changed (a target moved), for long-polls that wait on updated_at. */
export async function touchRollout(db: Db, id: string, now: number): Promise<void> {
  const { agentRollouts } = db.t;
  await db.orm.update(agentRollouts).set({ updatedAt: now }).where(eq(agentRollouts.id, id));
}

/**
 * The agent.update command stored for this agent at or after `since`, newest first: a
 * process killed between sending a target's command and recording its id left it
 * unknown to the rollout, not unsent.
 */
export async function findUpdateCommandSince(db: Db, agentId: string, since: number): Promise<{ id: string } | undefined> {
  const { commands } = db.t;
  const [row] = await db.orm
    .select({ id: commands.id })
    .from(commands)
    .where(and(eq(commands.agentId, agentId), eq(commands.type, 'agent.update'), gte(commands.createdAt, since)))
    .orderBy(desc(commands.createdAt), desc(commands.id))
    .limit(1);
  return row;
}

/**
 * The rollout's updated_at for a write at `now`: later than the stored one even when two
 * writes share a millisecond or commit out of order (a batch's targets are written
 * concurrently), so `?after=<updated_at>` never hides a change. Read under the row lock.
 */
function nextUpdatedAt(db: Db, now: number): SQL {
  const stored = db.t.agentRollouts.updatedAt;
  return db.dialect === 'sqlite' ? sql`max(${now}, ${stored} + 1)` : sql`greatest(${now}, ${stored} + 1)`;
}

/**
 * A target's change, all or nothing with the rollout's updated_at, only while `lease`
 * still holds the rollout: throws LeaseLost, writing nothing, once another process
 * claimed it.
 */
export async function fencedTargetWrite(db: Db, lease: Lease, targetId: string, patch: TargetPatch, now: number): Promise<void> {
  await transaction(db, function* (tx, t) {
    const n = yield* exec(tx.update(t.agentRollouts).set({ updatedAt: nextUpdatedAt(db, now) }).where(fenceOf(t, 'agentRollouts', lease)));
    if (n !== 1) throw new LeaseLost('agentRollouts', lease.id);
    yield* exec(
      tx
        .update(t.agentRolloutTargets)
        .set(patch)
        .where(and(eq(t.agentRolloutTargets.id, targetId), eq(t.agentRolloutTargets.rolloutId, lease.id))),
    );
  });
}

/**
 * The rollout ends (fenced by `lease` as above); with `skip`, every target still
 * `pending` becomes `skipped` with that reason in the same transaction. Answers the
 * targets skipped.
 */
export async function fencedFinishRollout(
  db: Db,
  lease: Lease,
  patch: RolloutPatch,
  now: number,
  skip?: { errorKey: string; errorMessage: string },
): Promise<RolloutTargetRow[]> {
  return transaction(db, function* (tx, t) {
    const n = yield* exec(
      tx
        .update(t.agentRollouts)
        .set({ ...patch, updatedAt: nextUpdatedAt(db, now) })
        .where(fenceOf(t, 'agentRollouts', lease)),
    );
    if (n !== 1) throw new LeaseLost('agentRollouts', lease.id);
    if (!skip) return [];
    return yield* rows(
      tx
        .update(t.agentRolloutTargets)
        .set({ state: 'skipped', errorKey: skip.errorKey, errorMessage: skip.errorMessage, finishedAt: now })
        .where(and(eq(t.agentRolloutTargets.rolloutId, lease.id), eq(t.agentRolloutTargets.state, 'pending')))
        .returning(),
    );
  });
}

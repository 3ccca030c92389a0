import { and, asc, desc, eq, inArray, isNotNull } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { isUniqueViolation } from './errors.ts';
import type { Row } from './schema.ts';
import { LeaseLost, fenceOf, newLease } from './leases.ts';
import type { Lease, LeaseTerms } from './leases.ts';
import { exec, transaction } from './tx.ts';

export type DeployRow = Row<'deploys'>;
export type DeployStepRow = Row<'deploySteps'>;
export type DeployStatus = 'scaffolding_pr_open' | 'running' | 'succeeded' | 'failed';
export type DeployStepState = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped';

export interface NewDeploy {
  workspaceId: string;
  repoId: string;
  environmentId: string;
  sha?: string | null;
  status: DeployStatus;
  currentStep?: string | null;
  prUrl?: string | null;
  prNumber?: number | null;
  keyId?: string | null;
  /** A running deploy is leased to the process that creates it (leases.ts). */
  lease?: LeaseTerms;
}

export async function createDeploy(db: Db, input: NewDeploy, now = Date.now()): Promise<DeployRow> {
  const row: DeployRow = {
    id: newId('deploy'),
    workspaceId: input.workspaceId,
    repoId: input.repoId,
    environmentId: input.environmentId,
    sha: input.sha ?? null,
    status: input.status,
    currentStep: input.currentStep ?? null,
    instanceId: null,
    prUrl: input.prUrl ?? null,
    appUrl: null,
    runUrl: null,
    errorKey: null,
    errorMessage: null,
    failedStep: null,
    prNumber: input.prNumber ?? null,
    runId: null,
    dispatchedAt: null,
    keyId: input.keyId ?? null,
    createdAt: now,
    updatedAt: now,
    ...(input.lease ? newLease(input.lease) : { leaseOwner: null, leaseExpiresAt: null, leaseGeneration: 0 }),
  };
  await db.orm.insert(db.t.deploys).values(row);
  return row;
}

/**
 * Inserts a `running` deploy unless the environment has one already: the partial
 * unique index `deploys_one_running_per_environment` is the lock, so two processes
 * (or two requests) racing get one deploy. Answers the row that holds the lock.
 */
export async function createRunningDeploy(db: Db, input: Omit<NewDeploy, 'status'>, now = Date.now()): Promise<{ deploy: DeployRow; created: boolean }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const running = await findRunningDeploy(db, input.environmentId);
    if (running) return { deploy: running, created: false };
    try {
      return { deploy: await createDeploy(db, { ...input, status: 'running' }, now), created: true };
    } catch (err) {
      // Lost the race to another insert: answer the winner (found on the next turn).
      if (!isUniqueViolation(err)) throw err;
    }
  }
  throw new Error('could not create or find the running deploy of the environment');
}

export async function findRunningDeploy(db: Db, environmentId: string): Promise<DeployRow | undefined> {
  const { deploys } = db.t;
  const [row] = await db.orm
    .select()
    .from(deploys)
    .where(and(eq(deploys.environmentId, environmentId), eq(deploys.status, 'running')));
  return row;
}

/** The newest deploy of the repo that took part in scaffolding (it has a pull request), any environment. */
export async function latestScaffoldingDeploy(db: Db, workspaceId: string, repoId: string): Promise<DeployRow | undefined> {
  const { deploys } = db.t;
  const [row] = await db.orm
    .select()
    .from(deploys)
    .where(and(eq(deploys.workspaceId, workspaceId), eq(deploys.repoId, repoId), isNotNull(deploys.prNumber)))
    .orderBy(desc(deploys.id))
    .limit(1);
  return row;
}

export interface DeployFilter {
  repoId?: string;
  environmentId?: string;
  limit?: number;
}

/** A workspace's deploys, newest first. */
export async function listDeploys(db: Db, workspaceId: string, filter: DeployFilter = {}): Promise<DeployRow[]> {
  const { deploys } = db.t;
  const where = [eq(deploys.workspaceId, workspaceId)];
  if (filter.repoId !== undefined) where.push(eq(deploys.repoId, filter.repoId));
  if (filter.environmentId !== undefined) where.push(eq(deploys.environmentId, filter.environmentId));
  return db.orm
    .select()
    .from(deploys)
    .where(and(...where))
    .orderBy(desc(deploys.id))
    .limit(filter.limit ?? 100);
}

/** Only for internal callers that already proved the workspace (the deploy runner). */
export async function getDeployById(db: Db, id: string): Promise<DeployRow | undefined> {
  const { deploys } = db.t;
  const [row] = await db.orm.select().from(deploys).where(eq(deploys.id, id));
  return row;
}

export async function getDeploy(db: Db, workspaceId: string, id: string): Promise<DeployRow | undefined> {
  const { deploys } = db.t;
  const [row] = await db.orm
    .select()
    .from(deploys)
    .where(and(eq(deploys.workspaceId, workspaceId), eq(deploys.id, id)));
  return row;
}

export type DeployPatch = Partial<
  Omit<DeployRow, 'id' | 'workspaceId' | 'repoId' | 'environmentId' | 'createdAt' | 'updatedAt' | 'leaseOwner' | 'leaseExpiresAt' | 'leaseGeneration'>
>;

export async function updateDeploy(db: Db, id: string, patch: DeployPatch, now = Date.now()): Promise<void> {
  const { deploys } = db.t;
  await db.orm
    .update(deploys)
    .set({ ...patch, updatedAt: now })
    .where(eq(deploys.id, id));
}

/**
 * One transition of a leased deploy, all or nothing: the deploy row's patch (and
 * updated_at) only while `lease` still holds it, then the step's row. Throws LeaseLost,
 * writing nothing, when another process claimed the deploy since.
 */
export async function fencedDeployWrite(
  db: Db,
  lease: Lease,
  patch: DeployPatch,
  now: number,
  step?: { seq: number; values: Partial<Omit<DeployStepRow, 'id' | 'deployId' | 'seq'>> & { name: string; state: DeployStepState } },
): Promise<void> {
  await transaction(db, function* (tx, t) {
    const n = yield* exec(
      tx
        .update(t.deploys)
        .set({ ...patch, updatedAt: now })
        .where(fenceOf(t, 'deploys', lease)),
    );
    if (n !== 1) throw new LeaseLost('deploys', lease.id);
    if (step) {
      const { values, update } = stepValues(lease.id, step.seq, step.values);
      yield* exec(tx.insert(t.deploySteps).values(values).onConflictDoUpdate({ target: [t.deploySteps.deployId, t.deploySteps.seq], set: update }));
    }
  });
}

/** Deploys a restarted control plane must resume. */
export async function listUnfinishedDeploys(db: Db): Promise<DeployRow[]> {
  const { deploys } = db.t;
  return db.orm.select().from(deploys).where(inArray(deploys.status, ['running'])).orderBy(asc(deploys.id));
}

/**
 * A deploy and its steps read by one statement, so from one snapshot: the runner writes
 * the row (run_url, status) and the steps one after the other, and two reads could show
 * a step that ran without the row's field it wrote first.
 */
export async function getDeployWithSteps(db: Db, id: string): Promise<{ row: DeployRow; steps: DeployStepRow[] } | undefined> {
  const { deploys, deploySteps } = db.t;
  const joined = await db.orm
    .select({ deploy: deploys, step: deploySteps })
    .from(deploys)
    .leftJoin(deploySteps, eq(deploySteps.deployId, deploys.id))
    .where(eq(deploys.id, id))
    .orderBy(asc(deploySteps.seq));
  const first = joined[0];
  if (!first) return undefined;
  return { row: first.deploy, steps: joined.flatMap((j) => (j.step ? [j.step] : [])) };
}

export async function listDeploySteps(db: Db, deployId: string): Promise<DeployStepRow[]> {
  const { deploySteps } = db.t;
  return db.orm.select().from(deploySteps).where(eq(deploySteps.deployId, deployId)).orderBy(asc(deploySteps.seq));
}

function stepValues(
  deployId: string,
  seq: number,
  step: Partial<Omit<DeployStepRow, 'id' | 'deployId' | 'seq'>> & { name: string; state: DeployStepState },
): { values: DeployStepRow; update: Omit<DeployStepRow, 'id' | 'deployId' | 'seq'> } {
  const values: DeployStepRow = {
    id: newId('deployStep'),
    deployId,
    seq,
    name: step.name,
    state: step.state,
    detail: step.detail ?? null,
    errorKey: step.errorKey ?? null,
    errorMessage: step.errorMessage ?? null,
    attempts: step.attempts ?? 0,
    startedAt: step.startedAt ?? null,
    finishedAt: step.finishedAt ?? null,
  };
  const { id: _id, deployId: _d, seq: _s, ...update } = values;
  return { values, update };
}

/** Inserts or updates the step `seq` of a deploy. */
export async function upsertDeployStep(
  db: Db,
  deployId: string,
  seq: number,
  step: Partial<Omit<DeployStepRow, 'id' | 'deployId' | 'seq'>> & { name: string; state: DeployStepState },
): Promise<void> {
  const { values, update } = stepValues(deployId, seq, step);
  const { deploySteps } = db.t;
  await db.orm
    .insert(deploySteps)
    .values(values)
    .onConflictDoUpdate({ target: [deploySteps.deployId, deploySteps.seq], set: update });
}

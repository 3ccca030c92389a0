/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq, inArray } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { deploySteps, deploys } from './schema.ts';

export type DeployRow = typeof deploys.$inferSelect;
export type DeployStepRow = typeof deploySteps.$inferSelect;
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
  };
  db.insert(deploys).values(row).run();
  return row;
}

export async function getDeploy(db: Db, workspaceId: string, id: string): Promise<DeployRow | undefined> {
  return db
    .select()
    .from(deploys)
    .where(and(eq(deploys.workspaceId, workspaceId), eq(deploys.id, id)))
    .get();
}

export type DeployPatch = Partial<Omit<DeployRow, 'id' | 'workspaceId' | 'repoId' | 'environmentId' | 'createdAt' | 'updatedAt'>>;

export async function updateDeploy(db: Db, id: string, patch: DeployPatch, now = Date.now()): Promise<void> {
  db.update(deploys)
    .set({ ...patch, updatedAt: now })
    .where(eq(deploys.id, id))
    .run();
}

/** Deploys a restarted control plane must resume. */
export async function listUnfinishedDeploys(db: Db): Promise<DeployRow[]> {
  return db.select().from(deploys).where(inArray(deploys.status, ['running'])).orderBy(asc(deploys.id)).all();
}

export async function listDeploySteps(db: Db, deployId: string): Promise<DeployStepRow[]> {
  return db.select().from(deploySteps).where(eq(deploySteps.deployId, deployId)).orderBy(asc(deploySteps.seq)).all();
}

/** Inserts or updates the step `seq` of a deploy. */
export async function upsertDeployStep(
  db: Db,
  deployId: string,
  seq: number,
  step: Partial<Omit<DeployStepRow, 'id' | 'deployId' | 'seq'>> & { name: string; state: DeployStepState },
): Promise<void> {
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
  db.insert(deploySteps)
    .values(values)
    .onConflictDoUpdate({ target: [deploySteps.deployId, deploySteps.seq], set: update })
    .run();
}

import { and, asc, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { changed } from './tx.ts';

export type EnvironmentRow = Row<'environments'>;

export async function findEnvironmentByName(
  db: Db,
  workspaceId: string,
  repoId: string,
  name: string,
): Promise<EnvironmentRow | undefined> {
  const { environments } = db.t;
  const [row] = await db.orm
    .select()
    .from(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.repoId, repoId), eq(environments.name, name)));
  return row;
}

/** Creates the environment; creating it again returns the existing row. The caller checks the repo. */
export async function createEnvironment(
  db: Db,
  workspaceId: string,
  repoId: string,
  name: string,
  now = Date.now(),
): Promise<{ environment: EnvironmentRow; created: boolean }> {
  const existing = await findEnvironmentByName(db, workspaceId, repoId, name);
  if (existing) return { environment: existing, created: false };
  const row: EnvironmentRow = { id: newId('environment'), workspaceId, repoId, name, createdAt: now };
  const inserted = changed(await db.orm.insert(db.t.environments).values(row).onConflictDoNothing());
  if (inserted === 0) {
    const raced = await findEnvironmentByName(db, workspaceId, repoId, name);
    if (raced) return { environment: raced, created: false };
  }
  return { environment: row, created: true };
}

export async function getEnvironment(db: Db, workspaceId: string, id: string): Promise<EnvironmentRow | undefined> {
  const { environments } = db.t;
  const [row] = await db.orm
    .select()
    .from(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.id, id)));
  return row;
}

export async function listEnvironments(db: Db, workspaceId: string, repoId: string): Promise<EnvironmentRow[]> {
  const { environments } = db.t;
  return db.orm
    .select()
    .from(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.repoId, repoId)))
    .orderBy(asc(environments.name));
}

/** Removes the environment (its deploys go with it; its instances stay, detached). */
export async function deleteEnvironment(db: Db, workspaceId: string, id: string): Promise<void> {
  const { environments } = db.t;
  await db.orm.delete(environments).where(and(eq(environments.workspaceId, workspaceId), eq(environments.id, id)));
}

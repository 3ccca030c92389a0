/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { environments } from './schema.ts';

export type EnvironmentRow = typeof environments.$inferSelect;

export async function findEnvironmentByName(
  db: Db,
  workspaceId: string,
  repoId: string,
  name: string,
): Promise<EnvironmentRow | undefined> {
  return db
    .select()
    .from(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.repoId, repoId), eq(environments.name, name)))
    .get();
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
  const inserted = db.insert(environments).values(row).onConflictDoNothing().run();
  if (inserted.changes === 0) {
    const raced = await findEnvironmentByName(db, workspaceId, repoId, name);
    if (raced) return { environment: raced, created: false };
  }
  return { environment: row, created: true };
}

export async function getEnvironment(db: Db, workspaceId: string, id: string): Promise<EnvironmentRow | undefined> {
  return db
    .select()
    .from(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.id, id)))
    .get();
}

export async function listEnvironments(db: Db, workspaceId: string, repoId: string): Promise<EnvironmentRow[]> {
  return db
    .select()
    .from(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.repoId, repoId)))
    .orderBy(asc(environments.name))
    .all();
}

/** Removes the environment (its deploys go with it; its instances stay, detached). */
export async function deleteEnvironment(db: Db, workspaceId: string, id: string): Promise<void> {
  db.delete(environments)
    .where(and(eq(environments.workspaceId, workspaceId), eq(environments.id, id)))
    .run();
}

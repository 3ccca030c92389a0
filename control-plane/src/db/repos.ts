/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq, sql } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { repos } from './schema.ts';

export type RepoRow = typeof repos.$inferSelect;

export function fullName(repo: Pick<RepoRow, 'owner' | 'name'>): string {
  return `${repo.owner}/${repo.name}`;
}

export async function findRepoByName(db: Db, workspaceId: string, owner: string, name: string): Promise<RepoRow | undefined> {
  return db
    .select()
    .from(repos)
    .where(
      and(
        eq(repos.workspaceId, workspaceId),
        sql`lower(${repos.owner}) = lower(${owner})`,
        sql`lower(${repos.name}) = lower(${name})`,
      ),
    )
    .get();
}

/** Connects owner/name to the workspace; connecting it again returns the existing row. */
export async function createRepo(
  db: Db,
  workspaceId: string,
  owner: string,
  name: string,
  now = Date.now(),
): Promise<{ repo: RepoRow; created: boolean }> {
  const existing = await findRepoByName(db, workspaceId, owner, name);
  if (existing) return { repo: existing, created: false };
  const row: RepoRow = { id: newId('repo'), workspaceId, owner, name, createdAt: now };
  const inserted = db.insert(repos).values(row).onConflictDoNothing().run();
  if (inserted.changes === 0) {
    const raced = await findRepoByName(db, workspaceId, owner, name);
    if (raced) return { repo: raced, created: false };
  }
  return { repo: row, created: true };
}

export async function getRepo(db: Db, workspaceId: string, id: string): Promise<RepoRow | undefined> {
  return db
    .select()
    .from(repos)
    .where(and(eq(repos.workspaceId, workspaceId), eq(repos.id, id)))
    .get();
}

export async function listRepos(db: Db, workspaceId: string): Promise<RepoRow[]> {
  return db.select().from(repos).where(eq(repos.workspaceId, workspaceId)).orderBy(asc(repos.id)).all();
}

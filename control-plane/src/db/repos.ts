import { and, asc, eq, sql } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { changed } from './tx.ts';

export type RepoRow = Row<'repos'>;

export function fullName(repo: Pick<RepoRow, 'owner' | 'name'>): string {
  return `${repo.owner}/${repo.name}`;
}

export async function findRepoByName(db: Db, workspaceId: string, owner: string, name: string): Promise<RepoRow | undefined> {
  const { repos } = db.t;
  const [row] = await db.orm
    .select()
    .from(repos)
    .where(
      and(
        eq(repos.workspaceId, workspaceId),
        sql`lower(${repos.owner}) = lower(${owner})`,
        sql`lower(${repos.name}) = lower(${name})`,
      ),
    );
  return row;
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
  const inserted = changed(await db.orm.insert(db.t.repos).values(row).onConflictDoNothing());
  if (inserted === 0) {
    const raced = await findRepoByName(db, workspaceId, owner, name);
    if (raced) return { repo: raced, created: false };
  }
  return { repo: row, created: true };
}

export async function getRepo(db: Db, workspaceId: string, id: string): Promise<RepoRow | undefined> {
  const { repos } = db.t;
  const [row] = await db.orm
    .select()
    .from(repos)
    .where(and(eq(repos.workspaceId, workspaceId), eq(repos.id, id)));
  return row;
}

export async function listRepos(db: Db, workspaceId: string): Promise<RepoRow[]> {
  const { repos } = db.t;
  return db.orm.select().from(repos).where(eq(repos.workspaceId, workspaceId)).orderBy(asc(repos.id));
}

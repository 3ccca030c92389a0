import { asc, count } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { newApiKeyRow } from './api-keys.ts';
import type { ApiKeyRow, NewApiKey } from './api-keys.ts';
import type { Row } from './schema.ts';
import { exec, transaction } from './tx.ts';

export type WorkspaceRow = Row<'workspaces'>;

export async function createWorkspace(db: Db, name: string, now = Date.now()): Promise<WorkspaceRow> {
  const row: WorkspaceRow = { id: newId('workspace'), name, createdAt: now };
  await db.orm.insert(db.t.workspaces).values(row);
  return row;
}

export async function listWorkspaces(db: Db): Promise<WorkspaceRow[]> {
  const { workspaces } = db.t;
  return db.orm.select().from(workspaces).orderBy(asc(workspaces.id));
}

export async function countWorkspaces(db: Db): Promise<number> {
  const [row] = await db.orm.select({ n: count() }).from(db.t.workspaces);
  return row?.n ?? 0;
}

/** A workspace and its first API key, in one transaction. */
export async function createWorkspaceWithKey(
  db: Db,
  name: string,
  key: Omit<NewApiKey, 'workspaceId'>,
  now = Date.now(),
): Promise<{ workspace: WorkspaceRow; key: ApiKeyRow }> {
  const workspace: WorkspaceRow = { id: newId('workspace'), name, createdAt: now };
  const keyRow = newApiKeyRow({ ...key, workspaceId: workspace.id }, now);
  await transaction(db, function* (tx, t) {
    yield* exec(tx.insert(t.workspaces).values(workspace));
    yield* exec(tx.insert(t.apiKeys).values(keyRow));
  });
  return { workspace, key: keyRow };
}

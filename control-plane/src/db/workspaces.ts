/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { asc, count } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { newApiKeyRow } from './api-keys.ts';
import type { ApiKeyRow, NewApiKey } from './api-keys.ts';
import { apiKeys, workspaces } from './schema.ts';

export type WorkspaceRow = typeof workspaces.$inferSelect;

export async function createWorkspace(db: Db, name: string, now = Date.now()): Promise<WorkspaceRow> {
  const row: WorkspaceRow = { id: newId('workspace'), name, createdAt: now };
  db.insert(workspaces).values(row).run();
  return row;
}

export async function listWorkspaces(db: Db): Promise<WorkspaceRow[]> {
  return db.select().from(workspaces).orderBy(asc(workspaces.id)).all();
}

export async function countWorkspaces(db: Db): Promise<number> {
  return db.select({ n: count() }).from(workspaces).get()?.n ?? 0;
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
  db.transaction((tx) => {
    tx.insert(workspaces).values(workspace).run();
    tx.insert(apiKeys).values(keyRow).run();
  });
  return { workspace, key: keyRow };
}

import { asc, count } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { newApiKeyRow } from './api-keys.ts';
import type { ApiKeyRow, NewApiKey } from './api-keys.ts';
import type { Row } from './schema.ts';
import { exec, lockedTransaction, rows, transaction } from './tx.ts';

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

/** "vmkitws1" in ASCII as a bigint: the transaction-scoped advisory lock of the first-workspace check. */
const FIRST_WORKSPACE_LOCK = 0x766d6b6974777331n;

/**
 * The first workspace and its first key, unless the database has a workspace already
 * (then null). The check and the writes are one transaction that concurrent callers
 * take in turn (SQLite's BEGIN IMMEDIATE; on PostgreSQL a transaction-scoped advisory
 * lock, since two READ COMMITTED transactions would both count zero), so control
 * planes starting together on an empty database make one workspace, not one each.
 */
export async function createFirstWorkspaceWithKey(
  db: Db,
  name: string,
  key: Omit<NewApiKey, 'workspaceId'>,
  now = Date.now(),
): Promise<{ workspace: WorkspaceRow; key: ApiKeyRow } | null> {
  const workspace: WorkspaceRow = { id: newId('workspace'), name, createdAt: now };
  const keyRow = newApiKeyRow({ ...key, workspaceId: workspace.id }, now);
  const created = await lockedTransaction(db, FIRST_WORKSPACE_LOCK, function* (tx, t) {
    const [existing] = yield* rows(tx.select({ n: count() }).from(t.workspaces));
    if ((existing?.n ?? 0) > 0) return false;
    yield* exec(tx.insert(t.workspaces).values(workspace));
    yield* exec(tx.insert(t.apiKeys).values(keyRow));
    return true;
  });
  return created ? { workspace, key: keyRow } : null;
}

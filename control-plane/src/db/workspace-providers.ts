/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { workspaceProviders, workspaces } from './schema.ts';

export type WorkspaceProviderRow = typeof workspaceProviders.$inferSelect;

export const PROVIDER_KINDS = ['compute', 'dns', 'github'] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

export interface ProviderSettingsInput {
  workspaceId: string;
  kind: ProviderKind;
  provider: string;
  settings: Record<string, unknown>;
  secretSealed: string | null;
  secretFingerprint: string | null;
  secretSetAt: number | null;
}

export async function getWorkspaceProvider(db: Db, workspaceId: string, kind: ProviderKind): Promise<WorkspaceProviderRow | undefined> {
  return db
    .select()
    .from(workspaceProviders)
    .where(and(eq(workspaceProviders.workspaceId, workspaceId), eq(workspaceProviders.kind, kind)))
    .get();
}

export async function listWorkspaceProviders(db: Db, workspaceId: string): Promise<WorkspaceProviderRow[]> {
  return db.select().from(workspaceProviders).where(eq(workspaceProviders.workspaceId, workspaceId)).orderBy(asc(workspaceProviders.kind)).all();
}

/** Inserts or replaces the workspace's settings of one kind (one row per workspace and kind). */
export async function putWorkspaceProvider(db: Db, input: ProviderSettingsInput, now = Date.now()): Promise<WorkspaceProviderRow> {
  const values = { ...input, updatedAt: now };
  db.insert(workspaceProviders)
    .values({ id: newId('workspaceProvider'), createdAt: now, ...values })
    .onConflictDoUpdate({ target: [workspaceProviders.workspaceId, workspaceProviders.kind], set: values })
    .run();
  const row = await getWorkspaceProvider(db, input.workspaceId, input.kind);
  if (!row) throw new Error(`the ${input.kind} settings of ${input.workspaceId} vanished right after being written`);
  return row;
}

/** True when there was a row to delete. */
export async function deleteWorkspaceProvider(db: Db, workspaceId: string, kind: ProviderKind): Promise<boolean> {
  const res = db
    .delete(workspaceProviders)
    .where(and(eq(workspaceProviders.workspaceId, workspaceId), eq(workspaceProviders.kind, kind)))
    .run();
  return res.changes > 0;
}

/** The workspace made first (the one bootstrap created); ids sort by creation time. */
export async function firstWorkspaceId(db: Db): Promise<string | null> {
  return db.select({ id: workspaces.id }).from(workspaces).orderBy(asc(workspaces.createdAt), asc(workspaces.id)).limit(1).get()?.id ?? null;
}

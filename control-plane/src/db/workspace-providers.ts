import { and, asc, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { changed } from './tx.ts';

export type WorkspaceProviderRow = Row<'workspaceProviders'>;

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
  const { workspaceProviders } = db.t;
  const [row] = await db.orm
    .select()
    .from(workspaceProviders)
    .where(and(eq(workspaceProviders.workspaceId, workspaceId), eq(workspaceProviders.kind, kind)));
  return row;
}

export async function listWorkspaceProviders(db: Db, workspaceId: string): Promise<WorkspaceProviderRow[]> {
  const { workspaceProviders } = db.t;
  return db.orm.select().from(workspaceProviders).where(eq(workspaceProviders.workspaceId, workspaceId)).orderBy(asc(workspaceProviders.kind));
}

/** Inserts or replaces the workspace's settings of one kind (one row per workspace and kind). */
export async function putWorkspaceProvider(db: Db, input: ProviderSettingsInput, now = Date.now()): Promise<WorkspaceProviderRow> {
  const { workspaceProviders } = db.t;
  const values = { ...input, updatedAt: now };
  const [row] = await db.orm
    .insert(workspaceProviders)
    .values({ id: newId('workspaceProvider'), createdAt: now, ...values })
    .onConflictDoUpdate({ target: [workspaceProviders.workspaceId, workspaceProviders.kind], set: values })
    .returning();
  if (!row) throw new Error(`the ${input.kind} settings of ${input.workspaceId} were not written`);
  return row;
}

/** True when there was a row to delete. */
export async function deleteWorkspaceProvider(db: Db, workspaceId: string, kind: ProviderKind): Promise<boolean> {
  const { workspaceProviders } = db.t;
  const res = await db.orm.delete(workspaceProviders).where(and(eq(workspaceProviders.workspaceId, workspaceId), eq(workspaceProviders.kind, kind)));
  return changed(res) > 0;
}

/** The workspace made first (the one bootstrap created); ids sort by creation time. */
export async function firstWorkspaceId(db: Db): Promise<string | null> {
  const { workspaces } = db.t;
  const [row] = await db.orm.select({ id: workspaces.id }).from(workspaces).orderBy(asc(workspaces.createdAt), asc(workspaces.id)).limit(1);
  return row?.id ?? null;
}

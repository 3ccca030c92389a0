/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { scans } from './schema.ts';

export type ScanRow = typeof scans.$inferSelect;
export type ScanStatus = 'running' | 'succeeded' | 'failed';

export async function createScan(
  db: Db,
  input: { workspaceId: string; repo: string; repoId?: string | null; status?: ScanStatus },
  now = Date.now(),
): Promise<ScanRow> {
  const row: ScanRow = {
    id: newId('scan'),
    workspaceId: input.workspaceId,
    repoId: input.repoId ?? null,
    repo: input.repo,
    status: input.status ?? 'running',
    language: null,
    framework: null,
    buildpack: null,
    procfileDetected: null,
    dockerfileDetected: null,
    details: null,
    errorKey: null,
    createdAt: now,
    finishedAt: null,
  };
  db.insert(scans).values(row).run();
  return row;
}

export async function getScan(db: Db, workspaceId: string, id: string): Promise<ScanRow | undefined> {
  return db
    .select()
    .from(scans)
    .where(and(eq(scans.workspaceId, workspaceId), eq(scans.id, id)))
    .get();
}

export type ScanPatch = Partial<Omit<ScanRow, 'id' | 'workspaceId' | 'createdAt'>>;

export async function updateScan(db: Db, id: string, patch: ScanPatch): Promise<void> {
  db.update(scans).set(patch).where(eq(scans.id, id)).run();
}

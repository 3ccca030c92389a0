/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, desc, eq, sql } from 'drizzle-orm';
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

/**
 * The newest succeeded scan of a repo at one commit, made by the same kind of source
 * and rules version (kept in `details`), so a repeat scan can answer from it.
 */
export async function findScanAtSha(
  db: Db,
  q: { workspaceId: string; repoId: string; sha: string; source: string; rulesVersion: number },
): Promise<ScanRow | undefined> {
  return db
    .select()
    .from(scans)
    .where(
      and(
        eq(scans.workspaceId, q.workspaceId),
        eq(scans.repoId, q.repoId),
        eq(scans.status, 'succeeded'),
        sql`json_extract(${scans.details}, '$.sha') = ${q.sha}`,
        sql`json_extract(${scans.details}, '$.source') = ${q.source}`,
        sql`json_extract(${scans.details}, '$.rules_version') = ${q.rulesVersion}`,
      ),
    )
    .orderBy(desc(scans.id))
    .get();
}

/** The latest scans of a connected repo, newest first. */
export async function listScansOfRepo(db: Db, workspaceId: string, repoId: string, limit: number): Promise<ScanRow[]> {
  return db
    .select()
    .from(scans)
    .where(and(eq(scans.workspaceId, workspaceId), eq(scans.repoId, repoId)))
    .orderBy(desc(scans.createdAt), desc(scans.id))
    .limit(limit)
    .all();
}

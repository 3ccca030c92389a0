import { and, desc, eq, sql } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';

export type ScanRow = Row<'scans'>;
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
  await db.orm.insert(db.t.scans).values(row);
  return row;
}

export async function getScan(db: Db, workspaceId: string, id: string): Promise<ScanRow | undefined> {
  const { scans } = db.t;
  const [row] = await db.orm
    .select()
    .from(scans)
    .where(and(eq(scans.workspaceId, workspaceId), eq(scans.id, id)));
  return row;
}

export type ScanPatch = Partial<Omit<ScanRow, 'id' | 'workspaceId' | 'createdAt'>>;

export async function updateScan(db: Db, id: string, patch: ScanPatch): Promise<void> {
  const { scans } = db.t;
  await db.orm.update(scans).set(patch).where(eq(scans.id, id));
}

/**
 * The newest succeeded scan of a repo at one commit, made by the same kind of source
 * and rules version (kept in `details`), so a repeat scan can answer from it.
 */
export async function findScanAtSha(
  db: Db,
  q: { workspaceId: string; repoId: string; sha: string; source: string; rulesVersion: number },
): Promise<ScanRow | undefined> {
  const { scans } = db.t;
  // A key of the JSON details, as text: json_extract in SQLite, ->> in PostgreSQL.
  const detail = (key: string) =>
    db.dialect === 'postgres' ? sql`(${scans.details} ->> ${sql.raw(`'${key}'`)})` : sql`json_extract(${scans.details}, ${sql.raw(`'$.${key}'`)})`;
  const [row] = await db.orm
    .select()
    .from(scans)
    .where(
      and(
        eq(scans.workspaceId, q.workspaceId),
        eq(scans.repoId, q.repoId),
        eq(scans.status, 'succeeded'),
        sql`${detail('sha')} = ${q.sha}`,
        sql`${detail('source')} = ${q.source}`,
        // Compared as text in both: json_extract answers 3, ->> answers '3'.
        sql`CAST(${detail('rules_version')} AS TEXT) = ${String(q.rulesVersion)}`,
      ),
    )
    .orderBy(desc(scans.id))
    .limit(1);
  return row;
}

/** The latest scans of a connected repo, newest first. */
export async function listScansOfRepo(db: Db, workspaceId: string, repoId: string, limit: number): Promise<ScanRow[]> {
  const { scans } = db.t;
  return db.orm
    .select()
    .from(scans)
    .where(and(eq(scans.workspaceId, workspaceId), eq(scans.repoId, repoId)))
    .orderBy(desc(scans.createdAt), desc(scans.id))
    .limit(limit);
}

import { and, desc, eq, inArray, isNull, lt } from 'drizzle-orm';
import type { SQL } from 'drizzle-orm';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { changed } from './tx.ts';

export type ShellSessionRow = Row<'shellSessions'>;
export type NewShellSession = Pick<ShellSessionRow, 'id' | 'workspaceId' | 'instanceId' | 'keyId' | 'via' | 'recordingPath' | 'command' | 'runAs' | 'startedAt'>;

export async function insertShellSession(db: Db, s: NewShellSession): Promise<ShellSessionRow> {
  const row: ShellSessionRow = { ...s, exitCode: null, exitSignal: null, bytesIn: 0, bytesOut: 0, endReason: null, endedAt: null };
  await db.orm.insert(db.t.shellSessions).values(row);
  return row;
}

export type ShellSessionEnd = Pick<ShellSessionRow, 'exitCode' | 'exitSignal' | 'bytesIn' | 'bytesOut' | 'endReason' | 'endedAt'>;

/** Counters of a running session, written now and then so a crash keeps them roughly. */
export async function updateShellSessionCounters(db: Db, id: string, bytesIn: number, bytesOut: number): Promise<void> {
  const { shellSessions } = db.t;
  await db.orm.update(shellSessions).set({ bytesIn, bytesOut }).where(eq(shellSessions.id, id));
}

export async function endShellSession(db: Db, id: string, end: ShellSessionEnd): Promise<void> {
  const { shellSessions } = db.t;
  await db.orm.update(shellSessions).set(end).where(and(eq(shellSessions.id, id), isNull(shellSessions.endedAt)));
}

/** Sessions a previous run left open (the control plane stopped under them). */
export async function closeOrphanedShellSessions(db: Db, now: number): Promise<number> {
  const { shellSessions } = db.t;
  return changed(await db.orm.update(shellSessions).set({ endedAt: now, endReason: 'control_plane_stopped' }).where(isNull(shellSessions.endedAt)));
}

export interface ShellSessionQuery {
  /** Only the sessions opened with this API key (callers without `admin`). */
  keyId?: string;
  instanceId?: string;
  cursor?: string;
  limit: number;
}

/** Newest first. */
export async function listShellSessions(
  db: Db,
  workspaceId: string,
  q: ShellSessionQuery,
): Promise<{ items: (ShellSessionRow & { keyName: string | null })[]; nextCursor: string | null }> {
  const { apiKeys, shellSessions } = db.t;
  const where: SQL[] = [eq(shellSessions.workspaceId, workspaceId)];
  if (q.keyId !== undefined) where.push(eq(shellSessions.keyId, q.keyId));
  if (q.instanceId !== undefined) where.push(eq(shellSessions.instanceId, q.instanceId));
  if (q.cursor !== undefined) where.push(lt(shellSessions.id, q.cursor));
  const rows = await db.orm
    .select()
    .from(shellSessions)
    .where(and(...where))
    .orderBy(desc(shellSessions.id))
    .limit(q.limit + 1);
  const page = rows.slice(0, q.limit);
  const keyIds = [...new Set(page.map((r) => r.keyId).filter((k): k is string => k !== null))];
  const names = new Map(
    keyIds.length === 0
      ? []
      : (await db.orm.select({ id: apiKeys.id, name: apiKeys.name }).from(apiKeys).where(inArray(apiKeys.id, keyIds))).map((k) => [k.id, k.name] as const),
  );
  const last = page[page.length - 1];
  return {
    items: page.map((r) => ({ ...r, keyName: r.keyId === null ? null : (names.get(r.keyId) ?? null) })),
    nextCursor: rows.length > q.limit && last ? last.id : null,
  };
}

export async function getShellSession(db: Db, workspaceId: string, id: string): Promise<ShellSessionRow | undefined> {
  const { shellSessions } = db.t;
  const [row] = await db.orm
    .select()
    .from(shellSessions)
    .where(and(eq(shellSessions.workspaceId, workspaceId), eq(shellSessions.id, id)));
  return row;
}

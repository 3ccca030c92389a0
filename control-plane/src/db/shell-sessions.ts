/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, desc, eq, inArray, isNull, lt } from 'drizzle-orm';
import type { SQL } from 'drizzle-orm';
import type { Db } from './index.ts';
import { apiKeys, shellSessions } from './schema.ts';

export type ShellSessionRow = typeof shellSessions.$inferSelect;
export type NewShellSession = Pick<ShellSessionRow, 'id' | 'workspaceId' | 'instanceId' | 'keyId' | 'via' | 'recordingPath' | 'command' | 'runAs' | 'startedAt'>;

export async function insertShellSession(db: Db, s: NewShellSession): Promise<ShellSessionRow> {
  const row: ShellSessionRow = { ...s, exitCode: null, exitSignal: null, bytesIn: 0, bytesOut: 0, endReason: null, endedAt: null };
  db.insert(shellSessions).values(row).run();
  return row;
}

export type ShellSessionEnd = Pick<ShellSessionRow, 'exitCode' | 'exitSignal' | 'bytesIn' | 'bytesOut' | 'endReason' | 'endedAt'>;

/** Counters of a running session, written now and then so a crash keeps them roughly. */
export async function updateShellSessionCounters(db: Db, id: string, bytesIn: number, bytesOut: number): Promise<void> {
  db.update(shellSessions).set({ bytesIn, bytesOut }).where(eq(shellSessions.id, id)).run();
}

export async function endShellSession(db: Db, id: string, end: ShellSessionEnd): Promise<void> {
  db.update(shellSessions).set(end).where(and(eq(shellSessions.id, id), isNull(shellSessions.endedAt))).run();
}

/** Sessions a previous run left open (the control plane stopped under them). */
export async function closeOrphanedShellSessions(db: Db, now: number): Promise<number> {
  return db.update(shellSessions).set({ endedAt: now, endReason: 'control_plane_stopped' }).where(isNull(shellSessions.endedAt)).run().changes;
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
  const where: SQL[] = [eq(shellSessions.workspaceId, workspaceId)];
  if (q.keyId !== undefined) where.push(eq(shellSessions.keyId, q.keyId));
  if (q.instanceId !== undefined) where.push(eq(shellSessions.instanceId, q.instanceId));
  if (q.cursor !== undefined) where.push(lt(shellSessions.id, q.cursor));
  const rows = db
    .select()
    .from(shellSessions)
    .where(and(...where))
    .orderBy(desc(shellSessions.id))
    .limit(q.limit + 1)
    .all();
  const page = rows.slice(0, q.limit);
  const keyIds = [...new Set(page.map((r) => r.keyId).filter((k): k is string => k !== null))];
  const names = new Map(
    keyIds.length === 0
      ? []
      : db
          .select({ id: apiKeys.id, name: apiKeys.name })
          .from(apiKeys)
          .where(inArray(apiKeys.id, keyIds))
          .all()
          .map((k) => [k.id, k.name] as const),
  );
  const last = page[page.length - 1];
  return {
    items: page.map((r) => ({ ...r, keyName: r.keyId === null ? null : (names.get(r.keyId) ?? null) })),
    nextCursor: rows.length > q.limit && last ? last.id : null,
  };
}

export async function getShellSession(db: Db, workspaceId: string, id: string): Promise<ShellSessionRow | undefined> {
  return db
    .select()
    .from(shellSessions)
    .where(and(eq(shellSessions.workspaceId, workspaceId), eq(shellSessions.id, id)))
    .get();
}

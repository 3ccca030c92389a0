import { and, desc, eq, gte, inArray, isNotNull, isNull, lt, ne, notExists, notInArray, or } from 'drizzle-orm';
import type { SQL } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { AuditRow } from './audit.ts';
import type { Db, Orm } from './index.ts';
import type { Row, Tables } from './schema.ts';
import { exec, rows, transaction } from './tx.ts';

export type ShellSessionRow = Row<'shellSessions'>;
export type NewShellSession = Pick<ShellSessionRow, 'id' | 'workspaceId' | 'instanceId' | 'keyId' | 'via' | 'recordingPath' | 'command' | 'runAs' | 'startedAt'> & {
  /** The process holding the session (ctx.nodeId); null: not known. */
  nodeId?: string | null;
};

export async function insertShellSession(db: Db, s: NewShellSession): Promise<ShellSessionRow> {
  const row: ShellSessionRow = { ...s, nodeId: s.nodeId ?? null, exitCode: null, exitSignal: null, bytesIn: 0, bytesOut: 0, endReason: null, endedAt: null };
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

/**
 * Open sessions no process is left to end:
 * - `all`: SQLite, one process: at its start every open row is a previous run's.
 * - `own`: PostgreSQL, at this node's start: the rows a previous run of this node left open.
 * - `dead`: PostgreSQL, at a heartbeat: the rows of other nodes silent since `liveSince`
 *   (or gone from `control_planes`), whose processes died with their sessions.
 * Rows without a holder (written before `node_id` was recorded) could be live on any
 * node still running the old version, so `own` and `dead` close them only while no
 * other node is live (heard from since `liveSince`): then nobody can hold them. In a
 * cluster never down to one node they stay open, which is the safe side: closing a
 * live session's row would hide it from the trail.
 */
export type OrphanScope = { kind: 'all' } | { kind: 'own' | 'dead'; nodeId: string; liveSince: number };

function orphans(tx: Orm, t: Tables, scope: OrphanScope): SQL | undefined {
  const s = t.shellSessions;
  if (scope.kind === 'all') return isNull(s.endedAt);
  const { controlPlanes } = t;
  const liveNodes = tx.select({ id: controlPlanes.nodeId }).from(controlPlanes).where(gte(controlPlanes.heartbeatAt, scope.liveSince));
  const otherLive = tx
    .select({ id: controlPlanes.nodeId })
    .from(controlPlanes)
    .where(and(ne(controlPlanes.nodeId, scope.nodeId), gte(controlPlanes.heartbeatAt, scope.liveSince)));
  const holder =
    scope.kind === 'own'
      ? eq(s.nodeId, scope.nodeId)
      : // This node never sweeps its own rows: its heartbeat just said it is alive, whatever the others think.
        and(isNotNull(s.nodeId), ne(s.nodeId, scope.nodeId), notInArray(s.nodeId, liveNodes));
  return and(isNull(s.endedAt), or(holder, and(isNull(s.nodeId), notExists(otherLive))));
}

/**
 * Ends the orphaned sessions of `scope` as `control_plane_stopped` and writes one
 * `shell.close` audit row for each, in one transaction. The UPDATE is conditional
 * (`ended_at IS NULL`), and only the rows it changed are audited: two processes closing
 * the same rows at once close and audit each exactly once. The recordings stay as the
 * dead process left them. Answers the rows closed.
 */
export async function closeOrphanedShellSessions(db: Db, scope: OrphanScope, now: number): Promise<ShellSessionRow[]> {
  return transaction(db, function* (tx, t) {
    const closed = yield* rows(
      tx.update(t.shellSessions).set({ endedAt: now, endReason: 'control_plane_stopped' }).where(orphans(tx, t, scope)).returning(),
    );
    if (closed.length > 0) yield* exec(tx.insert(t.auditLog).values(closed.map((row) => orphanCloseAudit(row, now))));
    return closed;
  });
}

function orphanCloseAudit(row: ShellSessionRow, now: number): AuditRow {
  return {
    id: newId('audit'),
    at: now,
    workspaceId: row.workspaceId,
    keyId: row.keyId,
    channel: 'shell',
    tool: null,
    action: 'shell.close',
    method: null,
    route: null,
    targetIds: {
      instance_id: row.instanceId,
      session_id: row.id,
      via: row.via,
      end_reason: 'control_plane_stopped',
      ...(row.nodeId !== null && { node_id: row.nodeId }),
    },
    status: 200,
    errorKey: null,
    requestId: null,
    clientAddress: null,
  };
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

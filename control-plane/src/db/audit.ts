import { and, desc, eq, gte, lt } from 'drizzle-orm';
import type { SQL } from 'drizzle-orm';
import type { Statement } from 'better-sqlite3';
import { newId } from '@vmkit/protocol';
import { prepared } from './index.ts';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';

export type AuditRow = Row<'auditLog'>;
export type AuditChannel = 'rest' | 'mcp' | 'dashboard' | 'shell' | 'agent';

export type NewAuditEntry = Omit<AuditRow, 'id' | 'at'> & { at?: number };

export async function insertAudit(db: Db, entry: NewAuditEntry): Promise<AuditRow> {
  const row: AuditRow = { ...entry, id: newId('audit'), at: entry.at ?? Date.now() };
  if (db.dialect === 'postgres') {
    await db.orm.insert(db.t.auditLog).values(row);
    return row;
  }
  // Plain better-sqlite3 on SQLite: one insert per request is the hottest write there is.
  const { sqlite } = db;
  const stmt = prepared<Statement>(db, 'audit.insert', () =>
    sqlite.prepare(
      `INSERT INTO audit_log (id, at, workspace_id, key_id, channel, tool, action, method, route, target_ids, status, error_key, request_id, client_address)
       VALUES (@id, @at, @workspaceId, @keyId, @channel, @tool, @action, @method, @route, @targetIds, @status, @errorKey, @requestId, @clientAddress)`,
    ),
  );
  stmt.run({ ...row, targetIds: row.targetIds === null ? null : JSON.stringify(row.targetIds) });
  return row;
}

export interface AuditQuery {
  action?: string;
  keyId?: string;
  channel?: string;
  /** Milliseconds: entries at or after. */
  since?: number;
  /** Milliseconds: entries before. */
  until?: number;
  /** The id of the last entry of the previous page. */
  cursor?: string;
  limit: number;
}

/** Newest first. `nextCursor` is set when there may be more. */
export async function listAudit(db: Db, workspaceId: string, q: AuditQuery): Promise<{ items: AuditRow[]; nextCursor: string | null }> {
  const { auditLog } = db.t;
  const where: SQL[] = [eq(auditLog.workspaceId, workspaceId)];
  if (q.action !== undefined) where.push(eq(auditLog.action, q.action));
  if (q.keyId !== undefined) where.push(eq(auditLog.keyId, q.keyId));
  if (q.channel !== undefined) where.push(eq(auditLog.channel, q.channel));
  if (q.since !== undefined) where.push(gte(auditLog.at, q.since));
  if (q.until !== undefined) where.push(lt(auditLog.at, q.until));
  if (q.cursor !== undefined) where.push(lt(auditLog.id, q.cursor));
  const rows = await db.orm
    .select()
    .from(auditLog)
    .where(and(...where))
    .orderBy(desc(auditLog.id))
    .limit(q.limit + 1);
  const items = rows.slice(0, q.limit);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > q.limit && last ? last.id : null };
}

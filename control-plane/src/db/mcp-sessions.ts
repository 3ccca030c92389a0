/**
 * Which control-plane process holds each MCP session (table `mcp_sessions`), so that a
 * process getting a request for a session it does not hold can forward it to the one
 * that does (../mcp/cluster.ts). Written for both dialects; only PostgreSQL, where
 * several processes share the database, has rows.
 */
import { and, eq, gte, inArray, notInArray, sql } from 'drizzle-orm';
import type { Db } from './index.ts';
import { changed } from './tx.ts';

export interface McpSessionHolder {
  nodeId: string;
  /** The holder's URL in the node registry (control_planes.url). */
  url: string;
  principalHash: string | null;
}

export async function recordMcpSession(db: Db, row: { sessionId: string; nodeId: string; principalHash: string | null; now: number }): Promise<void> {
  const { mcpSessions } = db.t;
  await db.orm.insert(mcpSessions).values({
    sessionId: row.sessionId,
    nodeId: row.nodeId,
    principalHash: row.principalHash,
    createdAt: row.now,
    lastUsedAt: row.now,
  });
}

/** Records that the sessions were used (one statement for all of them). */
export async function touchMcpSessions(db: Db, nodeId: string, sessionIds: readonly string[], now: number): Promise<number> {
  if (sessionIds.length === 0) return 0;
  const { mcpSessions } = db.t;
  return changed(
    await db.orm
      .update(mcpSessions)
      .set({ lastUsedAt: now })
      .where(and(eq(mcpSessions.nodeId, nodeId), inArray(mcpSessions.sessionId, [...sessionIds]))),
  );
}

export async function deleteMcpSessions(db: Db, nodeId: string, sessionIds: readonly string[]): Promise<number> {
  if (sessionIds.length === 0) return 0;
  const { mcpSessions } = db.t;
  return changed(
    await db.orm.delete(mcpSessions).where(and(eq(mcpSessions.nodeId, nodeId), inArray(mcpSessions.sessionId, [...sessionIds]))),
  );
}

/** Every row of a node: at its start, sessions a previous run of it held are gone with that run's memory. */
export async function deleteNodeMcpSessions(db: Db, nodeId: string): Promise<number> {
  const { mcpSessions } = db.t;
  return changed(await db.orm.delete(mcpSessions).where(eq(mcpSessions.nodeId, nodeId)));
}

/**
 * The live node holding a session: its row joined with the node registry, the node
 * heard from since `liveSince`. Undefined for an unknown session or a dead holder.
 */
export async function findMcpSessionHolder(db: Db, sessionId: string, liveSince: number): Promise<McpSessionHolder | undefined> {
  const { mcpSessions, controlPlanes } = db.t;
  const rows = await db.orm
    .select({ nodeId: mcpSessions.nodeId, url: controlPlanes.url, principalHash: mcpSessions.principalHash })
    .from(mcpSessions)
    .innerJoin(controlPlanes, eq(controlPlanes.nodeId, mcpSessions.nodeId))
    .where(and(eq(mcpSessions.sessionId, sessionId), gte(controlPlanes.heartbeatAt, liveSince)))
    .limit(1);
  return rows[0];
}

/** Rows of nodes that are not live (no registry row, or silent since `liveSince`): their sessions died with them. */
export async function forgetMcpSessionsOfDeadNodes(db: Db, liveSince: number): Promise<number> {
  const { mcpSessions, controlPlanes } = db.t;
  const live = db.orm.select({ id: controlPlanes.nodeId }).from(controlPlanes).where(sql`${controlPlanes.heartbeatAt} >= ${liveSince}`);
  return changed(await db.orm.delete(mcpSessions).where(notInArray(mcpSessions.nodeId, live)));
}

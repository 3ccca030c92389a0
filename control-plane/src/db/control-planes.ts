/**
 * The registry of control-plane processes sharing a database (table `control_planes`):
 * register at start, heartbeat, deregister on a clean shutdown. Written once for both
 * dialects; only a PostgreSQL deployment has more than one row that matters.
 */
import { and, eq, gte, inArray, isNotNull, lt, ne, notInArray, sql } from 'drizzle-orm';
import type { Db } from './index.ts';
import { changed } from './tx.ts';

export interface ControlPlaneNode {
  nodeId: string;
  url: string;
  startedAt: number;
  heartbeatAt: number;
}

/** Registers (or re-registers, after a restart) a node as alive now. */
export async function registerNode(db: Db, node: { nodeId: string; url: string; now: number }): Promise<void> {
  const { controlPlanes } = db.t;
  await db.orm
    .insert(controlPlanes)
    .values({ nodeId: node.nodeId, url: node.url, startedAt: node.now, heartbeatAt: node.now })
    .onConflictDoUpdate({ target: controlPlanes.nodeId, set: { url: node.url, startedAt: node.now, heartbeatAt: node.now } });
}

/** Says the node is still alive (and where); false when its row is gone (it is then registered again). */
export async function heartbeatNode(db: Db, node: { nodeId: string; url: string; now: number }): Promise<boolean> {
  const { controlPlanes } = db.t;
  const n = changed(
    await db.orm.update(controlPlanes).set({ url: node.url, heartbeatAt: node.now }).where(eq(controlPlanes.nodeId, node.nodeId)),
  );
  if (n === 1) return true;
  await registerNode(db, node);
  return false;
}

/** A clean shutdown: the node's row goes, so nobody routes to it any more. */
export async function deregisterNode(db: Db, nodeId: string): Promise<void> {
  const { controlPlanes } = db.t;
  await db.orm.delete(controlPlanes).where(eq(controlPlanes.nodeId, nodeId));
}

export async function listNodes(db: Db): Promise<ControlPlaneNode[]> {
  const { controlPlanes } = db.t;
  return db.orm.select().from(controlPlanes).orderBy(controlPlanes.nodeId);
}

/**
 * Agents recorded as connected to a node that is gone (no row) or silent since
 * `staleBefore` are marked disconnected: a process killed without a shutdown leaves
 * them `connected` otherwise. Answers how many.
 */
export async function disconnectAgentsOfDeadNodes(db: Db, staleBefore: number): Promise<number> {
  const { agents, controlPlanes } = db.t;
  const live = db.orm.select({ id: controlPlanes.nodeId }).from(controlPlanes).where(sql`${controlPlanes.heartbeatAt} >= ${staleBefore}`);
  return changed(
    await db.orm
      .update(agents)
      .set({ state: 'disconnected', nodeId: null })
      .where(and(eq(agents.state, 'connected'), isNotNull(agents.nodeId), notInArray(agents.nodeId, live))),
  );
}

/** Rows of nodes silent since `staleBefore` are removed (their agents first, see above). */
export async function forgetDeadNodes(db: Db, staleBefore: number): Promise<number> {
  const { controlPlanes } = db.t;
  return changed(await db.orm.delete(controlPlanes).where(lt(controlPlanes.heartbeatAt, staleBefore)));
}

/** The agents this node holds are recorded as connected to it again (after others took it for dead). */
export async function reclaimAgents(db: Db, nodeId: string, agentIds: readonly string[], now: number): Promise<number> {
  if (agentIds.length === 0) return 0;
  const { agents } = db.t;
  return changed(
    await db.orm
      .update(agents)
      .set({ state: 'connected', nodeId, lastSeen: now })
      .where(and(inArray(agents.id, [...agentIds]), ne(agents.state, 'revoked'))),
  );
}

/**
 * The live node (heard from since `liveSince`) recorded as holding the agent's
 * connection, with the URL it registered; undefined when none does. Shell channels are
 * relayed there (../hub/cluster-shell-opener.ts).
 */
export async function findAgentHolder(db: Db, agentId: string, liveSince: number): Promise<{ nodeId: string; url: string } | undefined> {
  const { agents, controlPlanes } = db.t;
  const rows = await db.orm
    .select({ nodeId: controlPlanes.nodeId, url: controlPlanes.url })
    .from(agents)
    .innerJoin(controlPlanes, eq(controlPlanes.nodeId, agents.nodeId))
    .where(and(eq(agents.id, agentId), eq(agents.state, 'connected'), gte(controlPlanes.heartbeatAt, liveSince)))
    .limit(1);
  return rows[0];
}

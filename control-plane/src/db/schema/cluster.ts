/**
 * The control-plane processes sharing one database (PostgreSQL, several processes):
 * each registers at start, heartbeats, and deregisters on a clean shutdown. A node
 * whose heartbeat is stale is taken for dead: its agents count as connected nowhere.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { bigint, index as pgIndex, pgTable, text as pgText } from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteControlPlanes = sqliteTable('control_planes', {
  /** The process's node id (node-id.ts): the name of its NOTIFY channel and metrics label. */
  nodeId: text('node_id').primaryKey(),
  /** Where other processes reach it: the URL it listens on, not the public one (a balancer's); MCP forwards go there. */
  url: text('url').notNull(),
  startedAt: integer('started_at').notNull(),
  heartbeatAt: integer('heartbeat_at').notNull(),
});
export const pgControlPlanes = pgTable('control_planes', {
  nodeId: pgText('node_id').primaryKey(),
  url: pgText('url').notNull(),
  startedAt: ms('started_at').notNull(),
  heartbeatAt: ms('heartbeat_at').notNull(),
});

/**
 * MCP sessions (Streamable HTTP, session mode) and the node whose memory holds each:
 * another node that gets a request for the session forwards it there (../../mcp/directory.ts).
 * Only a PostgreSQL deployment writes rows; one SQLite process keeps sessions in memory alone.
 */
export const sqliteMcpSessions = sqliteTable(
  'mcp_sessions',
  {
    /** The Mcp-Session-Id the holder gave out (a random UUID). */
    sessionId: text('session_id').primaryKey(),
    /** The node holding the session (control_planes.node_id; no foreign key: a dead node's row goes first). */
    nodeId: text('node_id').notNull(),
    /** SHA-256 (hex) of the credential the session is bound to (a key id); null = opened without one. Never the key. */
    principalHash: text('principal_hash'),
    createdAt: integer('created_at').notNull(),
    /** Refreshed at most once a minute: what the holder's idle expiry goes by, give or take that. */
    lastUsedAt: integer('last_used_at').notNull(),
  },
  (t) => [index('mcp_sessions_node_id_idx').on(t.nodeId)],
);
export const pgMcpSessions = pgTable(
  'mcp_sessions',
  {
    sessionId: pgText('session_id').primaryKey(),
    nodeId: pgText('node_id').notNull(),
    principalHash: pgText('principal_hash'),
    createdAt: ms('created_at').notNull(),
    lastUsedAt: ms('last_used_at').notNull(),
  },
  (t) => [pgIndex('mcp_sessions_node_id_idx').on(t.nodeId)],
);

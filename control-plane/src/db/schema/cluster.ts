/**
 * The control-plane processes sharing one database (PostgreSQL, several processes):
 * each registers at start, heartbeats, and deregisters on a clean shutdown. A node
 * whose heartbeat is stale is taken for dead: its agents count as connected nowhere.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { bigint, pgTable, text as pgText } from 'drizzle-orm/pg-core';
import { integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteControlPlanes = sqliteTable('control_planes', {
  /** The process's node id (node-id.ts): the name of its NOTIFY channel and metrics label. */
  nodeId: text('node_id').primaryKey(),
  /** Where other processes and operators reach it (its URL as it serves). */
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

/**
 * What happened: shell sessions and the audit trail.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { sql } from 'drizzle-orm';
import { bigint, index as pgIndex, integer as pgInteger, json, pgTable, text as pgText } from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';
import { pgApiKeys, pgWorkspaces, sqliteApiKeys, sqliteWorkspaces } from './accounts.ts';
import { pgInstances, sqliteInstances } from './fleet.ts';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteShellSessions = sqliteTable(
  'shell_sessions',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => sqliteInstances.id, { onDelete: 'cascade' }),
    keyId: text('key_id').references(() => sqliteApiKeys.id, { onDelete: 'set null' }),
    /** websocket | ssh */
    via: text('via').notNull(),
    recordingPath: text('recording_path'),
    exitCode: integer('exit_code'),
    /** The signal that ended the remote process, when one did. */
    exitSignal: text('exit_signal'),
    /** The single command of an exec session; null for an interactive shell. */
    command: text('command'),
    /** The OS user the PTY runs as on the VM. */
    runAs: text('run_as'),
    /** Bytes from the operator to the VM and back. */
    bytesIn: integer('bytes_in').notNull().default(0),
    bytesOut: integer('bytes_out').notNull().default(0),
    /**
     * The control-plane process (node id) that holds the session; NULL for rows written
     * before it was recorded. Its sessions die with it (closeOrphanedShellSessions, ../shell-sessions.ts).
     */
    nodeId: text('node_id'),
    /** Why it ended: exit, idle_timeout, max_length, key_revoked, agent_disconnected, ... */
    endReason: text('end_reason'),
    startedAt: integer('started_at').notNull(),
    endedAt: integer('ended_at'),
  },
  (t) => [
    index('shell_sessions_instance_idx').on(t.instanceId),
    index('shell_sessions_workspace_idx').on(t.workspaceId, t.id),
    // The open sessions per holder: what a start or a dead-node sweep closes.
    index('shell_sessions_open_node_idx').on(t.nodeId).where(sql`ended_at IS NULL`),
  ],
);
export const pgShellSessions = pgTable(
  'shell_sessions',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    instanceId: pgText('instance_id')
      .notNull()
      .references(() => pgInstances.id, { onDelete: 'cascade' }),
    keyId: pgText('key_id').references(() => pgApiKeys.id, { onDelete: 'set null' }),
    via: pgText('via').notNull(),
    recordingPath: pgText('recording_path'),
    exitCode: pgInteger('exit_code'),
    exitSignal: pgText('exit_signal'),
    command: pgText('command'),
    runAs: pgText('run_as'),
    /** A long session passes 2 GiB: bigint. */
    bytesIn: bigint('bytes_in', { mode: 'number' }).notNull().default(0),
    bytesOut: bigint('bytes_out', { mode: 'number' }).notNull().default(0),
    nodeId: pgText('node_id'),
    endReason: pgText('end_reason'),
    startedAt: ms('started_at').notNull(),
    endedAt: ms('ended_at'),
  },
  (t) => [
    pgIndex('shell_sessions_instance_idx').on(t.instanceId),
    pgIndex('shell_sessions_workspace_idx').on(t.workspaceId, t.id),
    pgIndex('shell_sessions_open_node_idx').on(t.nodeId).where(sql`ended_at IS NULL`),
  ],
);

export const sqliteAuditLog = sqliteTable(
  'audit_log',
  {
    id: text('id').primaryKey(),
    at: integer('at').notNull(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    keyId: text('key_id'),
    /** rest | mcp | dashboard | shell | agent */
    channel: text('channel').notNull(),
    /** MCP tool name when channel is mcp. */
    tool: text('tool'),
    action: text('action').notNull(),
    method: text('method'),
    /** Route pattern (`/api/repos/:id`), never the raw URL with its query. */
    route: text('route'),
    targetIds: text('target_ids', { mode: 'json' }).$type<Record<string, string>>(),
    status: integer('status').notNull(),
    errorKey: text('error_key'),
    requestId: text('request_id'),
    clientAddress: text('client_address'),
  },
  (t) => [
    index('audit_log_workspace_id_idx').on(t.workspaceId, t.id),
    index('audit_log_workspace_action_idx').on(t.workspaceId, t.action, t.id),
  ],
);
export const pgAuditLog = pgTable(
  'audit_log',
  {
    id: pgText('id').primaryKey(),
    at: ms('at').notNull(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    keyId: pgText('key_id'),
    channel: pgText('channel').notNull(),
    tool: pgText('tool'),
    action: pgText('action').notNull(),
    method: pgText('method'),
    route: pgText('route'),
    targetIds: json('target_ids').$type<Record<string, string>>(),
    status: pgInteger('status').notNull(),
    errorKey: pgText('error_key'),
    requestId: pgText('request_id'),
    clientAddress: pgText('client_address'),
  },
  (t) => [
    pgIndex('audit_log_workspace_id_idx').on(t.workspaceId, t.id),
    pgIndex('audit_log_workspace_action_idx').on(t.workspaceId, t.action, t.id),
  ],
);

/**
 * Fleet rollouts of the agent (`POST /api/agents/updates`): one row per rollout, one per
 * agent it updates. At most one runs per workspace (a partial unique index holds it);
 * a running one is resumed at the next start.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { sql } from 'drizzle-orm';
import { bigint, boolean, index as pgIndex, integer as pgInteger, json, pgTable, text as pgText, uniqueIndex as pgUniqueIndex } from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { pgWorkspaces, sqliteWorkspaces } from './accounts.ts';
import { pgAgents, pgInstances, sqliteAgents, sqliteInstances } from './fleet.ts';

const ms = (name: string) => bigint(name, { mode: 'number' });

/** How the agents were chosen, as asked. */
export type RolloutSelection = { instance_ids?: string[]; percent?: number };

export const sqliteAgentRollouts = sqliteTable(
  'agent_rollouts',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    /** The API key that asked (no foreign key: the audit trail outlives keys). */
    keyId: text('key_id'),
    version: text('version').notNull(),
    allowDowngrade: integer('allow_downgrade', { mode: 'boolean' }).notNull(),
    selection: text('selection', { mode: 'json' }).$type<RolloutSelection>().notNull(),
    batchSize: integer('batch_size').notNull(),
    maxFailures: integer('max_failures').notNull(),
    /** running | succeeded | failed | stopped */
    status: text('status').notNull(),
    /** Why it failed or stopped. */
    errorKey: text('error_key'),
    errorMessage: text('error_message'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    finishedAt: integer('finished_at'),
    /** The control-plane process (node id) driving this running rollout; null = nobody (free to claim). */
    leaseOwner: text('lease_owner'),
    /** Until when the owner's lease holds; after it, any process may claim the rollout. */
    leaseExpiresAt: integer('lease_expires_at'),
    /** Goes up by one at every claim: a write fenced with an older one is refused. */
    leaseGeneration: integer('lease_generation').notNull().default(0),
  },
  (t) => [
    index('agent_rollouts_workspace_idx').on(t.workspaceId, t.id),
    index('agent_rollouts_status_idx').on(t.status),
    uniqueIndex('agent_rollouts_one_running_per_workspace').on(t.workspaceId).where(sql`status = 'running'`),
  ],
);
export const pgAgentRollouts = pgTable(
  'agent_rollouts',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    keyId: pgText('key_id'),
    version: pgText('version').notNull(),
    allowDowngrade: boolean('allow_downgrade').notNull(),
    selection: json('selection').$type<RolloutSelection>().notNull(),
    batchSize: pgInteger('batch_size').notNull(),
    maxFailures: pgInteger('max_failures').notNull(),
    status: pgText('status').notNull(),
    errorKey: pgText('error_key'),
    errorMessage: pgText('error_message'),
    createdAt: ms('created_at').notNull(),
    updatedAt: ms('updated_at').notNull(),
    finishedAt: ms('finished_at'),
    leaseOwner: pgText('lease_owner'),
    leaseExpiresAt: ms('lease_expires_at'),
    leaseGeneration: pgInteger('lease_generation').notNull().default(0),
  },
  (t) => [
    pgIndex('agent_rollouts_workspace_idx').on(t.workspaceId, t.id),
    pgIndex('agent_rollouts_status_idx').on(t.status),
    pgUniqueIndex('agent_rollouts_one_running_per_workspace').on(t.workspaceId).where(sql`status = 'running'`),
  ],
);

/** One agent of a rollout: its batch, what it ran before, and how its update ended. */
export const sqliteAgentRolloutTargets = sqliteTable(
  'agent_rollout_targets',
  {
    id: text('id').primaryKey(),
    rolloutId: text('rollout_id')
      .notNull()
      .references(() => sqliteAgentRollouts.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => sqliteInstances.id, { onDelete: 'cascade' }),
    agentId: text('agent_id')
      .notNull()
      .references(() => sqliteAgents.id, { onDelete: 'cascade' }),
    /** Order in the rollout, from 0; batch = floor(seq / batch_size). */
    seq: integer('seq').notNull(),
    batch: integer('batch').notNull(),
    platform: text('platform').notNull(),
    /** pending | updating | succeeded | rolled_back | failed | timed_out | skipped */
    state: text('state').notNull(),
    /** The version the agent ran when the rollout was made, and the one it runs after. */
    fromVersion: text('from_version'),
    toVersion: text('to_version'),
    /** The signed agent.update command sent to it. */
    commandId: text('command_id'),
    errorKey: text('error_key'),
    errorMessage: text('error_message'),
    startedAt: integer('started_at'),
    finishedAt: integer('finished_at'),
  },
  (t) => [uniqueIndex('agent_rollout_targets_seq_unique').on(t.rolloutId, t.seq), index('agent_rollout_targets_agent_idx').on(t.agentId)],
);
export const pgAgentRolloutTargets = pgTable(
  'agent_rollout_targets',
  {
    id: pgText('id').primaryKey(),
    rolloutId: pgText('rollout_id')
      .notNull()
      .references(() => pgAgentRollouts.id, { onDelete: 'cascade' }),
    instanceId: pgText('instance_id')
      .notNull()
      .references(() => pgInstances.id, { onDelete: 'cascade' }),
    agentId: pgText('agent_id')
      .notNull()
      .references(() => pgAgents.id, { onDelete: 'cascade' }),
    seq: pgInteger('seq').notNull(),
    batch: pgInteger('batch').notNull(),
    platform: pgText('platform').notNull(),
    state: pgText('state').notNull(),
    fromVersion: pgText('from_version'),
    toVersion: pgText('to_version'),
    commandId: pgText('command_id'),
    errorKey: pgText('error_key'),
    errorMessage: pgText('error_message'),
    startedAt: ms('started_at'),
    finishedAt: ms('finished_at'),
  },
  (t) => [pgUniqueIndex('agent_rollout_targets_seq_unique').on(t.rolloutId, t.seq), pgIndex('agent_rollout_targets_agent_idx').on(t.agentId)],
);

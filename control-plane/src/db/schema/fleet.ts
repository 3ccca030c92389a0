/**
 * The machines and what reaches them: instances, their agents, enrollment tokens,
 * signed commands and the harden follow-ups owed on them.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { sql } from 'drizzle-orm';
import { bigint, index as pgIndex, integer as pgInteger, json, pgTable, text as pgText, uniqueIndex as pgUniqueIndex } from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { pgWorkspaces, sqliteWorkspaces } from './accounts.ts';
import { pgEnvironments, sqliteEnvironments } from './projects.ts';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteInstances = sqliteTable(
  'instances',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    environmentId: text('environment_id').references(() => sqliteEnvironments.id, { onDelete: 'set null' }),
    /** Compute provider name: `local`, `hetzner`, ... */
    provider: text('provider').notNull(),
    /** awaiting_agent | provisioning | running | stopped | failed | destroyed */
    status: text('status').notNull(),
    /** Why the instance is in its status, when that needs saying (e.g. why it `failed`). */
    statusReason: text('status_reason'),
    sshHost: text('ssh_host'),
    sshPort: integer('ssh_port'),
    hardenedAt: integer('hardened_at'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    /** Whatever the provider needs to find the machine again (opaque to everyone else). */
    providerRef: text('provider_ref', { mode: 'json' }).$type<Record<string, unknown>>(),
    /**
     * The VM's sshd host public keys (OpenSSH lines), as its agent reported them at
     * enrollment: deploy workflows pin them in known_hosts instead of trusting on first use.
     */
    sshHostKeys: text('ssh_host_keys', { mode: 'json' }).$type<string[]>(),
  },
  (t) => [
    index('instances_workspace_idx').on(t.workspaceId, t.id),
    // "harden web-1" names one machine: a live name is unique per workspace, in any case.
    uniqueIndex('instances_name_per_workspace').on(t.workspaceId, sql`lower(${t.name})`).where(sql`status <> 'destroyed'`),
  ],
);
export const pgInstances = pgTable(
  'instances',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    name: pgText('name').notNull(),
    environmentId: pgText('environment_id').references(() => pgEnvironments.id, { onDelete: 'set null' }),
    provider: pgText('provider').notNull(),
    status: pgText('status').notNull(),
    statusReason: pgText('status_reason'),
    sshHost: pgText('ssh_host'),
    sshPort: pgInteger('ssh_port'),
    hardenedAt: ms('hardened_at'),
    createdAt: ms('created_at').notNull(),
    updatedAt: ms('updated_at').notNull(),
    providerRef: json('provider_ref').$type<Record<string, unknown>>(),
    sshHostKeys: json('ssh_host_keys').$type<string[]>(),
  },
  (t) => [
    pgIndex('instances_workspace_idx').on(t.workspaceId, t.id),
    pgUniqueIndex('instances_name_per_workspace').on(t.workspaceId, sql`lower(${t.name})`).where(sql`status <> 'destroyed'`),
  ],
);

export const sqliteAgents = sqliteTable(
  'agents',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => sqliteInstances.id, { onDelete: 'cascade' }),
    /** base64url of the raw Ed25519 public key. */
    publicKey: text('public_key').notNull(),
    /** connected | disconnected | revoked */
    state: text('state').notNull(),
    connectedAt: integer('connected_at'),
    lastSeen: integer('last_seen'),
    agentVersion: text('agent_version'),
    hostname: text('hostname'),
    os: text('os'),
    /** The release platform (linux-x64, ...) the agent told in its last hello; null for agents older than self-update. */
    platform: text('platform'),
    /** Key ids of the control-plane signing keys this agent has pinned (rotation). */
    pinnedKeyIds: text('pinned_key_ids', { mode: 'json' }).$type<string[]>(),
    createdAt: integer('created_at').notNull(),
    /**
     * The control-plane node (control_planes.node_id) holding the agent's live connection,
     * while `connected` (PostgreSQL, several processes); null otherwise.
     */
    nodeId: text('node_id'),
  },
  (t) => [uniqueIndex('agents_instance_unique').on(t.instanceId)],
);
export const pgAgents = pgTable(
  'agents',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    instanceId: pgText('instance_id')
      .notNull()
      .references(() => pgInstances.id, { onDelete: 'cascade' }),
    publicKey: pgText('public_key').notNull(),
    state: pgText('state').notNull(),
    connectedAt: ms('connected_at'),
    lastSeen: ms('last_seen'),
    agentVersion: pgText('agent_version'),
    hostname: pgText('hostname'),
    os: pgText('os'),
    platform: pgText('platform'),
    pinnedKeyIds: json('pinned_key_ids').$type<string[]>(),
    createdAt: ms('created_at').notNull(),
    nodeId: pgText('node_id'),
  },
  (t) => [pgUniqueIndex('agents_instance_unique').on(t.instanceId)],
);

export const sqliteEnrollmentTokens = sqliteTable(
  'enrollment_tokens',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    /** sha-256 (hex) of the token. */
    hash: text('hash').notNull(),
    instanceId: text('instance_id')
      .notNull()
      .references(() => sqliteInstances.id, { onDelete: 'cascade' }),
    expiresAt: integer('expires_at').notNull(),
    usedAt: integer('used_at'),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [uniqueIndex('enrollment_tokens_hash_unique').on(t.hash)],
);
export const pgEnrollmentTokens = pgTable(
  'enrollment_tokens',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    hash: pgText('hash').notNull(),
    instanceId: pgText('instance_id')
      .notNull()
      .references(() => pgInstances.id, { onDelete: 'cascade' }),
    expiresAt: ms('expires_at').notNull(),
    usedAt: ms('used_at'),
    createdAt: ms('created_at').notNull(),
  },
  (t) => [pgUniqueIndex('enrollment_tokens_hash_unique').on(t.hash)],
);

export const sqliteCommands = sqliteTable(
  'commands',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    agentId: text('agent_id')
      .notNull()
      .references(() => sqliteAgents.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => sqliteInstances.id, { onDelete: 'cascade' }),
    type: text('type').notNull(),
    /** queued | sent | acked | running | succeeded | failed | expired | timed_out */
    state: text('state').notNull(),
    /** The signed envelope as sent. */
    envelope: text('envelope', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    /** base64url Ed25519 signature over the envelope; a batch signature carries the command's place after it (hub-store-shared.ts signatureColumn). */
    signature: text('signature'),
    /** The envelope's expires_at, in milliseconds. */
    expiresAt: integer('expires_at'),
    result: text('result', { mode: 'json' }).$type<Record<string, unknown>>(),
    errorKey: text('error_key'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    /** The control-plane node whose caller awaits the result (PostgreSQL, several processes); null otherwise. */
    nodeId: text('node_id'),
  },
  (t) => [index('commands_agent_state_idx').on(t.agentId, t.state), index('commands_instance_idx').on(t.instanceId)],
);
export const pgCommands = pgTable(
  'commands',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    agentId: pgText('agent_id')
      .notNull()
      .references(() => pgAgents.id, { onDelete: 'cascade' }),
    instanceId: pgText('instance_id')
      .notNull()
      .references(() => pgInstances.id, { onDelete: 'cascade' }),
    type: pgText('type').notNull(),
    state: pgText('state').notNull(),
    envelope: json('envelope').$type<Record<string, unknown>>().notNull(),
    signature: pgText('signature'),
    expiresAt: ms('expires_at'),
    result: json('result').$type<Record<string, unknown>>(),
    errorKey: pgText('error_key'),
    createdAt: ms('created_at').notNull(),
    updatedAt: ms('updated_at').notNull(),
    nodeId: pgText('node_id'),
  },
  (t) => [pgIndex('commands_agent_state_idx').on(t.agentId, t.state), pgIndex('commands_instance_idx').on(t.instanceId)],
);

/**
 * What the control plane still owes a harden command once the agent answers: the
 * outside SSH check, `hardened_at` and the audit row. Written when the command is
 * stored, so a restart finds the work a killed process left undone.
 */
export const sqliteHardenFollowUps = sqliteTable(
  'harden_follow_ups',
  {
    commandId: text('command_id')
      .primaryKey()
      .references(() => sqliteCommands.id, { onDelete: 'cascade' }),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => sqliteInstances.id, { onDelete: 'cascade' }),
    /** The API key that asked, for the audit row. */
    keyId: text('key_id'),
    /** owed | done */
    state: text('state').notNull(),
    /** harden_vm's answer (verification included), or `{error, message}`. */
    answer: text('answer', { mode: 'json' }).$type<Record<string, unknown>>(),
    createdAt: integer('created_at').notNull(),
    finishedAt: integer('finished_at'),
  },
  (t) => [index('harden_follow_ups_state_idx').on(t.state)],
);
export const pgHardenFollowUps = pgTable(
  'harden_follow_ups',
  {
    commandId: pgText('command_id')
      .primaryKey()
      .references(() => pgCommands.id, { onDelete: 'cascade' }),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    instanceId: pgText('instance_id')
      .notNull()
      .references(() => pgInstances.id, { onDelete: 'cascade' }),
    keyId: pgText('key_id'),
    state: pgText('state').notNull(),
    answer: json('answer').$type<Record<string, unknown>>(),
    createdAt: ms('created_at').notNull(),
    finishedAt: ms('finished_at'),
  },
  (t) => [pgIndex('harden_follow_ups_state_idx').on(t.state)],
);

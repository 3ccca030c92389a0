/**
 * Workspaces and who may act in them: API keys, dashboard sessions, operators' SSH keys.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { bigint, index as pgIndex, json, pgTable, text as pgText, uniqueIndex as pgUniqueIndex } from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

/** Milliseconds since the epoch: SQLite's integer is 64-bit; PostgreSQL's needs bigint, read back as a JS number. */
const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteWorkspaces = sqliteTable('workspaces', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  createdAt: integer('created_at').notNull(),
});
export const pgWorkspaces = pgTable('workspaces', {
  id: pgText('id').primaryKey(),
  name: pgText('name').notNull(),
  createdAt: ms('created_at').notNull(),
});

export const sqliteApiKeys = sqliteTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    /** sha-256 (hex) of the whole secret; the secret itself is never stored. */
    hash: text('hash').notNull(),
    /** First characters of the secret, for people to recognise a key. */
    prefix: text('prefix').notNull(),
    scopes: text('scopes', { mode: 'json' }).$type<string[]>().notNull(),
    expiresAt: integer('expires_at'),
    revokedAt: integer('revoked_at'),
    createdAt: integer('created_at').notNull(),
    lastUsedAt: integer('last_used_at'),
  },
  (t) => [uniqueIndex('api_keys_hash_unique').on(t.hash), index('api_keys_workspace_idx').on(t.workspaceId)],
);
export const pgApiKeys = pgTable(
  'api_keys',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    name: pgText('name').notNull(),
    hash: pgText('hash').notNull(),
    prefix: pgText('prefix').notNull(),
    scopes: json('scopes').$type<string[]>().notNull(),
    expiresAt: ms('expires_at'),
    revokedAt: ms('revoked_at'),
    createdAt: ms('created_at').notNull(),
    lastUsedAt: ms('last_used_at'),
  },
  (t) => [pgUniqueIndex('api_keys_hash_unique').on(t.hash), pgIndex('api_keys_workspace_idx').on(t.workspaceId)],
);

/** Operators' SSH public keys, registered on an API key, for the SSH gateway (`ssh -p 2222 <instance>@<cp>`). */
export const sqliteSshKeys = sqliteTable(
  'ssh_keys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    keyId: text('key_id')
      .notNull()
      .references(() => sqliteApiKeys.id, { onDelete: 'cascade' }),
    /** The OpenSSH public key line (type, base64, optional comment). */
    publicKey: text('public_key').notNull(),
    /** `SHA256:...` as OpenSSH prints it; one key belongs to one API key. */
    fingerprint: text('fingerprint').notNull(),
    comment: text('comment'),
    createdAt: integer('created_at').notNull(),
    lastUsedAt: integer('last_used_at'),
  },
  (t) => [uniqueIndex('ssh_keys_fingerprint_unique').on(t.fingerprint), index('ssh_keys_key_idx').on(t.keyId)],
);
export const pgSshKeys = pgTable(
  'ssh_keys',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    keyId: pgText('key_id')
      .notNull()
      .references(() => pgApiKeys.id, { onDelete: 'cascade' }),
    publicKey: pgText('public_key').notNull(),
    fingerprint: pgText('fingerprint').notNull(),
    comment: pgText('comment'),
    createdAt: ms('created_at').notNull(),
    lastUsedAt: ms('last_used_at'),
  },
  (t) => [pgUniqueIndex('ssh_keys_fingerprint_unique').on(t.fingerprint), pgIndex('ssh_keys_key_idx').on(t.keyId)],
);

/**
 * Dashboard sign-ins: an API key exchanged for a cookie. Only the sha-256 of the
 * cookie's secret is stored; the key is re-checked (revoked, expired) on every request.
 */
export const sqliteDashboardSessions = sqliteTable(
  'dashboard_sessions',
  {
    /** sha-256 (hex) of the cookie's secret. */
    hash: text('hash').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    keyId: text('key_id')
      .notNull()
      .references(() => sqliteApiKeys.id, { onDelete: 'cascade' }),
    createdAt: integer('created_at').notNull(),
    /** The session's own end, whatever the key's expiry (the key's earlier end wins). */
    expiresAt: integer('expires_at').notNull(),
    lastSeenAt: integer('last_seen_at'),
  },
  (t) => [index('dashboard_sessions_key_idx').on(t.keyId)],
);
export const pgDashboardSessions = pgTable(
  'dashboard_sessions',
  {
    hash: pgText('hash').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    keyId: pgText('key_id')
      .notNull()
      .references(() => pgApiKeys.id, { onDelete: 'cascade' }),
    createdAt: ms('created_at').notNull(),
    expiresAt: ms('expires_at').notNull(),
    lastSeenAt: ms('last_seen_at'),
  },
  (t) => [pgIndex('dashboard_sessions_key_idx').on(t.keyId)],
);

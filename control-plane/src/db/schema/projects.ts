/**
 * What a workspace deploys and where: connected repos, their environments, the
 * workspace's provider settings and the `local` DNS provider's records.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { sql } from 'drizzle-orm';
import { bigint, integer as pgInteger, json, pgTable, text as pgText, uniqueIndex as pgUniqueIndex } from 'drizzle-orm/pg-core';
import { integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { pgWorkspaces, sqliteWorkspaces } from './accounts.ts';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteRepos = sqliteTable(
  'repos',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    owner: text('owner').notNull(),
    name: text('name').notNull(),
    createdAt: integer('created_at').notNull(),
  },
  // GitHub names are case-insensitive: "Badri/App" and "badri/app" are one repo.
  (t) => [uniqueIndex('repos_workspace_full_name_unique').on(t.workspaceId, sql`lower(${t.owner})`, sql`lower(${t.name})`)],
);
export const pgRepos = pgTable(
  'repos',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    owner: pgText('owner').notNull(),
    name: pgText('name').notNull(),
    createdAt: ms('created_at').notNull(),
  },
  (t) => [pgUniqueIndex('repos_workspace_full_name_unique').on(t.workspaceId, sql`lower(${t.owner})`, sql`lower(${t.name})`)],
);

export const sqliteEnvironments = sqliteTable(
  'environments',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    repoId: text('repo_id')
      .notNull()
      .references(() => sqliteRepos.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [uniqueIndex('environments_repo_name_unique').on(t.repoId, t.name)],
);
export const pgEnvironments = pgTable(
  'environments',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    repoId: pgText('repo_id')
      .notNull()
      .references(() => pgRepos.id, { onDelete: 'cascade' }),
    name: pgText('name').notNull(),
    createdAt: ms('created_at').notNull(),
  },
  (t) => [pgUniqueIndex('environments_repo_name_unique').on(t.repoId, t.name)],
);

/**
 * Per-workspace provider settings (`PUT /api/workspace/{compute,dns,github}`): one row
 * per workspace and kind. The secret part (API token, App private key) is sealed with
 * the control plane's SecretBox (AES-256-GCM) and never returned; the API shows only
 * its fingerprint and when it was set.
 */
export const sqliteWorkspaceProviders = sqliteTable(
  'workspace_providers',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    /** compute | dns | github */
    kind: text('kind').notNull(),
    /** The provider's name: `local`, `hetzner`, `cloudflare`, `github`, ... */
    provider: text('provider').notNull(),
    /** Non-secret settings (zone, location, server type, API base URL, App id, ...). */
    settings: text('settings', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    /** SecretBox ciphertext of the secret, or null when the provider needs none. */
    secretSealed: text('secret_sealed'),
    secretFingerprint: text('secret_fingerprint'),
    secretSetAt: integer('secret_set_at'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [uniqueIndex('workspace_providers_kind_unique').on(t.workspaceId, t.kind)],
);
export const pgWorkspaceProviders = pgTable(
  'workspace_providers',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    kind: pgText('kind').notNull(),
    provider: pgText('provider').notNull(),
    settings: json('settings').$type<Record<string, unknown>>().notNull(),
    secretSealed: pgText('secret_sealed'),
    secretFingerprint: pgText('secret_fingerprint'),
    secretSetAt: ms('secret_set_at'),
    createdAt: ms('created_at').notNull(),
    updatedAt: ms('updated_at').notNull(),
  },
  (t) => [pgUniqueIndex('workspace_providers_kind_unique').on(t.workspaceId, t.kind)],
);

/** The `local` DNS provider's records (the control plane's own record book), listed by the API. */
export const sqliteDnsRecords = sqliteTable(
  'dns_records',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    zone: text('zone').notNull(),
    /** Fully qualified, lowercase. */
    name: text('name').notNull(),
    /** A | AAAA */
    type: text('type').notNull(),
    content: text('content').notNull(),
    ttl: integer('ttl').notNull(),
    /** VMKit's owner (the environment id). */
    owner: text('owner'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [uniqueIndex('dns_records_name_type_unique').on(t.workspaceId, t.name, t.type)],
);
export const pgDnsRecords = pgTable(
  'dns_records',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    zone: pgText('zone').notNull(),
    name: pgText('name').notNull(),
    type: pgText('type').notNull(),
    content: pgText('content').notNull(),
    ttl: pgInteger('ttl').notNull(),
    owner: pgText('owner'),
    createdAt: ms('created_at').notNull(),
    updatedAt: ms('updated_at').notNull(),
  },
  (t) => [pgUniqueIndex('dns_records_name_type_unique').on(t.workspaceId, t.name, t.type)],
);

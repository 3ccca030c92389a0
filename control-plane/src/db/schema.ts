/**
 * The control plane's tables, in both dialects. Each table is written twice, side by
 * side in db/schema/*.ts: `sqliteX = sqliteTable(...)` then `pgX = pgTable(...)`, with
 * the same table, column and index names. Ids are prefixed ULIDs from @vmkit/protocol
 * `newId`; times are integer milliseconds since the epoch (PostgreSQL: bigint read as a
 * number); JSON columns are text in SQLite and `json` in PostgreSQL (`json` keeps the
 * text as written and stores \u0000, whose row `jsonb` would refuse: an agent's answer
 * must not poison its command; nothing is indexed on JSON content, and the one JSON
 * key looked up by SQL, scans.details, holds what the scanner wrote); booleans are 0/1
 * in SQLite and boolean in PostgreSQL.
 *
 * The data layer is written once against `Tables` (the PostgreSQL types): both
 * dialects' rows have the same TypeScript types, which the check at the bottom of this
 * file holds at compile time.
 *
 * Adding a table or a column (see also the README's "Adding a table"):
 *   1. write it in both dialects in the db/schema/*.ts file of its domain, and add
 *      the pair to `sqliteSchema` and `pgSchema` below (the type check fails until
 *      both agree);
 *   2. `npm run db:generate -w @vmkit/control-plane` writes a migration for each
 *      dialect (control-plane/drizzle for SQLite, control-plane/drizzle-pg for
 *      PostgreSQL); start-up applies them;
 *   3. test/db/schema-parity.test.ts checks the two definitions name the same
 *      columns and indexes; test/db/data-layer.test.ts runs queries on both.
 */
import {
  pgApiKeys,
  pgDashboardSessions,
  pgSshKeys,
  pgWorkspaces,
  sqliteApiKeys,
  sqliteDashboardSessions,
  sqliteSshKeys,
  sqliteWorkspaces,
} from './schema/accounts.ts';
import { pgControlPlanes, pgMcpSessions, sqliteControlPlanes, sqliteMcpSessions } from './schema/cluster.ts';
import { pgDeploySteps, pgDeploys, pgScans, sqliteDeploySteps, sqliteDeploys, sqliteScans } from './schema/delivery.ts';
import {
  pgAgents,
  pgCommands,
  pgEnrollmentTokens,
  pgHardenFollowUps,
  pgInstances,
  sqliteAgents,
  sqliteCommands,
  sqliteEnrollmentTokens,
  sqliteHardenFollowUps,
  sqliteInstances,
} from './schema/fleet.ts';
import {
  pgDnsRecords,
  pgEnvironments,
  pgRepos,
  pgWorkspaceProviders,
  sqliteDnsRecords,
  sqliteEnvironments,
  sqliteRepos,
  sqliteWorkspaceProviders,
} from './schema/projects.ts';
import { pgAuditLog, pgShellSessions, sqliteAuditLog, sqliteShellSessions } from './schema/records.ts';
import { pgDeployKeys, pgSigningKeys, sqliteDeployKeys, sqliteSigningKeys } from './schema/keys.ts';
import { pgRateLimits, sqliteRateLimits } from './schema/limits.ts';
import { pgAgentRolloutTargets, pgAgentRollouts, sqliteAgentRolloutTargets, sqliteAgentRollouts } from './schema/rollouts.ts';

export const sqliteSchema = {
  workspaces: sqliteWorkspaces,
  apiKeys: sqliteApiKeys,
  sshKeys: sqliteSshKeys,
  dashboardSessions: sqliteDashboardSessions,
  repos: sqliteRepos,
  environments: sqliteEnvironments,
  workspaceProviders: sqliteWorkspaceProviders,
  dnsRecords: sqliteDnsRecords,
  instances: sqliteInstances,
  agents: sqliteAgents,
  enrollmentTokens: sqliteEnrollmentTokens,
  commands: sqliteCommands,
  hardenFollowUps: sqliteHardenFollowUps,
  scans: sqliteScans,
  deploys: sqliteDeploys,
  deploySteps: sqliteDeploySteps,
  shellSessions: sqliteShellSessions,
  auditLog: sqliteAuditLog,
  agentRollouts: sqliteAgentRollouts,
  agentRolloutTargets: sqliteAgentRolloutTargets,
  signingKeys: sqliteSigningKeys,
  deployKeys: sqliteDeployKeys,
  rateLimits: sqliteRateLimits,
  controlPlanes: sqliteControlPlanes,
  mcpSessions: sqliteMcpSessions,
};

export const pgSchema = {
  workspaces: pgWorkspaces,
  apiKeys: pgApiKeys,
  sshKeys: pgSshKeys,
  dashboardSessions: pgDashboardSessions,
  repos: pgRepos,
  environments: pgEnvironments,
  workspaceProviders: pgWorkspaceProviders,
  dnsRecords: pgDnsRecords,
  instances: pgInstances,
  agents: pgAgents,
  enrollmentTokens: pgEnrollmentTokens,
  commands: pgCommands,
  hardenFollowUps: pgHardenFollowUps,
  scans: pgScans,
  deploys: pgDeploys,
  deploySteps: pgDeploySteps,
  shellSessions: pgShellSessions,
  auditLog: pgAuditLog,
  agentRollouts: pgAgentRollouts,
  agentRolloutTargets: pgAgentRolloutTargets,
  signingKeys: pgSigningKeys,
  deployKeys: pgDeployKeys,
  rateLimits: pgRateLimits,
  controlPlanes: pgControlPlanes,
  mcpSessions: pgMcpSessions,
};

/** The tables the data layer queries, typed as PostgreSQL's (the SQLite ones have the same row types). */
export type Tables = typeof pgSchema;
export type TableName = keyof Tables;
/** A row of a table as both dialects read it. */
export type Row<K extends TableName> = Tables[K]['$inferSelect'];

// Compile-time check: every table has the same row and insert types in both dialects.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Parity = {
  [K in TableName]: Same<(typeof sqliteSchema)[K]['$inferSelect'], Tables[K]['$inferSelect']> extends true
    ? Same<(typeof sqliteSchema)[K]['$inferInsert'], Tables[K]['$inferInsert']>
    : false;
};
type SchemaMismatch = { [K in TableName as Parity[K] extends true ? never : K]: Parity[K] };
/** Names the table whose two definitions disagree, when one does. */
export const schemaParity: { [K in keyof SchemaMismatch]: never } = {};

/**
 * Scans of repos and deploys with their steps.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  index as pgIndex,
  integer as pgInteger,
  json,
  pgTable,
  text as pgText,
  uniqueIndex as pgUniqueIndex,
} from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { pgWorkspaces, sqliteWorkspaces } from './accounts.ts';
import { pgInstances, sqliteInstances } from './fleet.ts';
import { pgEnvironments, pgRepos, sqliteEnvironments, sqliteRepos } from './projects.ts';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteScans = sqliteTable(
  'scans',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    repoId: text('repo_id').references(() => sqliteRepos.id, { onDelete: 'set null' }),
    /** owner/name as asked, kept even if the repo row goes away. */
    repo: text('repo').notNull(),
    /** running | succeeded | failed */
    status: text('status').notNull(),
    language: text('language'),
    framework: text('framework'),
    buildpack: text('buildpack'),
    procfileDetected: integer('procfile_detected', { mode: 'boolean' }),
    dockerfileDetected: integer('dockerfile_detected', { mode: 'boolean' }),
    /** Everything else the scanner found (evidence, commit sha, ...). */
    details: text('details', { mode: 'json' }).$type<Record<string, unknown>>(),
    errorKey: text('error_key'),
    createdAt: integer('created_at').notNull(),
    finishedAt: integer('finished_at'),
  },
  (t) => [index('scans_workspace_idx').on(t.workspaceId, t.id)],
);
export const pgScans = pgTable(
  'scans',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    repoId: pgText('repo_id').references(() => pgRepos.id, { onDelete: 'set null' }),
    repo: pgText('repo').notNull(),
    status: pgText('status').notNull(),
    language: pgText('language'),
    framework: pgText('framework'),
    buildpack: pgText('buildpack'),
    procfileDetected: boolean('procfile_detected'),
    dockerfileDetected: boolean('dockerfile_detected'),
    details: json('details').$type<Record<string, unknown>>(),
    errorKey: pgText('error_key'),
    createdAt: ms('created_at').notNull(),
    finishedAt: ms('finished_at'),
  },
  (t) => [pgIndex('scans_workspace_idx').on(t.workspaceId, t.id)],
);

export const sqliteDeploys = sqliteTable(
  'deploys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
    repoId: text('repo_id')
      .notNull()
      .references(() => sqliteRepos.id, { onDelete: 'cascade' }),
    environmentId: text('environment_id')
      .notNull()
      .references(() => sqliteEnvironments.id, { onDelete: 'cascade' }),
    sha: text('sha'),
    /** scaffolding_pr_open | running | succeeded | failed */
    status: text('status').notNull(),
    /** Name of the step the state machine is in (resumed after a restart). */
    currentStep: text('current_step'),
    instanceId: text('instance_id').references(() => sqliteInstances.id, { onDelete: 'set null' }),
    prUrl: text('pr_url'),
    appUrl: text('app_url'),
    runUrl: text('run_url'),
    errorKey: text('error_key'),
    errorMessage: text('error_message'),
    /** The step a failed deploy stopped at. */
    failedStep: text('failed_step'),
    /** The scaffolding pull request's number (first phase), to follow its state. */
    prNumber: integer('pr_number'),
    /** The GitHub Actions run dispatched for this deploy, once known. */
    runId: integer('run_id'),
    /** When the workflow was dispatched: a resumed deploy looks for its run among those created after. */
    dispatchedAt: integer('dispatched_at'),
    /** The API key that asked for the deploy (no foreign key: the audit trail outlives keys). */
    keyId: text('key_id'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    /** The control-plane process (node id) driving this running deploy; null = nobody (free to claim). */
    leaseOwner: text('lease_owner'),
    /** Until when the owner's lease holds; after it, any process may claim the deploy. */
    leaseExpiresAt: integer('lease_expires_at'),
    /** Goes up by one at every claim: a write fenced with an older one is refused. */
    leaseGeneration: integer('lease_generation').notNull().default(0),
  },
  (t) => [
    index('deploys_workspace_idx').on(t.workspaceId, t.id),
    index('deploys_status_idx').on(t.status),
    index('deploys_environment_idx').on(t.environmentId, t.id),
    // One deploy at a time per environment, held by the database rather than by one process's memory.
    uniqueIndex('deploys_one_running_per_environment').on(t.environmentId).where(sql`status = 'running'`),
  ],
);
export const pgDeploys = pgTable(
  'deploys',
  {
    id: pgText('id').primaryKey(),
    workspaceId: pgText('workspace_id')
      .notNull()
      .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
    repoId: pgText('repo_id')
      .notNull()
      .references(() => pgRepos.id, { onDelete: 'cascade' }),
    environmentId: pgText('environment_id')
      .notNull()
      .references(() => pgEnvironments.id, { onDelete: 'cascade' }),
    sha: pgText('sha'),
    status: pgText('status').notNull(),
    currentStep: pgText('current_step'),
    instanceId: pgText('instance_id').references(() => pgInstances.id, { onDelete: 'set null' }),
    prUrl: pgText('pr_url'),
    appUrl: pgText('app_url'),
    runUrl: pgText('run_url'),
    errorKey: pgText('error_key'),
    errorMessage: pgText('error_message'),
    failedStep: pgText('failed_step'),
    prNumber: pgInteger('pr_number'),
    /** GitHub run ids are past 2^31 already: bigint. */
    runId: bigint('run_id', { mode: 'number' }),
    dispatchedAt: ms('dispatched_at'),
    keyId: pgText('key_id'),
    createdAt: ms('created_at').notNull(),
    updatedAt: ms('updated_at').notNull(),
    leaseOwner: pgText('lease_owner'),
    leaseExpiresAt: ms('lease_expires_at'),
    leaseGeneration: pgInteger('lease_generation').notNull().default(0),
  },
  (t) => [
    pgIndex('deploys_workspace_idx').on(t.workspaceId, t.id),
    pgIndex('deploys_status_idx').on(t.status),
    pgIndex('deploys_environment_idx').on(t.environmentId, t.id),
    pgUniqueIndex('deploys_one_running_per_environment').on(t.environmentId).where(sql`status = 'running'`),
  ],
);

export const sqliteDeploySteps = sqliteTable(
  'deploy_steps',
  {
    id: text('id').primaryKey(),
    deployId: text('deploy_id')
      .notNull()
      .references(() => sqliteDeploys.id, { onDelete: 'cascade' }),
    /** Order within the deploy, from 0. */
    seq: integer('seq').notNull(),
    name: text('name').notNull(),
    /** pending | running | succeeded | failed | skipped */
    state: text('state').notNull(),
    detail: text('detail', { mode: 'json' }).$type<Record<string, unknown>>(),
    errorKey: text('error_key'),
    errorMessage: text('error_message'),
    /** How many times the step was started (a resumed or retried step counts again). */
    attempts: integer('attempts').notNull().default(0),
    startedAt: integer('started_at'),
    finishedAt: integer('finished_at'),
  },
  (t) => [uniqueIndex('deploy_steps_deploy_seq_unique').on(t.deployId, t.seq)],
);
export const pgDeploySteps = pgTable(
  'deploy_steps',
  {
    id: pgText('id').primaryKey(),
    deployId: pgText('deploy_id')
      .notNull()
      .references(() => pgDeploys.id, { onDelete: 'cascade' }),
    seq: pgInteger('seq').notNull(),
    name: pgText('name').notNull(),
    state: pgText('state').notNull(),
    detail: json('detail').$type<Record<string, unknown>>(),
    errorKey: pgText('error_key'),
    errorMessage: pgText('error_message'),
    attempts: pgInteger('attempts').notNull().default(0),
    startedAt: ms('started_at'),
    finishedAt: ms('finished_at'),
  },
  (t) => [pgUniqueIndex('deploy_steps_deploy_seq_unique').on(t.deployId, t.seq)],
);

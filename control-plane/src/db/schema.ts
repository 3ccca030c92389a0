/**
 * The drizzle schema of the control plane (SQLite dialect). Ids are prefixed ULIDs
 * from @vmkit/protocol `newId`, times are integer milliseconds since the epoch, JSON
 * columns are text. Change this file, then run `npm run db:generate -w @vmkit/control-plane`
 * (drizzle-kit) to add a migration under control-plane/drizzle/; start-up applies it.
 */
import { sql } from 'drizzle-orm';
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

const createdAt = () => integer('created_at').notNull();

export const workspaces = sqliteTable('workspaces', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  createdAt: createdAt(),
});

export const apiKeys = sqliteTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    /** sha-256 (hex) of the whole secret; the secret itself is never stored. */
    hash: text('hash').notNull(),
    /** First characters of the secret, for people to recognise a key. */
    prefix: text('prefix').notNull(),
    scopes: text('scopes', { mode: 'json' }).$type<string[]>().notNull(),
    expiresAt: integer('expires_at'),
    revokedAt: integer('revoked_at'),
    createdAt: createdAt(),
    lastUsedAt: integer('last_used_at'),
  },
  (t) => [uniqueIndex('api_keys_hash_unique').on(t.hash), index('api_keys_workspace_idx').on(t.workspaceId)],
);

export const repos = sqliteTable(
  'repos',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    owner: text('owner').notNull(),
    name: text('name').notNull(),
    createdAt: createdAt(),
  },
  // GitHub names are case-insensitive: "Badri/App" and "badri/app" are one repo.
  (t) => [uniqueIndex('repos_workspace_full_name_unique').on(t.workspaceId, sql`lower(${t.owner})`, sql`lower(${t.name})`)],
);

export const environments = sqliteTable(
  'environments',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    repoId: text('repo_id')
      .notNull()
      .references(() => repos.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('environments_repo_name_unique').on(t.repoId, t.name)],
);

export const instances = sqliteTable(
  'instances',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    environmentId: text('environment_id').references(() => environments.id, { onDelete: 'set null' }),
    /** Compute provider name: `local`, `hetzner`, ... */
    provider: text('provider').notNull(),
    /** awaiting_agent | provisioning | running | stopped | failed | destroyed */
    status: text('status').notNull(),
    /** Why the instance is in its status, when that needs saying (e.g. why it `failed`). */
    statusReason: text('status_reason'),
    sshHost: text('ssh_host'),
    sshPort: integer('ssh_port'),
    hardenedAt: integer('hardened_at'),
    createdAt: createdAt(),
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

export const agents = sqliteTable(
  'agents',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    /** base64url of the raw Ed25519 public key. */
    publicKey: text('public_key').notNull(),
    /** connected | disconnected | revoked */
    state: text('state').notNull(),
    connectedAt: integer('connected_at'),
    lastSeen: integer('last_seen'),
    agentVersion: text('agent_version'),
    hostname: text('hostname'),
    os: text('os'),
    /** Key ids of the control-plane signing keys this agent has pinned (rotation). */
    pinnedKeyIds: text('pinned_key_ids', { mode: 'json' }).$type<string[]>(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('agents_instance_unique').on(t.instanceId)],
);

export const enrollmentTokens = sqliteTable(
  'enrollment_tokens',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    /** sha-256 (hex) of the token. */
    hash: text('hash').notNull(),
    instanceId: text('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    expiresAt: integer('expires_at').notNull(),
    usedAt: integer('used_at'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('enrollment_tokens_hash_unique').on(t.hash)],
);

export const commands = sqliteTable(
  'commands',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    agentId: text('agent_id')
      .notNull()
      .references(() => agents.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    type: text('type').notNull(),
    /** queued | sent | acked | running | succeeded | failed | expired | timed_out */
    state: text('state').notNull(),
    /** The signed envelope as sent. */
    envelope: text('envelope', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    /** base64url Ed25519 signature over the envelope. */
    signature: text('signature'),
    /** The envelope's expires_at, in milliseconds. */
    expiresAt: integer('expires_at'),
    result: text('result', { mode: 'json' }).$type<Record<string, unknown>>(),
    errorKey: text('error_key'),
    createdAt: createdAt(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [index('commands_agent_state_idx').on(t.agentId, t.state), index('commands_instance_idx').on(t.instanceId)],
);

/**
 * What the control plane still owes a harden command once the agent answers: the
 * outside SSH check, `hardened_at` and the audit row. Written when the command is
 * stored, so a restart finds the work a killed process left undone.
 */
export const hardenFollowUps = sqliteTable(
  'harden_follow_ups',
  {
    commandId: text('command_id')
      .primaryKey()
      .references(() => commands.id, { onDelete: 'cascade' }),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    /** The API key that asked, for the audit row. */
    keyId: text('key_id'),
    /** owed | done */
    state: text('state').notNull(),
    /** harden_vm's answer (verification included), or `{error, message}`. */
    answer: text('answer', { mode: 'json' }).$type<Record<string, unknown>>(),
    createdAt: createdAt(),
    finishedAt: integer('finished_at'),
  },
  (t) => [index('harden_follow_ups_state_idx').on(t.state)],
);

export const scans = sqliteTable(
  'scans',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    repoId: text('repo_id').references(() => repos.id, { onDelete: 'set null' }),
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
    createdAt: createdAt(),
    finishedAt: integer('finished_at'),
  },
  (t) => [index('scans_workspace_idx').on(t.workspaceId, t.id)],
);

export const deploys = sqliteTable(
  'deploys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    repoId: text('repo_id')
      .notNull()
      .references(() => repos.id, { onDelete: 'cascade' }),
    environmentId: text('environment_id')
      .notNull()
      .references(() => environments.id, { onDelete: 'cascade' }),
    sha: text('sha'),
    /** scaffolding_pr_open | running | succeeded | failed */
    status: text('status').notNull(),
    /** Name of the step the state machine is in (resumed after a restart). */
    currentStep: text('current_step'),
    instanceId: text('instance_id').references(() => instances.id, { onDelete: 'set null' }),
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
    createdAt: createdAt(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [
    index('deploys_workspace_idx').on(t.workspaceId, t.id),
    index('deploys_status_idx').on(t.status),
    index('deploys_environment_idx').on(t.environmentId, t.id),
    // One deploy at a time per environment, held by the database rather than by one process's memory.
    uniqueIndex('deploys_one_running_per_environment').on(t.environmentId).where(sql`status = 'running'`),
  ],
);

export const deploySteps = sqliteTable(
  'deploy_steps',
  {
    id: text('id').primaryKey(),
    deployId: text('deploy_id')
      .notNull()
      .references(() => deploys.id, { onDelete: 'cascade' }),
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

/**
 * Per-workspace provider settings (`PUT /api/workspace/{compute,dns,github}`): one row
 * per workspace and kind. The secret part (API token, App private key) is sealed with
 * the control plane's SecretBox (AES-256-GCM) and never returned; the API shows only
 * its fingerprint and when it was set.
 */
export const workspaceProviders = sqliteTable(
  'workspace_providers',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
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
    createdAt: createdAt(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [uniqueIndex('workspace_providers_kind_unique').on(t.workspaceId, t.kind)],
);

/** The `local` DNS provider's records (the control plane's own record book), listed by the API. */
export const dnsRecords = sqliteTable(
  'dns_records',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    zone: text('zone').notNull(),
    /** Fully qualified, lowercase. */
    name: text('name').notNull(),
    /** A | AAAA */
    type: text('type').notNull(),
    content: text('content').notNull(),
    ttl: integer('ttl').notNull(),
    /** VMKit's owner (the environment id). */
    owner: text('owner'),
    createdAt: createdAt(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [uniqueIndex('dns_records_name_type_unique').on(t.workspaceId, t.name, t.type)],
);

export const shellSessions = sqliteTable(
  'shell_sessions',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    instanceId: text('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    keyId: text('key_id').references(() => apiKeys.id, { onDelete: 'set null' }),
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
    /** Why it ended: exit, idle_timeout, max_length, key_revoked, agent_disconnected, ... */
    endReason: text('end_reason'),
    startedAt: integer('started_at').notNull(),
    endedAt: integer('ended_at'),
  },
  (t) => [index('shell_sessions_instance_idx').on(t.instanceId), index('shell_sessions_workspace_idx').on(t.workspaceId, t.id)],
);

/** Operators' SSH public keys, registered on an API key, for the SSH gateway (`ssh -p 2222 <instance>@<cp>`). */
export const sshKeys = sqliteTable(
  'ssh_keys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    keyId: text('key_id')
      .notNull()
      .references(() => apiKeys.id, { onDelete: 'cascade' }),
    /** The OpenSSH public key line (type, base64, optional comment). */
    publicKey: text('public_key').notNull(),
    /** `SHA256:...` as OpenSSH prints it; one key belongs to one API key. */
    fingerprint: text('fingerprint').notNull(),
    comment: text('comment'),
    createdAt: createdAt(),
    lastUsedAt: integer('last_used_at'),
  },
  (t) => [uniqueIndex('ssh_keys_fingerprint_unique').on(t.fingerprint), index('ssh_keys_key_idx').on(t.keyId)],
);

export const auditLog = sqliteTable(
  'audit_log',
  {
    id: text('id').primaryKey(),
    at: integer('at').notNull(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
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

/**
 * Dashboard sign-ins: an API key exchanged for a cookie. Only the sha-256 of the
 * cookie's secret is stored; the key is re-checked (revoked, expired) on every request.
 */
export const dashboardSessions = sqliteTable(
  'dashboard_sessions',
  {
    /** sha-256 (hex) of the cookie's secret. */
    hash: text('hash').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    keyId: text('key_id')
      .notNull()
      .references(() => apiKeys.id, { onDelete: 'cascade' }),
    createdAt: createdAt(),
    /** The session's own end, whatever the key's expiry (the key's earlier end wins). */
    expiresAt: integer('expires_at').notNull(),
    lastSeenAt: integer('last_seen_at'),
  },
  (t) => [index('dashboard_sessions_key_idx').on(t.keyId)],
);

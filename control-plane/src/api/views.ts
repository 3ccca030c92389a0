/**
 * JSON shapes of the REST resources (snake_case, ISO 8601 times) and the functions
 * that make them from rows. The MCP server and other routes reuse these.
 */
import { z } from 'zod';
import type { AgentRow } from '../db/agents.ts';
import type { ApiKeyRow } from '../db/api-keys.ts';
import type { AuditRow } from '../db/audit.ts';
import type { DeployRow, DeployStepRow } from '../db/deploys.ts';
import type { EnvironmentRow } from '../db/environments.ts';
import type { InstanceRow } from '../db/instances.ts';
import type { RepoRow } from '../db/repos.ts';
import type { ScanRow } from '../db/scans.ts';

export function iso(ms: number): string;
export function iso(ms: number | null): string | null;
export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

const time = z.string().describe('ISO 8601 time');
const maybeTime = time.nullable();

/** Path parameter `{id}`: any short string, so an unknown or malformed id is a 404, not a 400. */
export const IdParams = z.object({ id: z.string().min(1).max(128) });

export const ApiKeyView = z.object({
  id: z.string(),
  name: z.string(),
  prefix: z.string().describe('First characters of the secret, to recognise the key'),
  scopes: z.array(z.string()),
  created_at: time,
  expires_at: maybeTime,
  last_used_at: maybeTime,
  revoked_at: maybeTime,
});
export function apiKeyView(k: ApiKeyRow): z.output<typeof ApiKeyView> {
  return {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    scopes: k.scopes,
    created_at: iso(k.createdAt),
    expires_at: iso(k.expiresAt),
    last_used_at: iso(k.lastUsedAt),
    revoked_at: iso(k.revokedAt),
  };
}

export const RepoView = z.object({
  id: z.string(),
  repo: z.string().describe('owner/name'),
  owner: z.string(),
  name: z.string(),
  created_at: time,
});
export function repoView(r: RepoRow): z.output<typeof RepoView> {
  return { id: r.id, repo: `${r.owner}/${r.name}`, owner: r.owner, name: r.name, created_at: iso(r.createdAt) };
}

export const EnvironmentView = z.object({ id: z.string(), repo_id: z.string(), name: z.string(), created_at: time });
export function environmentView(e: EnvironmentRow): z.output<typeof EnvironmentView> {
  return { id: e.id, repo_id: e.repoId, name: e.name, created_at: iso(e.createdAt) };
}

export const AgentView = z.object({
  id: z.string(),
  state: z.string().describe('connected | disconnected | revoked'),
  connected_at: maybeTime,
  last_seen: maybeTime,
  agent_version: z.string().nullable(),
  platform: z.string().nullable().describe('Release platform the agent reported (linux-x64, ...); null for agents older than self-update'),
  hostname: z.string().nullable(),
  os: z.string().nullable(),
});
export const InstanceView = z.object({
  id: z.string(),
  name: z.string(),
  status: z.string().describe('awaiting_agent | provisioning | running | stopped | failed | destroyed'),
  status_reason: z.string().nullable().describe('Why the instance is in its status, when that needs saying (e.g. why it failed)'),
  provider: z.string(),
  environment_id: z.string().nullable(),
  ssh: z.object({ host: z.string(), port: z.number().int() }).nullable(),
  hardened_at: maybeTime,
  ssh_host_keys: z
    .array(z.string())
    .describe("The VM's SSH host public keys (OpenSSH lines) its agent reported at enrollment; deploys pin them in known_hosts. Empty until then."),
  created_at: time,
  updated_at: time,
  agent: AgentView.nullable(),
});
export function instanceView(i: InstanceRow, a: AgentRow | null): z.output<typeof InstanceView> {
  return {
    id: i.id,
    name: i.name,
    status: i.status,
    status_reason: i.statusReason,
    provider: i.provider,
    environment_id: i.environmentId,
    ssh: i.sshHost !== null ? { host: i.sshHost, port: i.sshPort ?? 22 } : null,
    hardened_at: iso(i.hardenedAt),
    ssh_host_keys: i.sshHostKeys ?? [],
    created_at: iso(i.createdAt),
    updated_at: iso(i.updatedAt),
    agent: a
      ? {
          id: a.id,
          state: a.state,
          connected_at: iso(a.connectedAt),
          last_seen: iso(a.lastSeen),
          agent_version: a.agentVersion,
          platform: a.platform,
          hostname: a.hostname,
          os: a.os,
        }
      : null,
  };
}

/** The contract's scan_repo fields, plus the record's state. */
export const ScanView = z.object({
  scan_id: z.string(),
  repo: z.string(),
  status: z.string().describe('running | succeeded | failed'),
  language: z.string().nullable(),
  framework: z.string().nullable(),
  buildpack: z.string().nullable(),
  procfile_detected: z.boolean().nullable(),
  dockerfile_detected: z.boolean().nullable(),
  // Additions of the scan service (issue 7), lifted out of `details`; null until a scan succeeds.
  sha: z.string().nullable().describe('The commit that was scanned'),
  default_branch: z.string().nullable(),
  root: z.string().nullable().describe("The app's directory in the repository ('.' = root)"),
  evidence: z.array(z.object({ file: z.string(), reason: z.string() })).nullable().describe('Which files decided, and why'),
  confidence: z.number().min(0).max(1).nullable(),
  reason: z.string().nullable().describe('Why this root and this classification'),
  classifier: z.string().nullable().describe('rules | model | none'),
  buildpack_note: z.string().nullable(),
  cached: z.boolean().optional().describe('POST only: true when answered from the stored scan of the same commit'),
  details: z.record(z.string(), z.unknown()).nullable(),
  error_key: z.string().nullable(),
  created_at: time,
  finished_at: maybeTime,
});
function detail<T>(s: ScanRow, key: string, ok: (v: unknown) => v is T): T | null {
  const v = s.details?.[key];
  return ok(v) ? v : null;
}
const isString = (v: unknown): v is string => typeof v === 'string';
const isNumber = (v: unknown): v is number => typeof v === 'number';
const isEvidence = (v: unknown): v is { file: string; reason: string }[] =>
  Array.isArray(v) && v.every((e) => typeof (e as { file?: unknown }).file === 'string' && typeof (e as { reason?: unknown }).reason === 'string');
export function scanView(s: ScanRow): z.output<typeof ScanView> {
  return {
    sha: detail(s, 'sha', isString),
    default_branch: detail(s, 'default_branch', isString),
    root: detail(s, 'root', isString),
    evidence: detail(s, 'evidence', isEvidence),
    confidence: detail(s, 'confidence', isNumber),
    reason: detail(s, 'reason', isString),
    classifier: detail(s, 'classifier', isString),
    buildpack_note: detail(s, 'buildpack_note', isString),
    scan_id: s.id,
    repo: s.repo,
    status: s.status,
    language: s.language,
    framework: s.framework,
    buildpack: s.buildpack,
    procfile_detected: s.procfileDetected,
    dockerfile_detected: s.dockerfileDetected,
    details: s.details,
    error_key: s.errorKey,
    created_at: iso(s.createdAt),
    finished_at: iso(s.finishedAt),
  };
}

export const DeployStepView = z.object({
  seq: z.number().int(),
  name: z.string().describe('scaffolding | provisioning | waiting_for_agent | hardening | dns | dispatching | running_workflow'),
  state: z.string().describe('pending | running | succeeded | failed | skipped'),
  attempts: z.number().int().describe('How many times the step was started (a resumed or retried step counts again)'),
  detail: z.record(z.string(), z.unknown()).nullable(),
  error_key: z.string().nullable(),
  error_message: z.string().nullable(),
  started_at: maybeTime,
  finished_at: maybeTime,
});
/** The contract's deploy fields, plus the record's progress. */
export const DeployView = z.object({
  deploy_id: z.string().nullable().describe('null while the answer is the scaffolding pull request (as the contract says); see id'),
  id: z.string().describe("The record's id, also for a scaffolding answer"),
  status: z.string().describe('scaffolding_pr_open | running | succeeded | failed'),
  pr_url: z.string().nullable(),
  app_url: z.string().nullable(),
  run_url: z.string().nullable(),
  instance_id: z.string().nullable(),
  repo: z.string().describe('owner/name'),
  dest: z.string().describe('The environment name'),
  repo_id: z.string(),
  environment_id: z.string(),
  sha: z.string().nullable(),
  current_step: z.string().nullable(),
  failed_step: z.string().nullable().describe('The step a failed deploy stopped at'),
  error_key: z.string().nullable(),
  error_message: z.string().nullable(),
  steps: z.array(DeployStepView),
  created_at: time,
  updated_at: time,
});
export function deployView(d: DeployRow, steps: DeployStepRow[], names: { repo: string; dest: string }): z.output<typeof DeployView> {
  return {
    deploy_id: d.status === 'scaffolding_pr_open' ? null : d.id,
    id: d.id,
    status: d.status,
    pr_url: d.prUrl,
    app_url: d.appUrl,
    run_url: d.runUrl,
    instance_id: d.instanceId,
    repo: names.repo,
    dest: names.dest,
    repo_id: d.repoId,
    environment_id: d.environmentId,
    sha: d.sha,
    current_step: d.currentStep,
    failed_step: d.failedStep,
    error_key: d.errorKey,
    error_message: d.errorMessage,
    steps: steps.map((s) => ({
      seq: s.seq,
      name: s.name,
      state: s.state,
      attempts: s.attempts,
      detail: s.detail,
      error_key: s.errorKey,
      error_message: s.errorMessage,
      started_at: iso(s.startedAt),
      finished_at: iso(s.finishedAt),
    })),
    created_at: iso(d.createdAt),
    updated_at: iso(d.updatedAt),
  };
}

export const AuditView = z.object({
  id: z.string(),
  at: time,
  key_id: z.string().nullable(),
  channel: z.string(),
  tool: z.string().nullable(),
  action: z.string(),
  method: z.string().nullable(),
  route: z.string().nullable(),
  target_ids: z.record(z.string(), z.string()).nullable(),
  status: z.number().int(),
  error_key: z.string().nullable(),
  request_id: z.string().nullable(),
  client_address: z.string().nullable(),
});
export function auditView(a: AuditRow): z.output<typeof AuditView> {
  return {
    id: a.id,
    at: iso(a.at),
    key_id: a.keyId,
    channel: a.channel,
    tool: a.tool,
    action: a.action,
    method: a.method,
    route: a.route,
    target_ids: a.targetIds,
    status: a.status,
    error_key: a.errorKey,
    request_id: a.requestId,
    client_address: a.clientAddress,
  };
}

/** Every list answers `{ items: [...] }` (plus `next_cursor` when paginated). */
export function listOf<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item) });
}

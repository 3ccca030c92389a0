/** The REST shapes the dashboard reads (see control-plane/src/api/views.ts). */

export interface Session {
  workspace_id: string;
  key: { id: string; name: string; prefix: string; scopes: string[]; expires_at: string | null };
  session: { expires_at: string; csrf_token: string } | null;
}

export interface Agent {
  id: string;
  state: string;
  connected_at: string | null;
  last_seen: string | null;
  agent_version: string | null;
  hostname: string | null;
  os: string | null;
}

export interface Instance {
  id: string;
  name: string;
  status: string;
  status_reason: string | null;
  provider: string;
  environment_id: string | null;
  ssh: { host: string; port: number } | null;
  hardened_at: string | null;
  created_at: string;
  updated_at: string;
  agent: Agent | null;
}

export interface HardenStep {
  seq: number;
  step: string;
  state: string;
  message?: string;
}

export interface HardenEvent {
  type: 'harden';
  instance_id: string;
  command_id: string;
  state: string;
  progress: HardenStep[];
  result: { status?: string } | null;
  error: { error?: string; message?: string } | null;
}

export interface InstanceEvent {
  type: 'instance';
  instance: Instance;
}

export type LiveEvent = HardenEvent | InstanceEvent;

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface AuditEntry {
  id: string;
  at: string;
  key_id: string | null;
  channel: string;
  tool: string | null;
  action: string;
  method: string | null;
  route: string | null;
  target_ids: Record<string, string> | null;
  status: number;
  error_key: string | null;
}

export interface CommandEntry {
  id: string;
  type: string;
  state: string;
  created_at: string;
  updated_at: string;
  result: Record<string, unknown> | null;
  error_key: string | null;
}

export const SCOPES = ['repos:read', 'repos:write', 'instances:read', 'instances:write', 'instances:harden', 'deploys:read', 'deploys:write', 'shell', 'admin'] as const;

export interface Repo {
  id: string;
  repo: string;
  owner: string;
  name: string;
  created_at: string;
}

export interface Environment {
  id: string;
  repo_id: string;
  name: string;
  created_at: string;
}

export interface Scan {
  scan_id: string;
  repo: string;
  status: string;
  language: string | null;
  framework: string | null;
  buildpack: string | null;
  procfile_detected: boolean | null;
  dockerfile_detected: boolean | null;
  sha: string | null;
  default_branch: string | null;
  root: string | null;
  evidence: { file: string; reason: string }[] | null;
  confidence: number | null;
  reason: string | null;
  classifier: string | null;
  buildpack_note: string | null;
  error_key: string | null;
  created_at: string;
  finished_at: string | null;
}

export interface DeployStep {
  seq: number;
  name: string;
  state: string;
  attempts: number;
  detail: Record<string, unknown> | null;
  error_key: string | null;
  error_message: string | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface Deploy {
  id: string;
  deploy_id: string | null;
  status: string;
  pr_url: string | null;
  app_url: string | null;
  run_url: string | null;
  instance_id: string | null;
  repo: string;
  dest: string;
  repo_id: string;
  environment_id: string;
  sha: string | null;
  current_step: string | null;
  failed_step: string | null;
  error_key: string | null;
  error_message: string | null;
  steps: DeployStep[];
  created_at: string;
  updated_at: string;
}

export interface ShellSession {
  id: string;
  instance_id: string;
  key_id: string | null;
  key_name: string | null;
  via: string;
  command: string | null;
  run_as: string | null;
  started_at: string;
  ended_at: string | null;
  duration_ms: number | null;
  exit_code: number | null;
  exit_signal: string | null;
  end_reason: string | null;
  recording_url: string | null;
}

export function hasScope(scopes: readonly string[], needed: string): boolean {
  return scopes.includes('admin') || scopes.includes(needed);
}

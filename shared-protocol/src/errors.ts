import { z } from 'zod';

/**
 * The one registry of error keys shared by the REST API, MCP tools and the agent.
 * Keys marked "contract" come from the public MCP tools reference and must not change.
 */
export interface ErrorSpec {
  readonly status: number;
  readonly message: string;
}

export const ERRORS = {
  // contract
  repo_not_found: { status: 404, message: 'The repository is not connected to this VMKit workspace.' },
  environment_not_found: { status: 404, message: 'The environment does not exist for this repository.' },
  compute_target_missing: { status: 409, message: 'No compute provider is configured in this workspace.' },
  github_app_not_installed: { status: 422, message: 'The GitHub App is not installed on the target repository.' },
  vm_not_provisioned: { status: 404, message: 'No VM is associated with this instance id.' },
  // auth and transport
  unauthorized: { status: 401, message: 'The API key is missing, invalid, expired or revoked.' },
  forbidden: { status: 403, message: 'The API key lacks the scope this action requires.' },
  csrf_token_invalid: { status: 403, message: 'A dashboard request that changes something must carry the session\'s CSRF token.' },
  rate_limited: { status: 429, message: 'Too many requests; retry after the time given in Retry-After.' },
  invalid_request: { status: 400, message: 'The request is not valid.' },
  payload_too_large: { status: 413, message: 'The request body is larger than the server accepts.' },
  unsupported_media_type: { status: 415, message: 'The request body must be application/json.' },
  request_timeout: { status: 408, message: 'The request did not arrive in time.' },
  headers_too_large: { status: 431, message: 'The request line and headers are larger than the server accepts.' },
  not_found: { status: 404, message: 'No such resource.' },
  conflict: { status: 409, message: 'The request conflicts with the current state of the resource.' },
  internal: { status: 500, message: 'The server failed to handle the request.' },
  // resources
  key_not_found: { status: 404, message: 'No API key with this id exists in this workspace.' },
  instance_not_found: { status: 404, message: 'No instance with this id exists in this workspace.' },
  scan_not_found: { status: 404, message: 'No scan with this id exists in this workspace.' },
  command_not_found: { status: 404, message: 'No command with this id exists in this workspace.' },
  deploy_not_found: { status: 404, message: 'No deploy with this id exists in this workspace.' },
  // ops shell doors (WebSocket, ssh gateway) and their records
  instance_name_taken: { status: 409, message: 'A live instance of this workspace already has this name.' },
  shell_session_not_found: { status: 404, message: 'No shell session with this id is visible to this API key.' },
  recording_not_found: { status: 404, message: 'The recording of this shell session is not on the control plane.' },
  recording_failed: { status: 503, message: 'The session recording could not be written, and sessions must be recorded.' },
  ssh_key_invalid: { status: 400, message: 'The SSH public key is not a supported OpenSSH public key line.' },
  ssh_key_exists: { status: 409, message: 'This SSH public key is already registered.' },
  ssh_key_not_found: { status: 404, message: 'No SSH key with this id is registered on this API key.' },
  enrollment_token_invalid: {
    status: 401,
    message: 'The enrollment token is unknown, expired or already used.',
  },
  // repository sources
  github_rate_limited: {
    status: 503,
    message: "GitHub's API rate limit for VMKit is exhausted; retry after the reset time given.",
  },
  github_unavailable: { status: 502, message: 'GitHub could not be reached or refused the configured credentials.' },
  // agents and commands
  agent_not_connected: { status: 409, message: "The instance's vmkit-agent is not connected." },
  agent_refused: { status: 409, message: 'The agent refused the command.' },
  command_timed_out: { status: 504, message: 'The agent did not answer the command in time.' },
  command_failed: { status: 502, message: 'The command failed on the agent.' },
  // results the agent itself produces (result.error.key)
  unsupported_command: { status: 501, message: 'This agent has no executor for the command type.' },
  command_interrupted: {
    status: 502,
    message: 'The agent stopped while running the command; it may have been partly applied.',
  },
  key_rotation_refused: {
    status: 409,
    message: 'The agent refused the key rotation: it would leave no usable pinned key.',
  },
  // agent releases and agent.update
  release_not_found: { status: 404, message: 'No agent release of this version and platform is on this control plane.' },
  release_corrupt: {
    status: 500,
    message: "The agent release's files on the control plane do not match its build manifest.",
  },
  update_refused: {
    status: 409,
    message: 'The agent refused the update: an older version without allow_downgrade, another platform, a URL off its control plane, or an agent not installed as a release.',
  },
  update_download_failed: { status: 502, message: 'The agent could not download the release from its control plane.' },
  update_verification_failed: {
    status: 422,
    message: 'The downloaded release does not match its signed manifest (size, sha-256 or signature); nothing was changed.',
  },
  update_rolled_back: {
    status: 502,
    message: 'The new agent version did not connect in time; the agent went back to the previous version.',
  },
  // fleet rollouts (POST /api/agents/updates)
  rollout_not_found: { status: 404, message: 'No agent rollout with this id exists in this workspace.' },
  rollout_in_progress: { status: 409, message: 'An agent rollout is already running in this workspace; wait for it to end.' },
  rollout_stopped: { status: 409, message: 'The agent rollout stopped when its failures reached max_failures; this agent was not updated.' },
  // ops shell (shell.open and its channel)
  shell_disabled: { status: 409, message: "The instance's agent has the shell disabled in its configuration." },
  shell_user_refused: {
    status: 403,
    message: 'The agent refused to open a shell as this user (unknown user, or root is not allowed).',
  },
  too_many_sessions: { status: 429, message: 'The agent already runs as many shell sessions as its configuration allows.' },
  shell_spawn_failed: { status: 502, message: 'The agent could not start the shell process.' },
  // compute providers
  sandbox_unavailable: {
    status: 503,
    message: 'The local VM sandbox cannot run on this machine (it needs root, Linux namespaces and OpenSSH).',
  },
  provision_failed: { status: 502, message: 'The compute provider failed to create the VM.' },
  // provider clients (compute, DNS, GitHub writes) that deploy drives
  provider_auth_failed: {
    status: 502,
    message: 'The provider refused the configured credentials, or they lack a permission this step needs.',
  },
  provider_rate_limited: { status: 503, message: "The provider's API rate limit is exhausted; retry after the reset time given." },
  provider_unavailable: { status: 502, message: 'The provider could not be reached or failed to answer.' },
  // workspace provider settings (PUT /api/workspace/{compute,dns,github})
  provider_credentials_refused: { status: 422, message: 'The provider refused the credentials or settings given; nothing was saved.' },
  provider_secret_unreadable: {
    status: 409,
    message: "A stored provider secret cannot be opened with this control plane's secret-box key; set it again.",
  },
  dns_record_conflict: {
    status: 409,
    message: 'A DNS record with this name exists and was not created by VMKit; VMKit does not change it.',
  },
  dns_failed: { status: 502, message: 'The DNS provider refused to create or update the record.' },
  github_permission_missing: { status: 422, message: 'The GitHub App lacks a permission this step needs.' },
  github_repo_empty: { status: 409, message: 'The repository is empty; push a first commit to its default branch.' },
  github_conflict: { status: 409, message: 'GitHub refused the change because the file or branch changed meanwhile.' },
  workflow_dispatch_failed: { status: 502, message: 'GitHub refused to start the deploy workflow.' },
  // deploy's own step failures (the message names the step and what to do)
  scaffolding_pr_closed: {
    status: 409,
    message: 'The scaffolding pull request was closed without being merged; call deploy again to open a fresh one.',
  },
  deploy_step_timed_out: { status: 504, message: 'A deploy step did not finish in time.' },
  deploy_step_failed: { status: 502, message: 'A deploy step failed.' },
  workflow_run_failed: { status: 502, message: 'The deploy workflow run failed, was cancelled or timed out.' },
  lockout_risk: {
    status: 409,
    message: 'Hardening was refused because nobody could log in afterwards; nothing was changed.',
  },
  sshd_validation_failed: {
    status: 422,
    message: 'The hardened sshd configuration did not pass `sshd -t`; every file was restored as it was.',
  },
  sshd_effective_check_failed: {
    status: 422,
    message: 'The running sshd would not enforce the hardened settings (checked with `sshd -T`); every file was restored as it was.',
  },
  reload_failed: {
    status: 502,
    message: 'The running sshd could not be reloaded; every file was restored as it was.',
  },
  // Said on the agent WebSocket only (`error.key`, or a refused result's `error.key`);
  // the statuses are what each would be over HTTP.
  overloaded: { status: 503, message: 'The hub is taking too many handshakes; retry after the time given.' },
  shutting_down: { status: 503, message: 'The control plane is shutting down; reconnect after the time given.' },
  connection_replaced: { status: 409, message: 'The agent connected again; this older connection was closed.' },
  handshake_timeout: { status: 408, message: 'The agent did not say hello in time.' },
  handshake_required: { status: 400, message: 'The first message on a connection must be hello.' },
  unexpected_message: { status: 400, message: 'The message is not allowed at this point of the conversation.' },
  // ParseErrorKind: why a frame was refused
  oversized: { status: 413, message: 'The frame is larger than the protocol allows.' },
  malformed_json: { status: 400, message: 'The frame is not UTF-8 JSON.' },
  unsupported_protocol: { status: 400, message: 'The frame names a protocol version this side does not speak.' },
  unknown_type: { status: 400, message: 'The frame has a message type this side does not accept.' },
  schema_violation: { status: 400, message: 'The frame does not match the schema of its message type.' },
  // RefusalReason: why an agent would not run a signed command
  malformed: { status: 400, message: 'The command envelope or its signature is not well formed.' },
  unknown_key: { status: 401, message: 'The command is signed with a key the agent has not pinned.' },
  bad_signature: { status: 401, message: 'The command signature does not verify.' },
  wrong_agent: { status: 403, message: 'The command is addressed to another agent.' },
  not_yet_valid: { status: 401, message: 'The command was issued in the future, beyond the allowed clock skew.' },
  expired: { status: 401, message: 'The command expired before it reached the agent.' },
  replayed: { status: 409, message: 'The command was already accepted once.' },
  // the vmkit CLI's own: the server's answer was not a VMKit answer
  invalid_response: { status: 502, message: 'The server answered with something that is not a VMKit answer.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorKey = keyof typeof ERRORS;

export const ERROR_KEYS = Object.keys(ERRORS) as [ErrorKey, ...ErrorKey[]];

/** A registered error key: what every `error` on the wire (REST, MCP, agent WebSocket) carries. */
export const errorKeySchema = z.enum(ERROR_KEYS);

/**
 * The JSON body every REST error uses: `{"error": key, "message": sentence}`, plus
 * the few additions some errors carry (e.g. a harden failure's `detail`).
 */
export const errorBodySchema = z.looseObject({
  error: errorKeySchema,
  message: z.string().max(4096),
});
export type ErrorBody = { error: ErrorKey; message: string };

export function isErrorKey(value: unknown): value is ErrorKey {
  return typeof value === 'string' && Object.hasOwn(ERRORS, value);
}

export function errorBody(key: ErrorKey, message?: string): ErrorBody {
  return { error: key, message: message ?? ERRORS[key].message };
}

export function errorStatus(key: ErrorKey): number {
  return ERRORS[key].status;
}

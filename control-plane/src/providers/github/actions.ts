/**
 * GitHub Actions: repository secrets (sealed with libsodium, as GitHub requires),
 * workflow dispatch, and following the run it started.
 */
import sodium from 'libsodium-wrappers';
import type { GitHubClient, RepoCoords } from './client.ts';
import { githubMessage } from './client.ts';
import { GitHubError } from './errors.ts';
import { ok, writeFailure } from './failures.ts';

function actionsPath(repo: RepoCoords, rest: string): string {
  return `/repos/${encodeURIComponent(repo.owner)}/${encodeURIComponent(repo.name)}/actions${rest}`;
}

// ---- secrets ---------------------------------------------------------------------------

const SECRET_NAME = /^(?!GITHUB_)[A-Z_][A-Z0-9_]*$/i;

/**
 * `crypto_box_seal` of `value` under a repository's public key (base64, as GitHub hands
 * it out): an anonymous sealed box only the holder of the repository's private key, GitHub,
 * can open. Exported for the tests' fake, which opens it with its private key.
 */
export async function sealSecret(value: string, publicKeyBase64: string): Promise<string> {
  await sodium.ready;
  const key = sodium.from_base64(publicKeyBase64, sodium.base64_variants.ORIGINAL);
  if (key.length !== sodium.crypto_box_PUBLICKEYBYTES) throw new GitHubError('upstream', 'GitHub answered a secrets public key of the wrong length.');
  return sodium.to_base64(sodium.crypto_box_seal(sodium.from_string(value), key), sodium.base64_variants.ORIGINAL);
}

/** Creates or replaces an Actions secret; the value is sealed before it leaves this process. */
export async function putRepoSecret(client: GitHubClient, repo: RepoCoords, name: string, value: string): Promise<'created' | 'updated'> {
  if (!SECRET_NAME.test(name)) throw new GitHubError('validation', `${name} is not a valid Actions secret name (letters, digits, _; not starting with GITHUB_ or a digit).`);
  const perms = { secrets: 'write', metadata: 'read' } as const;
  const keyRes = await client.repoRequest<{ key_id?: string; key?: string }>(repo, 'GET', actionsPath(repo, '/secrets/public-key'), perms);
  if (!ok(keyRes)) throw writeFailure(keyRes, 'read the Actions secrets public key', 'Secrets');
  const { key_id: keyId, key } = keyRes.body;
  if (typeof keyId !== 'string' || typeof key !== 'string') throw new GitHubError('upstream', 'GitHub answered the secrets public key without key_id or key.', keyRes.status);
  const res = await client.repoRequest(repo, 'PUT', actionsPath(repo, `/secrets/${encodeURIComponent(name)}`), perms, {
    encrypted_value: await sealSecret(value, key),
    key_id: keyId,
  });
  if (res.status === 201) return 'created';
  if (res.status === 204) return 'updated';
  throw writeFailure(res, `set the Actions secret ${name}`, 'Secrets');
}

// ---- runs ------------------------------------------------------------------------------

export interface WorkflowRun {
  id: number;
  /** The run name (`run-name:` in the workflow), which carries the deploy id. */
  display_title: string;
  status: string;
  /** success, failure, cancelled, timed_out, ... once status is completed; else null. */
  conclusion: string | null;
  html_url: string;
  created_at: string;
  head_sha: string;
}

export interface WorkflowJob {
  id: number;
  name: string;
  status: string;
  conclusion: string | null;
  html_url: string;
  steps: { name: string; status: string; conclusion: string | null }[];
}

export async function getRun(client: GitHubClient, repo: RepoCoords, runId: number): Promise<WorkflowRun> {
  const res = await client.repoRequest<WorkflowRun>(repo, 'GET', actionsPath(repo, `/runs/${runId}`), { actions: 'read', metadata: 'read' });
  if (res.status === 404) throw new GitHubError('not_found', `${repo.owner}/${repo.name} has no workflow run ${runId}.`, 404);
  if (!ok(res)) throw writeFailure(res, `read workflow run ${runId}`, 'Actions');
  return res.body;
}

export async function listJobs(client: GitHubClient, repo: RepoCoords, runId: number): Promise<WorkflowJob[]> {
  const res = await client.repoRequest<{ jobs?: WorkflowJob[] }>(repo, 'GET', actionsPath(repo, `/runs/${runId}/jobs?per_page=100`), { actions: 'read', metadata: 'read' });
  if (!ok(res) || !Array.isArray(res.body.jobs)) throw writeFailure(res, `list the jobs of run ${runId}`, 'Actions');
  return res.body.jobs;
}

/** The first job that failed and its failing step, to say where a deploy broke. */
export async function failingJob(client: GitHubClient, repo: RepoCoords, runId: number): Promise<{ job: string; step: string | null; html_url: string } | null> {
  const jobs = await listJobs(client, repo, runId);
  const failed = jobs.find((j) => j.conclusion === 'failure' || j.conclusion === 'timed_out' || j.conclusion === 'cancelled');
  if (!failed) return null;
  const step = failed.steps.find((s) => s.conclusion === 'failure' || s.conclusion === 'timed_out' || s.conclusion === 'cancelled');
  return { job: failed.name, step: step?.name ?? null, html_url: failed.html_url };
}

export interface RunOutcome {
  run: WorkflowRun;
  /** Where a failed, cancelled or timed-out run broke; null otherwise. */
  failing: { job: string; step: string | null; html_url: string } | null;
}

/**
 * Follows a run until it completes or `timeoutMs` runs out (then `run.status` is still
 * queued or in_progress: the caller answers `running` and polls later). Polls every
 * `pollMs` (default 5 s: a deploy takes minutes, and each read costs one of the
 * installation's 5,000 requests an hour).
 */
export async function followRun(
  client: GitHubClient,
  repo: RepoCoords,
  runId: number,
  opts: { timeoutMs: number; pollMs?: number; sleep?: (ms: number) => Promise<void>; now?: () => number },
): Promise<RunOutcome> {
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const deadline = now() + opts.timeoutMs;
  for (;;) {
    const run = await getRun(client, repo, runId);
    if (run.status === 'completed') {
      return { run, failing: run.conclusion === 'success' ? null : await failingJob(client, repo, runId) };
    }
    if (now() >= deadline) return { run, failing: null };
    await sleep(opts.pollMs ?? 5_000);
  }
}

/**
 * The run of `workflow` whose run name carries `marker` (the deploy id), among runs
 * started by workflow_dispatch at or after `createdAfter`; null when it is not listed yet.
 */
export async function findRunByName(client: GitHubClient, repo: RepoCoords, workflow: string, marker: string, createdAfter: Date): Promise<WorkflowRun | null> {
  // One second of slack: `created` has second precision and clocks differ.
  const since = new Date(Math.floor(createdAfter.getTime() / 1000) * 1000 - 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const q = new URLSearchParams({ event: 'workflow_dispatch', created: `>=${since}`, per_page: '50' });
  const res = await client.repoRequest<{ workflow_runs?: WorkflowRun[] }>(
    repo,
    'GET',
    actionsPath(repo, `/workflows/${encodeURIComponent(workflow)}/runs?${q.toString()}`),
    { actions: 'read', metadata: 'read' },
  );
  if (!ok(res) || !Array.isArray(res.body.workflow_runs)) throw writeFailure(res, `list the runs of ${workflow}`, 'Actions');
  return res.body.workflow_runs.find((r) => typeof r.display_title === 'string' && r.display_title.includes(marker)) ?? null;
}

// ---- dispatch --------------------------------------------------------------------------

export interface DispatchInput {
  /** The workflow file name (`vmkit-deploy.yml`) or id. */
  workflow: string;
  /** Branch or tag the workflow file is read from: the default branch. */
  ref: string;
  inputs: Record<string, string>;
  /** Carried in the run name (the workflow's `run-name:` uses an input holding it). */
  marker: string;
}

export interface DispatchedRun {
  run_id: number;
  html_url: string;
  /** How the run was found: GitHub said so, or its name was matched. */
  found_by: 'return_run_details' | 'run_name';
}

export interface DispatchOptions {
  /** How long to look for the run when GitHub did not name it; default 60 s. */
  findTimeoutMs?: number;
  /** Between run-list reads; default 2 s. */
  pollMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/**
 * Starts the workflow and names its run. Asks for `return_run_details: true` (GitHub
 * answers 200 with `workflow_run_id`, `run_url`, `html_url`); a server that answers 204,
 * or refuses the field with 422 (older GitHub Enterprise Server), is asked again without
 * it, and the run is then found by the marker in its name among runs of
 * event=workflow_dispatch created since the dispatch.
 */
export async function dispatchWorkflow(client: GitHubClient, repo: RepoCoords, input: DispatchInput, opts: DispatchOptions = {}): Promise<DispatchedRun> {
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const started = new Date(now());
  const path = actionsPath(repo, `/workflows/${encodeURIComponent(input.workflow)}/dispatches`);
  const perms = { actions: 'write', metadata: 'read' } as const;
  const body = { ref: input.ref, inputs: input.inputs };
  let res = await client.repoRequest<{ workflow_run_id?: number; run_url?: string; html_url?: string }>(repo, 'POST', path, perms, { ...body, return_run_details: true });
  if ((res.status === 422 || res.status === 400) && /return_run_details/i.test(githubMessage(res.body) + JSON.stringify(res.body))) {
    res = await client.repoRequest(repo, 'POST', path, perms, body);
  }
  if (res.status === 200 && typeof res.body.workflow_run_id === 'number') {
    return { run_id: res.body.workflow_run_id, html_url: res.body.html_url ?? '', found_by: 'return_run_details' };
  }
  if (res.status === 404) {
    throw new GitHubError('not_found', `GitHub has no workflow ${input.workflow} on ${input.ref} of ${repo.owner}/${repo.name}: a workflow can be dispatched only once it is on the default branch (merge the scaffolding pull request first).`, 404);
  }
  if (res.status !== 204 && res.status !== 200) throw writeFailure(res, `dispatch ${input.workflow} on ${input.ref}`, 'Actions');

  const deadline = now() + (opts.findTimeoutMs ?? 60_000);
  for (;;) {
    const run = await findRunByName(client, repo, input.workflow, input.marker, started);
    if (run) return { run_id: run.id, html_url: run.html_url, found_by: 'run_name' };
    if (now() >= deadline) {
      throw new GitHubError('upstream', `GitHub accepted the dispatch of ${input.workflow} but listed no run named with ${input.marker} within ${Math.round((opts.findTimeoutMs ?? 60_000) / 1000)} s; look for it in the Actions tab.`);
    }
    await sleep(opts.pollMs ?? 2_000);
  }
}

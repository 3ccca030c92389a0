/**
 * The second phase's steps. Each is idempotent: run again after a crash or a retry it
 * finds what an earlier attempt made (the instance id persisted before the VM is
 * created, the DNS record by name and owner, the run by the dispatch time and the
 * deploy id in its name) instead of making a second one.
 */
import { parse as parseYaml } from 'yaml';
import type { AppContext } from '../../app.ts';
import { getAgentByInstance } from '../../db/agents.ts';
import type { EnvironmentRow } from '../../db/environments.ts';
import { findLiveInstanceOfEnvironment, freeInstanceName, getInstance } from '../../db/instances.ts';
import type { InstanceRow } from '../../db/instances.ts';
import type { RepoRow } from '../../db/repos.ts';
import { ApiError } from '../../errors.ts';
import type { ComputeProvider } from '../../providers/compute/types.ts';
import { hostFor } from '../../providers/dns/types.ts';
import type { DnsProvider } from '../../providers/dns/types.ts';
import { dispatchWorkflow, findRunByName, followRun } from '../../providers/github/actions.ts';
import type { GitHubClient, RepoCoords } from '../../providers/github/client.ts';
import { getContent } from '../../providers/github/contents.ts';
import { GitHubError } from '../../providers/github/errors.ts';
import { hardenServiceOf } from '../harden/context.ts';
import { provisionInstance } from '../instances.ts';
import { WORKFLOW_FILE, WORKFLOW_PATH, workflowInputs } from './scaffold/index.ts';
import { setDeployKeySecret } from './scaffolding.ts';
import type { AgentWaiter } from './agent-waiter.ts';
import type { DeployRecord } from './record.ts';
import type { DeployTimings } from './timings.ts';


/** Everything a step works with; `signal` aborts at the step's timeout or at shutdown. */
export interface StepEnv {
  ctx: AppContext;
  record: DeployRecord;
  repo: RepoRow;
  env: EnvironmentRow;
  coords: RepoCoords;
  compute: ComputeProvider;
  dns: DnsProvider;
  github: GitHubClient;
  /** The default branch (read once per run, when a step needs it). */
  defaultBranch: () => Promise<string>;
  timings: DeployTimings;
  agents: AgentWaiter;
  signal: AbortSignal;
}

export interface StepOutcome {
  state: 'succeeded' | 'skipped';
  detail: Record<string, unknown> | null;
}

/** Rejects with the signal's reason once it aborts; a plain timer otherwise. */
export function sleepFor(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

const GONE = ['failed', 'destroyed'];

async function instanceOf(s: StepEnv): Promise<InstanceRow> {
  const id = s.record.row.instanceId;
  const row = id === null ? undefined : await getInstance(s.ctx.db, s.record.row.workspaceId, id);
  if (!row) throw new ApiError('vm_not_provisioned', 'The deploy has no VM on record; deploy again to provision one.');
  return row;
}

/** Provider labels allow letters, digits, `-`, `_` and `.`, at most 63 characters. */
function label(value: string): string {
  return value.replace(/[^A-Za-z0-9_.-]+/g, '-').slice(0, 63);
}

/** A DNS-safe hostname for the VM: `<repo>-<env>`, at most 63 characters. */
function vmName(repo: RepoRow, env: EnvironmentRow): string {
  const name = `${repo.name}-${env.name}`.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return name.slice(0, 63).replace(/-+$/, '') || 'vmkit-app';
}

export async function provisioning(s: StepEnv): Promise<StepOutcome> {
  const { ctx, record, env } = s;
  const workspaceId = record.row.workspaceId;
  // This deploy's own VM, from an earlier attempt (persisted before the provider was asked).
  if (record.row.instanceId !== null) {
    const mine = await getInstance(ctx.db, workspaceId, record.row.instanceId);
    if (mine && !GONE.includes(mine.status)) return { state: 'succeeded', detail: { instance_id: mine.id, reused: true } };
  }
  // The environment's live VM.
  const live = await findLiveInstanceOfEnvironment(ctx.db, workspaceId, env.id);
  if (live) {
    await record.patch({ instanceId: live.id });
    return { state: 'succeeded', detail: { instance_id: live.id, reused: true } };
  }
  const made = await provisionInstance(ctx, {
    workspaceId,
    // Instance names are unique per workspace: another app's (or a hand-made) VM may hold it.
    name: await freeInstanceName(ctx.db, workspaceId, vmName(s.repo, env)),
    environmentId: env.id,
    provider: s.compute,
    labels: { environment: label(env.name), deploy: label(record.row.id) },
    // Before the create: a crash from here on finds this instance instead of making a second VM.
    onRegistered: (instanceId) => record.patch({ instanceId }),
  });
  return { state: 'succeeded', detail: { instance_id: made.id, reused: false, provider: made.provider, address: made.sshHost } };
}

export async function waitingForAgent(s: StepEnv): Promise<StepOutcome> {
  const inst = await instanceOf(s);
  await s.agents.waitConnected(inst.id, s.signal);
  const agent = await getAgentByInstance(s.ctx.db, inst.id);
  return { state: 'succeeded', detail: { instance_id: inst.id, agent_id: agent?.id ?? null } };
}

export async function hardening(s: StepEnv): Promise<StepOutcome> {
  const inst = await instanceOf(s);
  if (inst.hardenedAt !== null) return { state: 'skipped', detail: { reason: 'the VM is hardened already', hardened_at: new Date(inst.hardenedAt).toISOString() } };
  // After a restart the agent may still be reconnecting.
  await s.agents.waitConnected(inst.id, s.signal);
  const run = await hardenServiceOf(s.ctx).begin({ workspaceId: inst.workspaceId, instanceId: inst.id, keyId: s.record.row.keyId });
  while (run.state === 'running') {
    if (s.signal.aborted) throw s.signal.reason as Error;
    await run.waitForNews(Number.MAX_SAFE_INTEGER, 60_000, s.signal);
  }
  if (run.state === 'failed') {
    const err = run.error ?? { error: 'command_failed' as const, message: 'Hardening failed.' };
    throw new ApiError(err.error, `${err.message} (harden command ${run.commandId})`);
  }
  return { state: 'succeeded', detail: { command_id: run.commandId, status: run.answer?.status ?? null } };
}

/** The app's public name: `<repo>-<dest>.<zone>`. */
export function appHostOf(s: Pick<StepEnv, 'repo' | 'env' | 'dns'>): string {
  return hostFor(s.repo.name, s.env.name, s.dns.zone);
}

export async function dns(s: StepEnv): Promise<StepOutcome> {
  const inst = await instanceOf(s);
  if (!inst.sshHost) throw new ApiError('vm_not_provisioned', `Instance ${inst.id} has no address on record to point DNS at.`);
  const name = appHostOf(s);
  const record = await s.dns.upsert({ name, type: inst.sshHost.includes(':') ? 'AAAA' : 'A', content: inst.sshHost, owner: s.env.id });
  return { state: 'succeeded', detail: { name, type: record.type, content: record.content, outcome: record.outcome, provider: s.dns.name } };
}

/** The inputs the workflow on the default branch declares under `on.workflow_dispatch.inputs`. */
export function declaredInputs(workflowText: string): Set<string> {
  const doc = parseYaml(workflowText) as { on?: unknown; true?: unknown } | null;
  // YAML 1.1 readers turn a bare `on` key into true; `yaml` (1.2) keeps "on".
  const on = (doc?.on ?? doc?.true) as { workflow_dispatch?: { inputs?: Record<string, unknown> } } | null | undefined;
  return new Set(Object.keys(on?.workflow_dispatch?.inputs ?? {}));
}

/** What the deploy tells the workflow; only the inputs the workflow on the default branch declares are sent (GitHub refuses others). */
function inputsFor(s: StepEnv, inst: InstanceRow, declared: Set<string>): Record<string, string> {
  const all = workflowInputs({
    deployId: s.record.row.id,
    dest: s.env.name,
    host: inst.sshHost ?? '',
    sha: s.record.row.sha ?? '',
    appHost: appHostOf(s),
    hostKeys: inst.sshHostKeys ?? [],
  });
  return Object.fromEntries(Object.entries(all).filter(([k]) => declared.has(k)));
}

export async function dispatching(s: StepEnv): Promise<StepOutcome> {
  const { record, github, coords } = s;
  if (record.row.runId !== null) return { state: 'succeeded', detail: { run_id: record.row.runId, found_by: 'record' } };
  const marker = record.row.id;
  if (record.row.dispatchedAt !== null) {
    // Dispatched before a restart, run not yet known: find it rather than dispatch twice.
    for (;;) {
      const run = await findRunByName(github, coords, WORKFLOW_FILE, marker, new Date(record.row.dispatchedAt));
      if (run) {
        await record.patch({ runId: run.id, runUrl: run.html_url });
        return { state: 'succeeded', detail: { run_id: run.id, found_by: 'run_name_after_restart' } };
      }
      await sleepFor(s.timings.findRunPollMs, s.signal);
    }
  }
  const inst = await instanceOf(s);
  const branch = await s.defaultBranch();
  const workflow = await getContent(github, coords, WORKFLOW_PATH, branch);
  if (!workflow) throw new GitHubError('not_found', `${WORKFLOW_PATH} is no longer on ${branch}; call deploy again to scaffold it.`, 404);
  // Set (again) before every dispatch: idempotent, and it follows a rotated deploy key.
  const secret = await setDeployKeySecret({ ctx: s.ctx, github, coords, repo: s.repo });
  const inputs = inputsFor(s, inst, declaredInputs(workflow.text));
  await record.patch({ dispatchedAt: s.ctx.now() });
  const run = await dispatchWorkflow(
    github,
    coords,
    { workflow: WORKFLOW_FILE, ref: branch, inputs, marker },
    { findTimeoutMs: s.timings.stepTimeoutMs.dispatching, pollMs: s.timings.findRunPollMs, sleep: (ms) => sleepFor(ms, s.signal) },
  );
  await record.patch({ runId: run.run_id, runUrl: run.html_url || null });
  return { state: 'succeeded', detail: { run_id: run.run_id, found_by: run.found_by, inputs: Object.keys(inputs), deploy_key_secret: secret } };
}

export interface RunFailure {
  conclusion: string | null;
  job: string | null;
  step: string | null;
}

/** Thrown when the run ended without success: the runner fails the deploy with `workflow_run_failed`. */
export class WorkflowRunFailed extends Error {
  override name = 'WorkflowRunFailed';
  readonly failure: RunFailure;
  constructor(
    message: string,
    failure: RunFailure,
  ) {
    super(message);
    this.failure = failure;
  }
}

export async function runningWorkflow(s: StepEnv): Promise<StepOutcome> {
  const runId = s.record.row.runId;
  if (runId === null) throw new ApiError('deploy_step_failed', 'No workflow run is on record for this deploy.');
  const { run, failing } = await followRun(s.github, s.coords, runId, {
    // The step's own timeout bounds the wait; followRun's is only a backstop.
    timeoutMs: s.timings.stepTimeoutMs.running_workflow + 60_000,
    pollMs: s.timings.runPollMs,
    sleep: (ms) => sleepFor(ms, s.signal),
  });
  if (run.html_url && run.html_url !== s.record.row.runUrl) await s.record.patch({ runUrl: run.html_url });
  if (run.conclusion === 'success') return { state: 'succeeded', detail: { run_id: run.id, conclusion: run.conclusion } };
  const where = failing ? ` Job "${failing.job}" failed${failing.step ? ` at step "${failing.step}"` : ''}.` : '';
  throw new WorkflowRunFailed(
    `The deploy workflow run ${run.html_url} ended ${run.conclusion ?? run.status}.${where} Read its log there, fix the cause and deploy again.`,
    { conclusion: run.conclusion, job: failing?.job ?? null, step: failing?.step ?? null },
  );
}

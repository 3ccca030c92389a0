/**
 * deploy's domain logic. `start` checks the request (contract errors first), then
 * either runs the first phase (scaffolding pull request, scaffolding.ts) or creates
 * the environment's one running deploy and drives it through the second phase's steps
 * in the background. Every step is persisted before and after it runs, so `resume`
 * continues an unfinished deploy after a restart from its last completed step.
 *
 * Each running deploy is driven by one process, the holder of its lease (db/leases.ts):
 * the process that creates it, else the one that claimed it after its holder died,
 * stalled past the lease, or released it at a clean stop. Every write of a step is
 * fenced by the lease, so a process that lost it stops before its next step.
 * Its changes wake long-polls on every process (cluster-events.ts), wherever they landed.
 */
import { parseRepoFullName } from '@vmkit/protocol';
import type { AppContext } from '../../app.ts';
import { createRunningDeploy, findRunningDeploy, getDeployById } from '../../db/deploys.ts';
import { LeaseLost } from '../../db/leases.ts';
import type { Claimed } from '../../db/leases.ts';
import { LeaseKeeper } from '../leases.ts';
import type { DeployRow } from '../../db/deploys.ts';
import { findEnvironmentByName, getEnvironment } from '../../db/environments.ts';
import { findRepoByName, getRepo } from '../../db/repos.ts';
import { ApiError } from '../../errors.ts';
import { LocalDnsProvider } from '../../providers/dns/local.ts';
import type { GitHubClient, RepoCoords } from '../../providers/github/client.ts';
import { defaultBranchHead, getContent } from '../../providers/github/contents.ts';
import { GitHubError } from '../../providers/github/errors.ts';
import { AgentWaiter } from './agent-waiter.ts';
import { relayChanges } from '../change-events/cluster.ts';
import type { ClusterChangeEvents } from '../change-events/cluster.ts';
import { DEPLOY_EVENTS_CHANNEL } from './cluster-events.ts';
import { DeployEvents } from './events.ts';
import { DeployShutdown, StepTimedOut, githubApiError, stepFailure } from './failures.ts';
import type { WorkspaceProviderSet } from './providers.ts';
import { DeployRecord } from './record.ts';
import { runFirstPhase } from './scaffolding.ts';
import { WORKFLOW_PATH } from './scaffold/index.ts';
import { appHostOf, dispatching, dns, hardening, provisioning, runningWorkflow, waitingForAgent } from './steps.ts';
import type { StepEnv, StepOutcome } from './steps.ts';
import { timingsOf } from './timings.ts';
import type { DeployStepName } from './timings.ts';
import type { DeployStepOutcome } from '../../metrics/metrics.ts';

declare module '../../app.ts' {
  interface AppContext {
    deploys?: DeployService;
  }
}

export interface DeployRequest {
  workspaceId: string;
  /** The API key that asked (audit rows of the background work name it). */
  keyId: string | null;
  /** owner/name */
  repo: string;
  dest: string;
  sha?: string | undefined;
}

type SecondPhaseStep = Exclude<DeployStepName, 'scaffolding'>;

const STEP_RUNNERS: Record<SecondPhaseStep, (s: StepEnv) => Promise<StepOutcome>> = {
  provisioning,
  waiting_for_agent: waitingForAgent,
  hardening,
  dns,
  dispatching,
  running_workflow: runningWorkflow,
};
const SECOND_PHASE = Object.keys(STEP_RUNNERS) as SecondPhaseStep[];

export function isTerminal(row: Pick<DeployRow, 'status'>): boolean {
  return row.status !== 'running';
}

export function githubNotConfigured(repo: string): ApiError {
  return new ApiError(
    'github_app_not_installed',
    `No GitHub is configured for this workspace, so VMKit cannot open pull requests or start workflows on ${repo}. ` +
      'Configure a GitHub App with PUT /api/workspace/github (or VMKIT_GITHUB_APP_ID and VMKIT_GITHUB_APP_PRIVATE_KEY when the control plane starts), install it on the repository, then deploy again.',
  );
}

/** The full sha to deploy: the default branch's head, or the caller's (short) sha resolved by GitHub. */
async function commitOf(github: GitHubClient, coords: RepoCoords, sha: string | undefined, head: string): Promise<string> {
  if (sha === undefined) return head;
  if (/^[0-9a-f]{40}$/i.test(sha)) return sha.toLowerCase();
  try {
    return await github.getCommitSha(coords, sha);
  } catch (err) {
    if (err instanceof GitHubError && (err.failure === 'not_found' || err.failure === 'validation')) {
      throw new ApiError('invalid_request', `Invalid request: sha ${sha} is not a commit of ${coords.owner}/${coords.name}.`);
    }
    throw githubApiError(err);
  }
}

export class DeployService {
  readonly events = new DeployEvents();
  readonly #ctx: AppContext;
  readonly #agents: AgentWaiter;
  readonly #active = new Map<string, Promise<void>>();
  /** Per driven deploy: aborted when its lease is lost (renewal found another holder). */
  readonly #stops = new Map<string, AbortController>();
  readonly #closing = new AbortController();
  readonly #leases: LeaseKeeper;
  /** Several processes on PostgreSQL: how changes reach the others' long-polls (undefined on SQLite). */
  readonly clusterEvents: ClusterChangeEvents | undefined;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    // The hub plugin (registered before the deploy routes) made the node; its LISTEN connection hears the others' changes.
    this.clusterEvents = relayChanges(ctx, DEPLOY_EVENTS_CHANNEL, this.events);
    this.#agents = new AgentWaiter(ctx);
    this.#leases = new LeaseKeeper(ctx, 'deploys', {
      adopt: (claimed) => this.#adopt(claimed),
      lost: (id) => {
        this.#ctx.logger.warn({ deploy_id: id, node_id: ctx.nodeId }, 'deploy: lease lost to another process; stopping here');
        this.#stops.get(id)?.abort(new LeaseLost('deploys', id));
      },
    });
  }

  /** This process's leases on deploys (tests renew and claim without waiting for the timer). */
  get leases(): LeaseKeeper {
    return this.#leases;
  }

  async providersOf(workspaceId: string): Promise<WorkspaceProviderSet> {
    if (this.#ctx.deployProviders) return this.#ctx.deployProviders(workspaceId);
    // No resolver wired: nothing is configured, which every step reports as such.
    return { compute: null, dns: new LocalDnsProvider(), github: null };
  }

  /** Starts a deploy, answers the first phase's pull request, or joins the environment's running deploy. */
  async start(req: DeployRequest): Promise<DeployRow> {
    const { db } = this.#ctx;
    const ref = parseRepoFullName(req.repo);
    if (!ref) throw new ApiError('invalid_request', 'Invalid request: repo must be owner/name.');
    const repo = await findRepoByName(db, req.workspaceId, ref.owner, ref.name);
    if (!repo) throw new ApiError('repo_not_found', `No repo ${req.repo} is connected to this workspace; connect it with POST /api/repos first.`);
    const full = `${repo.owner}/${repo.name}`;
    const env = await findEnvironmentByName(db, req.workspaceId, repo.id, req.dest);
    if (!env) {
      throw new ApiError('environment_not_found', `No environment "${req.dest}" exists for ${full}; create it with POST /api/repos/${repo.id}/environments.`);
    }
    const running = await findRunningDeploy(db, env.id);
    if (running) return running;

    const providers = await this.providersOf(req.workspaceId);
    if (!providers.github) throw githubNotConfigured(full);
    const github = providers.github;
    const coords: RepoCoords = { owner: repo.owner, name: repo.name };
    const head = await defaultBranchHead(github, coords).catch((err: unknown) => {
      throw githubApiError(err);
    });
    const workflow = await getContent(github, coords, WORKFLOW_PATH, head.branch).catch((err: unknown) => {
      throw githubApiError(err);
    });
    if (!workflow) {
      return runFirstPhase({ ctx: this.#ctx, events: this.events, github, coords, repo, env, head, keyId: req.keyId, dnsZone: providers.dns.zone });
    }
    if (!providers.compute) {
      throw new ApiError(
        'compute_target_missing',
        'No compute provider is configured in this workspace, so VMKit has nowhere to run the app. Configure one with PUT /api/workspace/compute (hetzner, or local for this machine), then deploy again.',
      );
    }
    const { deploy, created } = await createRunningDeploy(
      db,
      {
        workspaceId: req.workspaceId,
        repoId: repo.id,
        environmentId: env.id,
        sha: await commitOf(github, coords, req.sha, head.sha),
        currentStep: 'provisioning',
        keyId: req.keyId,
        lease: this.#leases.terms(),
      },
      this.#ctx.now(),
    );
    if (!created) return deploy;
    const lease = { id: deploy.id, nodeId: this.#ctx.nodeId, generation: deploy.leaseGeneration };
    this.#leases.hold(lease);
    const record = await DeployRecord.load(this.#deps(), deploy, lease);
    await record.audit('deploys.started', 202, null);
    await record.stepEnded('scaffolding', 'skipped', { reason: `${WORKFLOW_PATH} is on ${head.branch}` });
    this.#drive(record);
    return record.row;
  }

  /**
   * The deploy once it changed after `afterMs` (its updated_at), is terminal, or
   * `waitMs` passed: woken by the deploy's own events (from whichever process drives it),
   * never by re-reading in a loop.
   */
  async waitForChange(row: DeployRow, afterMs: number, waitMs: number, signal?: AbortSignal): Promise<DeployRow> {
    return this.#wait(row, waitMs, signal, (d) => d.updatedAt > afterMs || isTerminal(d));
  }

  /** The deploy once terminal, or as it is when `waitMs` ran out. */
  async waitForEnd(row: DeployRow, waitMs: number, signal?: AbortSignal): Promise<DeployRow> {
    return this.#wait(row, waitMs, signal, isTerminal);
  }

  #wait(row: DeployRow, waitMs: number, signal: AbortSignal | undefined, done: (d: DeployRow) => boolean): Promise<DeployRow> {
    return this.events.waitFor(row, (r) => this.#reread(r), done, waitMs, signal);
  }

  async #reread(row: DeployRow): Promise<DeployRow> {
    return (await getDeployById(this.#ctx.db, row.id)) ?? row;
  }

  /**
   * At start-up: claims the deploys no live process drives (left by a killed process, or
   * released at a clean stop) and continues each from its last completed step; from then
   * on claims, every lease check, those whose holder stopped renewing. On SQLite (one
   * process) every running deploy is this process's at start.
   */
  async resume(): Promise<number> {
    // Instances a killed process left half-made are reconciled first, so provisioning sees what really exists.
    await this.#ctx.instanceRecovery;
    const n = await this.#leases.start({ all: this.#ctx.db.dialect === 'sqlite' });
    if (n > 0) this.#ctx.logger.info({ count: n, node_id: this.#ctx.nodeId }, 'deploy: resumed deploys a restart left unfinished');
    return n;
  }

  async #adopt(claimed: Claimed): Promise<void> {
    if (this.#active.has(claimed.id) || this.#closing.signal.aborted) return;
    const row = await getDeployById(this.#ctx.db, claimed.id);
    if (!row || isTerminal(row)) {
      this.#leases.drop(claimed.id);
      return;
    }
    const record = await DeployRecord.load(this.#deps(), row, claimed);
    const from: Record<string, string> = claimed.previousOwner !== null && claimed.previousOwner !== claimed.nodeId ? { from_node_id: claimed.previousOwner } : {};
    await record.audit('deploys.resumed', 202, null, { step: row.currentStep ?? '', node_id: claimed.nodeId, ...from });
    this.#ctx.logger.info({ deploy_id: row.id, step: row.currentStep, node_id: claimed.nodeId, ...from }, 'deploy: resumed a deploy no live process drove');
    this.#drive(record);
  }

  /** Stops driving (the steps under way stop without an outcome) and releases the leases, so another process resumes them at once. */
  async close(): Promise<void> {
    await this.#leases.stop();
    this.#closing.abort(new DeployShutdown('the control plane is closing'));
    await Promise.allSettled([...this.#active.values()]);
    await this.#leases.close();
    // The last writes' NOTIFYs go out before the pool closes (a failed one is only logged).
    await this.clusterEvents?.settled();
  }

  /** Deploys this process is driving (tests and the bench wait on them). */
  active(id: string): Promise<void> | undefined {
    return this.#active.get(id);
  }

  #deps() {
    return { db: this.#ctx.db, events: this.events, now: this.#ctx.now };
  }

  #drive(record: DeployRecord): void {
    const id = record.row.id;
    const stop = new AbortController();
    this.#stops.set(id, stop);
    const halt = AbortSignal.any([this.#closing.signal, stop.signal]);
    const run = this.#run(record, halt)
      .catch((err: unknown) => {
        if (err instanceof LeaseLost) this.#ctx.logger.warn({ deploy_id: id, node_id: this.#ctx.nodeId }, 'deploy: another process holds the lease now; this one stops driving it');
        else if (!halt.aborted) this.#ctx.logger.error({ err, deploy_id: id }, 'deploy: the runner failed');
      })
      .finally(() => {
        this.#active.delete(id);
        this.#stops.delete(id);
        // Ended here: nothing to renew. Stopped by a close: kept until close() releases it.
        if (!this.#closing.signal.aborted) this.#leases.drop(id);
      });
    this.#active.set(id, run);
  }

  async #run(record: DeployRecord, halt: AbortSignal): Promise<void> {
    let base: Omit<StepEnv, 'signal'>;
    try {
      base = await this.#stepEnv(record);
    } catch (err) {
      if (halt.aborted) return;
      const step = SECOND_PHASE.find((s) => !['succeeded', 'skipped'].includes(record.stepState(s) ?? '')) ?? 'provisioning';
      const f = stepFailure(step, err, record.row.runUrl);
      await record.fail(step, f.key, f.message);
      return;
    }
    for (const step of SECOND_PHASE) {
      const state = record.stepState(step);
      if (state === 'succeeded' || state === 'skipped') continue;
      if (!(await this.#step(record, base, step, halt))) return;
    }
    if (halt.aborted) return;
    await record.succeed({ appUrl: `https://${appHostOf(base)}` });
  }

  /** Runs one step under its timeout; false when the deploy stops here (failed, or shutting down). */
  async #step(record: DeployRecord, base: Omit<StepEnv, 'signal'>, step: SecondPhaseStep, halt: AbortSignal): Promise<boolean> {
    if (halt.aborted) return false;
    await record.stepStarted(step);
    const started = performance.now();
    let measured: DeployStepOutcome = 'interrupted';
    const ms = base.timings.stepTimeoutMs[step];
    const abort = new AbortController();
    const onClose = (): void => abort.abort(halt.reason);
    halt.addEventListener('abort', onClose, { once: true });
    const timer = setTimeout(() => abort.abort(new StepTimedOut(step, ms)), ms);
    // A step that does not watch its signal (a provider call) is left behind when it aborts.
    const aborted = new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(abort.signal.reason as Error), { once: true }));
    aborted.catch(() => undefined);
    try {
      const outcome = await Promise.race([STEP_RUNNERS[step]({ ...base, signal: abort.signal }), aborted]);
      if (halt.aborted) return false;
      measured = outcome.state;
      await record.stepEnded(step, outcome.state, outcome.detail);
      return true;
    } catch (err) {
      // Closing, or the lease went to another process (which runs this step again): no outcome here.
      if (halt.aborted || err instanceof LeaseLost) return false;
      measured = 'failed';
      const f = stepFailure(step, err, record.row.runUrl);
      if (f.key === 'deploy_step_failed') this.#ctx.logger.error({ err, deploy_id: record.row.id, step }, 'deploy: a step failed unexpectedly');
      await record.fail(step, f.key, f.message, f.detail);
      return false;
    } finally {
      clearTimeout(timer);
      halt.removeEventListener('abort', onClose);
      this.#ctx.metrics?.deployStep(step, measured, (performance.now() - started) / 1000);
    }
  }

  async #stepEnv(record: DeployRecord): Promise<Omit<StepEnv, 'signal'>> {
    const { db } = this.#ctx;
    const d = record.row;
    const repo = await getRepo(db, d.workspaceId, d.repoId);
    const env = await getEnvironment(db, d.workspaceId, d.environmentId);
    if (!repo || !env) throw new ApiError('environment_not_found', 'The repository or environment of this deploy was removed.');
    const providers = await this.providersOf(d.workspaceId);
    if (!providers.github) throw githubNotConfigured(`${repo.owner}/${repo.name}`);
    if (!providers.compute) throw new ApiError('compute_target_missing', 'No compute provider is configured in this workspace any more; configure one with PUT /api/workspace/compute, then deploy again.');
    const github: GitHubClient = providers.github;
    const coords = { owner: repo.owner, name: repo.name };
    let branch: Promise<string> | undefined;
    return {
      ctx: this.#ctx,
      record,
      repo,
      env,
      coords,
      compute: providers.compute,
      dns: providers.dns,
      github,
      defaultBranch: () => (branch ??= defaultBranchHead(github, coords).then((h) => h.branch)),
      timings: timingsOf(this.#ctx.deployTimings),
      agents: this.#agents,
    };
  }
}

/** The control plane's one DeployService, made on first use. */
export function deployServiceOf(ctx: AppContext): DeployService {
  return (ctx.deploys ??= new DeployService(ctx));
}

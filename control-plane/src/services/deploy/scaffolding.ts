/**
 * deploy's first phase: while `.github/workflows/vmkit-deploy.yml` is not on the
 * default branch, a pull request from `vmkit/scaffolding` adds it and a starter Kamal
 * config. One open PR at a time per repository: a repeat call answers it. A PR closed
 * without merging is said once (the deploy record fails with `scaffolding_pr_closed`);
 * the call after that opens a fresh one. Each answer is a deploy record (status
 * `scaffolding_pr_open`, its PR number kept) so the next call knows what was said.
 */
import type { AppContext } from '../../app.ts';
import { createDeploy, latestScaffoldingDeploy } from '../../db/deploys.ts';
import type { DeployRow } from '../../db/deploys.ts';
import type { EnvironmentRow } from '../../db/environments.ts';
import { listEnvironments } from '../../db/environments.ts';
import type { RepoRow } from '../../db/repos.ts';
import { putRepoSecret } from '../../providers/github/actions.ts';
import type { GitHubClient, RepoCoords } from '../../providers/github/client.ts';
import { ensureBranch, upsertFile } from '../../providers/github/contents.ts';
import { GitHubError } from '../../providers/github/errors.ts';
import { ensurePull, findOpenPull, getPull } from '../../providers/github/pulls.ts';
import type { PullRequest } from '../../providers/github/pulls.ts';
import { GitHubRepoSource } from '../../providers/repo-source/github.ts';
import { deployKeyStoreOf } from '../harden/context.ts';
import { ScanService } from '../scan/service.ts';
import type { DeployEvents } from './events.ts';
import { DeployRecord } from './record.ts';
import { SCAFFOLD_BRANCH, SSH_KEY_SECRET, generateScaffolding } from './scaffold/index.ts';
import { githubApiError } from './failures.ts';

export interface FirstPhaseInput {
  ctx: AppContext;
  events: DeployEvents;
  github: GitHubClient;
  coords: RepoCoords;
  repo: RepoRow;
  env: EnvironmentRow;
  head: { branch: string; sha: string };
  keyId: string | null;
  dnsZone: string;
}

/** One first phase at a time per repository in this process: two concurrent calls answer one PR. */
const running = new Map<string, Promise<unknown>>();

export function runFirstPhase(input: FirstPhaseInput): Promise<DeployRow> {
  const key = input.repo.id;
  const before = running.get(key) ?? Promise.resolve();
  const next = before.catch(() => undefined).then(() => firstPhase(input));
  running.set(key, next);
  const forget = (): void => {
    if (running.get(key) === next) running.delete(key);
  };
  next.then(forget, forget);
  return next.catch((err: unknown) => {
    throw githubApiError(err);
  });
}

async function firstPhase(input: FirstPhaseInput): Promise<DeployRow> {
  const { ctx, github, coords, repo, head } = input;
  const deps = { db: ctx.db, events: input.events, now: ctx.now };
  const last = await latestScaffoldingDeploy(ctx.db, repo.workspaceId, repo.id);
  const open = await findOpenPull(github, coords, SCAFFOLD_BRANCH, head.branch);
  if (open) {
    if (last?.status === 'scaffolding_pr_open' && last.prNumber === open.number) return last;
    return recordPull(input, open, { created: false });
  }
  if (last?.status === 'scaffolding_pr_open' && last.prNumber !== null) {
    const pr = await getPull(github, coords, last.prNumber);
    if (pr.state === 'closed' && !pr.merged) {
      // Said once; the next call opens a fresh pull request.
      const record = await DeployRecord.load(deps, last);
      await record.fail(
        'scaffolding',
        'scaffolding_pr_closed',
        `The scaffolding pull request ${pr.html_url} was closed without being merged, so ${repo.owner}/${repo.name} still has no deploy workflow. Call deploy again to open a fresh one (or merge a reopened one).`,
      );
      return record.row;
    }
  }
  return openPull(input);
}

async function openPull(input: FirstPhaseInput): Promise<DeployRow> {
  const { ctx, github, coords, repo, head } = input;
  const scan = await new ScanService({ db: ctx.db, sourceFor: () => new GitHubRepoSource(github), now: ctx.now }).scan(repo.workspaceId, `${repo.owner}/${repo.name}`);
  const environments = (await listEnvironments(ctx.db, repo.workspaceId, repo.id)).map((e) => e.name);
  const plan = generateScaffolding({
    repo: coords,
    defaultBranch: head.branch,
    scan: {
      language: scan.scan.language,
      framework: scan.scan.framework,
      buildpack: scan.scan.buildpack,
      dockerfile_detected: scan.scan.dockerfileDetected,
      procfile_detected: scan.scan.procfileDetected,
      root: typeof scan.scan.details?.root === 'string' ? scan.scan.details.root : null,
    },
    environments,
    zone: input.dnsZone,
  });
  await ensureBranch(github, coords, plan.pr.branch, head.sha);
  for (const file of plan.files) {
    await upsertFile(github, coords, { path: file.path, text: file.content, message: `VMKit: add ${file.path}`, branch: plan.pr.branch });
  }
  const secret = await setDeployKeySecret(input);
  const body = secret === 'set' ? plan.pr.body : `${plan.pr.body}\n\n${secretNotSetNote()}`;
  const { pull, created } = await ensurePull(github, coords, { head: plan.pr.branch, base: head.branch, title: plan.pr.title, body });
  return recordPull(input, pull, { created, files: plan.files.map((f) => f.path), deploy_key_secret: secret });
}

/** The deploy key's private half as the repository secret the workflow loads; needs the App's Secrets permission. */
export async function setDeployKeySecret(input: Pick<FirstPhaseInput, 'ctx' | 'github' | 'coords' | 'repo'>): Promise<'set' | 'permission_missing'> {
  const key = await deployKeyStoreOf(input.ctx).get(input.repo.workspaceId);
  try {
    await putRepoSecret(input.github, input.coords, SSH_KEY_SECRET, key.privateKey);
    return 'set';
  } catch (err) {
    if (err instanceof GitHubError && (err.failure === 'permission_missing' || (err.failure === 'auth_failed' && err.status === 403))) return 'permission_missing';
    throw err;
  }
}

function secretNotSetNote(): string {
  return [
    `**VMKit could not set the repository secret \`${SSH_KEY_SECRET}\`**: the GitHub App lacks the "Secrets" repository permission (read and write).`,
    "Grant it in the App's settings (Permissions & events; every existing installation must then approve it) and call deploy again:",
    'VMKit sets the secret itself before it starts the workflow. The deploy key never leaves the control plane any other way.',
  ].join(' ');
}

async function recordPull(input: FirstPhaseInput, pull: PullRequest, detail: Record<string, unknown>): Promise<DeployRow> {
  const { ctx, repo, env } = input;
  const row = await createDeploy(
    ctx.db,
    { workspaceId: repo.workspaceId, repoId: repo.id, environmentId: env.id, sha: input.head.sha, status: 'scaffolding_pr_open', currentStep: 'scaffolding', prUrl: pull.html_url, prNumber: pull.number, keyId: input.keyId },
    ctx.now(),
  );
  const record = await DeployRecord.load({ db: ctx.db, events: input.events, now: ctx.now }, row);
  await record.stepStarted('scaffolding');
  await record.stepEnded('scaffolding', 'succeeded', { pr_number: pull.number, pr_url: pull.html_url, ...detail });
  await record.audit(detail.created === true ? 'deploys.scaffolding.pr_opened' : 'deploys.scaffolding.pr_answered', 200, null, { pr_number: String(pull.number) });
  return record.row;
}

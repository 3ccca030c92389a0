import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';
import { GitHubClient } from '../../control-plane/src/providers/github/client.ts';
import { GitHubError } from '../../control-plane/src/providers/github/errors.ts';
import { githubErrorKey } from '../../control-plane/src/providers/github/failures.ts';
import { defaultBranchHead, ensureBranch, getContent, putContent, upsertFile } from '../../control-plane/src/providers/github/contents.ts';
import { ensurePull, findOpenPull, getPull, listPulls } from '../../control-plane/src/providers/github/pulls.ts';
import { dispatchWorkflow, failingJob, followRun, getRun, putRepoSecret } from '../../control-plane/src/providers/github/actions.ts';
import { FakeGitHub } from '../helpers/fake-github.ts';
import type { FakeRepo } from '../helpers/fake-github.ts';

const APP_ID = '515151';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const appPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
const REPO = { owner: 'acme', name: 'shop' };
const FULL = 'acme/shop';
const BRANCH = 'vmkit/deploy-setup';
const WORKFLOW = 'vmkit-deploy.yml';
const WORKFLOW_TEXT = [
  'name: VMKit deploy',
  'run-name: "deploy ${{ inputs.dest }} (${{ inputs.deploy_id }})"',
  'on:',
  '  workflow_dispatch:',
  '    inputs:',
  '      dest: { required: true }',
  '      host: { required: true }',
  '      sha: { required: true }',
  '      deploy_id: { required: true }',
  'jobs:',
  '  deploy:',
  '    runs-on: ubuntu-latest',
  '    steps: []',
  '',
].join('\n');
const ALL: FakeRepo['appPermissions'] = { contents: 'write', workflows: 'write', pull_requests: 'write', actions: 'write', secrets: 'write', metadata: 'read' };

async function setup(t: Test, repo: Partial<FakeRepo> = {}, extra: { tokens?: string[]; tokenPermissions?: Record<string, 'read' | 'write'> } = {}): Promise<{ fake: FakeGitHub; gh: GitHubClient }> {
  const fake = await FakeGitHub.start({
    app: { id: APP_ID, publicKey },
    ...extra,
    repos: [{ owner: 'acme', name: 'shop', files: { 'package.json': '{"name":"shop"}\n', 'README.md': '# shop\n' }, installationId: 11, appPermissions: ALL, ...repo }],
  });
  t.teardown(() => fake.close());
  return { fake, gh: new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: APP_ID, privateKey: appPem } }) };
}

/** Scaffolding as deploy's first phase will do it: branch, files, pull request. */
async function scaffold(gh: GitHubClient): Promise<number> {
  const head = await defaultBranchHead(gh, REPO);
  await ensureBranch(gh, REPO, BRANCH, head.sha);
  await upsertFile(gh, REPO, { path: `.github/workflows/${WORKFLOW}`, text: WORKFLOW_TEXT, message: 'Add the VMKit deploy workflow', branch: BRANCH });
  const { pull } = await ensurePull(gh, REPO, { head: BRANCH, base: head.branch, title: 'Deploy with VMKit', body: 'Adds the workflow.' });
  return pull.number;
}

async function rejectsKey(t: Test, p: Promise<unknown>, key: string, message?: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected ${key}`);
  } catch (err) {
    t.type(err, GitHubError);
    t.equal(githubErrorKey(err as GitHubError), key, `error key ${key}`);
    if (message) t.match((err as Error).message, message);
  }
}

t.test('the default branch and its head commit', async (t) => {
  const { fake, gh } = await setup(t);
  t.same(await defaultBranchHead(gh, REPO), { branch: 'main', sha: fake.shaOf(FULL) });
});

t.test('an empty repository cannot get a branch, and says so', async (t) => {
  const { fake, gh } = await setup(t);
  fake.writes.emptyRepos.add(FULL);
  await rejectsKey(t, defaultBranchHead(gh, REPO), 'github_repo_empty', /push a first commit/i);
  await rejectsKey(t, ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL)), 'github_repo_empty', /repository is empty/);
});

t.test('creating a branch twice finds the first one', async (t) => {
  const { fake, gh } = await setup(t);
  const first = await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
  const again = await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
  t.same([first.created, again.created], [true, false]);
  t.equal(again.sha, first.sha);
});

t.test('a file is written on a branch, read back with its blob sha, and replaced naming that sha', async (t) => {
  const { fake, gh } = await setup(t);
  await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
  await putContent(gh, REPO, { path: 'config/deploy.yml', text: 'service: shop\n', message: 'Add Kamal config', branch: BRANCH });
  const read = await getContent(gh, REPO, 'config/deploy.yml', BRANCH);
  t.equal(read?.text, 'service: shop\n');
  await rejectsKey(t, putContent(gh, REPO, { path: 'config/deploy.yml', text: 'service: x\n', message: 'm', branch: BRANCH }), 'github_conflict', /already exists.*blob sha/);
  await rejectsKey(t, putContent(gh, REPO, { path: 'config/deploy.yml', text: 'service: x\n', message: 'm', branch: BRANCH, sha: '0'.repeat(40) }), 'github_conflict', /changed meanwhile/);
  await putContent(gh, REPO, { path: 'config/deploy.yml', text: 'service: shop2\n', message: 'm', branch: BRANCH, sha: read?.sha ?? '' });
  t.equal(fake.writes.branchFiles(FULL, BRANCH)?.get('config/deploy.yml'), 'service: shop2\n');
  t.equal(fake.writes.branchFiles(FULL, 'main')?.has('config/deploy.yml'), false, 'the default branch is untouched');
  t.equal(await getContent(gh, REPO, 'nope.txt', BRANCH), null);
});

t.test('writing the same file content again makes no commit', async (t) => {
  const { fake, gh } = await setup(t);
  await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
  const first = await upsertFile(gh, REPO, { path: 'config/deploy.yml', text: 'a\n', message: 'm', branch: BRANCH });
  const puts = (): number => fake.requests.filter((r) => r.method === 'PUT').length;
  const before = puts();
  const again = await upsertFile(gh, REPO, { path: 'config/deploy.yml', text: 'a\n', message: 'm', branch: BRANCH });
  t.same([first.changed, again.changed], [true, false]);
  t.equal(puts(), before);
});

t.test('the scaffolding pull request is opened once; a repeat answers the same one', async (t) => {
  const { fake, gh } = await setup(t);
  const first = await scaffold(gh);
  const again = await scaffold(gh);
  t.equal(again, first);
  t.equal(fake.writes.pulls(FULL).length, 1);
  const open = await findOpenPull(gh, REPO, BRANCH, 'main');
  t.match(open, { number: first, state: 'open', merged: false, head: BRANCH, base: 'main', html_url: `https://github.com/${FULL}/pull/${first}` });
});

t.test('a concurrent open of the same pull request finds the one that won', async (t) => {
  const { fake, gh } = await setup(t);
  await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
  const [a, b] = await Promise.all([
    ensurePull(gh, REPO, { head: BRANCH, base: 'main', title: 't', body: 'b' }),
    ensurePull(gh, REPO, { head: BRANCH, base: 'main', title: 't', body: 'b' }),
  ]);
  t.equal(a.pull.number, b.pull.number);
  t.equal(fake.writes.pulls(FULL).length, 1);
});

t.test('whether the pull request was merged, or closed unmerged', async (t) => {
  const { fake, gh } = await setup(t);
  const n = await scaffold(gh);
  t.equal((await getPull(gh, REPO, n)).merged, false);
  fake.writes.mergePull(FULL, n);
  const merged = await getPull(gh, REPO, n);
  t.same([merged.state, merged.merged], ['closed', true]);
  t.equal(await findOpenPull(gh, REPO, BRANCH, 'main'), null);
  t.ok(fake.writes.branchFiles(FULL, 'main')?.has(`.github/workflows/${WORKFLOW}`), 'the workflow is on the default branch now');
  const listed = await listPulls(gh, REPO, BRANCH, 'main', 'closed');
  t.equal(listed[0]?.merged, true, 'the list endpoint says merged too (merged_at)');
});

t.test('without the Workflows permission the workflow file is refused with what to do', async (t) => {
  const { workflows: _dropped, ...granted } = ALL ?? {};
  const { fake, gh } = await setup(t, { appPermissions: granted });
  await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
  await rejectsKey(
    t,
    putContent(gh, REPO, { path: `.github/workflows/${WORKFLOW}`, text: WORKFLOW_TEXT, message: 'm', branch: BRANCH }),
    'github_permission_missing',
    /"Workflows" repository permission.*existing installation must then approve/,
  );
  t.equal(fake.writes.branchFiles(FULL, BRANCH)?.has(`.github/workflows/${WORKFLOW}`), false, 'nothing was written');
});

t.test('GitHub\'s "refusing to allow a GitHub App to create or update workflow" is explained', async (t) => {
  const { fake } = await setup(t, {}, { tokens: ['github_pat_contents_only'], tokenPermissions: { contents: 'write', metadata: 'read' } });
  const gh = new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'token', token: 'github_pat_contents_only' } });
  await rejectsKey(
    t,
    putContent(gh, REPO, { path: `.github/workflows/${WORKFLOW}`, text: WORKFLOW_TEXT, message: 'm', branch: 'main' }),
    'github_permission_missing',
    /lacks the "Workflows" repository permission.*GitHub said: refusing to allow a GitHub App to create or update workflow/,
  );
});

t.test('an Actions secret is sealed so that only the repository key opens it', async (t) => {
  const { fake, gh } = await setup(t);
  const key = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
  t.equal(await putRepoSecret(gh, REPO, 'VMKIT_SSH_PRIVATE_KEY', key), 'created');
  t.equal(fake.writes.secret(FULL, 'VMKIT_SSH_PRIVATE_KEY'), key, 'the fake opened the sealed box with its private key');
  const body = fake.requests.find((r) => r.method === 'PUT' && r.path.includes('/actions/secrets/'));
  t.ok(body, 'PUT /actions/secrets/{name}');
  t.equal(await putRepoSecret(gh, REPO, 'VMKIT_SSH_PRIVATE_KEY', 'rotated'), 'updated');
  t.equal(fake.writes.secret(FULL, 'VMKIT_SSH_PRIVATE_KEY'), 'rotated');
  t.same(fake.lastIssuedToken()?.permissions, { metadata: 'read', secrets: 'write' }, 'the token carried only the Secrets permission');
  await rejectsKey(t, putRepoSecret(gh, REPO, 'GITHUB_TOKEN', 'x'), 'invalid_request', /not a valid Actions secret name/);
});

t.test('dispatch with return_run_details names the run at once', async (t) => {
  const { fake, gh } = await setup(t);
  fake.writes.mergePull(FULL, await scaffold(gh));
  const run = await dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: { dest: 'staging', host: '203.0.113.5', sha: fake.shaOf(FULL), deploy_id: 'dep_01abc' }, marker: 'dep_01abc' });
  t.equal(run.found_by, 'return_run_details');
  const [stored] = fake.writes.runs(FULL);
  t.equal(run.run_id, stored?.id);
  t.equal(run.html_url, `https://github.com/${FULL}/actions/runs/${stored?.id ?? ''}`);
  t.equal(stored?.display_title, 'deploy staging (dep_01abc)');
  t.same(stored?.inputs, { dest: 'staging', host: '203.0.113.5', sha: fake.shaOf(FULL), deploy_id: 'dep_01abc' });
});

for (const [mode, what] of [['no_content', 'answers 204'], ['reject_field', 'refuses return_run_details with 422']] as const) {
  t.test(`when GitHub ${what}, the run is found by the deploy id in its name`, async (t) => {
    const { fake, gh } = await setup(t);
    fake.writes.mergePull(FULL, await scaffold(gh));
    fake.writes.dispatchMode = mode;
    fake.writes.addRun(FULL, WORKFLOW, 'deploy staging (dep_someone_else)');
    const run = await dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: { dest: 'staging', host: 'h', sha: 's', deploy_id: 'dep_02xyz' }, marker: 'dep_02xyz' }, { pollMs: 20 });
    t.equal(run.found_by, 'run_name');
    const mine = fake.writes.runs(FULL).find((r) => r.display_title.includes('dep_02xyz'));
    t.equal(run.run_id, mine?.id, "our run, not the other deploy's");
    t.equal(fake.writes.runs(FULL).length, 2, 'one dispatch, no second run');
    const list = fake.requests.find((r) => r.path.includes('/runs?'));
    t.match(list?.path, /event=workflow_dispatch/);
    t.match(decodeURIComponent(list?.path ?? ''), /created=>=\d{4}-\d\d-\d\dT/);
  });
}

t.test('a workflow not yet on the default branch cannot be dispatched', async (t) => {
  const { gh } = await setup(t);
  await scaffold(gh);
  await rejectsKey(t, dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: {}, marker: 'dep_x' }), 'repo_not_found', /only once it is on the default branch/);
});

t.test('a failed run names its failing job and step', async (t) => {
  const { fake, gh } = await setup(t);
  fake.writes.mergePull(FULL, await scaffold(gh));
  const run = await dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: { dest: 'staging', host: 'h', sha: 's', deploy_id: 'dep_03' }, marker: 'dep_03' });
  t.match(await getRun(gh, REPO, run.run_id), { status: 'queued', conclusion: null });
  fake.writes.completeRun(FULL, run.run_id, 'failure', { job: 'deploy', step: 'kamal deploy -d staging' });
  const done = await getRun(gh, REPO, run.run_id);
  t.match(done, { status: 'completed', conclusion: 'failure', html_url: run.html_url });
  t.match(await failingJob(gh, REPO, run.run_id), { job: 'deploy', step: 'kamal deploy -d staging' });
});

t.test('GitHub rate limits surface with their reset time', async (t) => {
  const { fake, gh } = await setup(t);
  await defaultBranchHead(gh, REPO); // a token in hand
  fake.secondaryRetryAfter = 30;
  try {
    await ensureBranch(gh, REPO, BRANCH, fake.shaOf(FULL));
    t.fail('expected a rate limit');
  } catch (err) {
    t.equal(githubErrorKey(err as GitHubError), 'github_rate_limited');
    const reset = (err as GitHubError).resetAt?.getTime() ?? 0;
    t.ok(reset > Date.now() + 20_000, 'the reset is retry-after seconds away');
  }
  fake.secondaryRetryAfter = null;
  fake.rateLimitResetAt = Math.floor(Date.now() / 1000) + 600;
  try {
    await getPull(gh, REPO, 1);
    t.fail('expected a rate limit');
  } catch (err) {
    t.equal((err as GitHubError).failure, 'rate_limited');
    t.equal((err as GitHubError).resetAt?.getTime(), (fake.rateLimitResetAt ?? 0) * 1000, 'x-ratelimit-reset');
  }
});

t.test('a run GitHub lists only after a while is still found, by polling', async (t) => {
  const { fake, gh } = await setup(t);
  fake.writes.mergePull(FULL, await scaffold(gh));
  fake.writes.dispatchMode = 'no_content';
  fake.writes.runsListedAfterReads = 3;
  const run = await dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: { dest: 'staging', host: 'h', sha: 's', deploy_id: 'dep_04' }, marker: 'dep_04' }, { pollMs: 10 });
  t.equal(run.found_by, 'run_name');
  t.equal(fake.requests.filter((r) => r.path.includes('/runs?')).length, 4, 'three empty lists, then the run');
});

t.test('a dispatched run that never shows up ends the search with a clear error', async (t) => {
  const { fake, gh } = await setup(t);
  fake.writes.mergePull(FULL, await scaffold(gh));
  fake.writes.dispatchMode = 'no_content';
  fake.writes.runsListedAfterReads = 1_000;
  let clock = Date.now();
  await rejectsKey(
    t,
    dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: { dest: 'staging', host: 'h', sha: 's', deploy_id: 'dep_05' }, marker: 'dep_05' }, { findTimeoutMs: 30_000, pollMs: 10_000, now: () => clock, sleep: async (ms) => void (clock += ms) }),
    'github_unavailable',
    /listed no run named with dep_05 within 30 s/,
  );
  t.equal(fake.writes.runs(FULL).length, 1, 'dispatched once, never again');
});

t.test('following a run: running while the wait lasts, then its conclusion and failing step', async (t) => {
  const { fake, gh } = await setup(t);
  fake.writes.mergePull(FULL, await scaffold(gh));
  const { run_id: runId } = await dispatchWorkflow(gh, REPO, { workflow: WORKFLOW, ref: 'main', inputs: { dest: 'staging', host: 'h', sha: 's', deploy_id: 'dep_06' }, marker: 'dep_06' });
  let clock = Date.now();
  const pending = await followRun(gh, REPO, runId, { timeoutMs: 20_000, pollMs: 5_000, now: () => clock, sleep: async (ms) => void (clock += ms) });
  t.same([pending.run.status, pending.failing], ['queued', null], 'the bounded wait ran out with the run still queued');
  let reads = 0;
  const done = await followRun(gh, REPO, runId, {
    timeoutMs: 60_000,
    pollMs: 1,
    sleep: async () => {
      if (++reads === 2) fake.writes.completeRun(FULL, runId, 'failure', { job: 'deploy', step: 'kamal deploy -d staging' });
    },
  });
  t.same([done.run.status, done.run.conclusion], ['completed', 'failure']);
  t.match(done.failing, { job: 'deploy', step: 'kamal deploy -d staging' });
  fake.writes.completeRun(FULL, runId, 'success');
  t.equal((await followRun(gh, REPO, runId, { timeoutMs: 0 })).failing, null, 'a successful run has no failing job');
});

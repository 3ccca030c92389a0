// Repos, environments, scans and deploys in the dashboard: the REST routes added for it
// (environment delete, a repo's scans) at HTTP level, then the pages in real Chromium.
import t from 'tap';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { ScanService } from '../../control-plane/src/services/scan/service.ts';
import { deployServiceOf } from '../../control-plane/src/services/deploy/service.ts';
import { createDeploy, updateDeploy, upsertDeployStep } from '../../control-plane/src/db/deploys.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';
import { chromiumSkipReason, openBrowser, screenshot, serveDashboard } from '../helpers/dashboard.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { commitFixture, tempReposDir } from '../scan/fixture-repos.ts';

interface ErrorBody {
  error: string;
  message: string;
}

const repos = await tempReposDir();
t.teardown(repos.cleanup);
await commitFixture(repos.dir, 'python-fastapi', 'badri', 'my-fastapi-app');
const cp = await startTestControlPlane({ config: { rateLimit: { max: 10_000, anonymousMax: 10_000 } } });
t.teardown(() => cp.close());
cp.ctx.scanService = new ScanService({ db: cp.ctx.db, sourceFor: () => new LocalRepoSource({ reposDir: repos.dir }), now: cp.ctx.now });
await serveDashboard(cp);

t.test('DELETE /api/repos/{id}/environments/{environment_id} removes an environment, not one under a deploy', async (t) => {
  const repo = await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: 'acme/env-test' } });
  const env = await cp.api<{ id: string; name: string }>('POST', `/api/repos/${repo.body.id}/environments`, { body: { name: 'qa' } });
  const busy = await cp.api<{ id: string }>('POST', `/api/repos/${repo.body.id}/environments`, { body: { name: 'busy' } });
  await createDeploy(cp.ctx.db, { workspaceId: cp.workspaceId, repoId: repo.body.id, environmentId: busy.body.id, status: 'running' });
  const refused = await cp.api<ErrorBody>('DELETE', `/api/repos/${repo.body.id}/environments/${busy.body.id}`);
  t.equal(refused.status, 409);
  t.match(refused.body.message, /deploy under way/);
  const del = await cp.api<{ name: string }>('DELETE', `/api/repos/${repo.body.id}/environments/${env.body.id}`);
  t.equal(del.status, 200);
  t.equal(del.body.name, 'qa');
  const list = await cp.api<{ items: { name: string }[] }>('GET', `/api/repos/${repo.body.id}/environments`);
  t.same(list.body.items.map((e) => e.name), ['busy']);
  const again = await cp.api<ErrorBody>('DELETE', `/api/repos/${repo.body.id}/environments/${env.body.id}`);
  t.equal(again.status, 404);
  t.equal(again.body.error, 'environment_not_found');
  const other = await cp.createWorkspace('other-env');
  const theirs = await cp.api<ErrorBody>('DELETE', `/api/repos/${repo.body.id}/environments/${busy.body.id}`, { key: other.adminKey });
  t.equal(theirs.status, 404, "another workspace cannot delete it");
  t.equal(theirs.body.error, 'repo_not_found');
});

t.test('GET /api/repos/{id}/scans answers the latest scans of the repo', async (t) => {
  const repo = await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: 'badri/my-fastapi-app' } });
  const none = await cp.api<{ items: unknown[] }>('GET', `/api/repos/${repo.body.id}/scans`);
  t.same(none.body.items, []);
  const scan = await cp.api<{ scan_id: string }>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  const list = await cp.api<{ items: { scan_id: string; language: string }[] }>('GET', `/api/repos/${repo.body.id}/scans`);
  t.equal(list.body.items[0]?.scan_id, scan.body.scan_id);
  t.equal(list.body.items[0]?.language, 'python');
  t.equal((await cp.api('GET', '/api/repos/repo_nope/scans')).status, 404);
});

t.test('in the browser: connect a repo, scan it, add and delete environments, follow a deploy', { skip: prerequisite(chromiumSkipReason) }, async (t) => {
  const { page, pageErrors } = await openBrowser(t);
  await page.goto(`${cp.url}/`);
  await page.getByLabel('API key').fill(cp.adminKey);
  await page.keyboard.press('Enter');
  await page.getByRole('link', { name: 'Repos' }).click();

  await page.getByLabel('GitHub repository').fill('not a repo');
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByRole('alert').filter({ hasText: /repo/i }).waitFor();
  t.pass('a bad name is refused in words next to the form');

  const card = page.locator('section[data-repo="badri/my-fastapi-app"]');
  await card.waitFor();
  await card.getByRole('button', { name: /^Scan/ }).click();
  await card.locator('dd[data-field="Language"]').getByText('python').waitFor();
  t.equal(await card.locator('dd[data-field="Framework"]').textContent(), 'fastapi');
  t.match(await card.locator('dd[data-field="Confidence"]').textContent(), /^\d+ %$/, 'confidence');
  t.match(await card.locator('.evidence').textContent(), /requirements\.txt/, 'and the evidence');

  await card.getByLabel(/New environment/).fill('Bad Name');
  await card.getByRole('button', { name: 'Add environment' }).click();
  await card.getByRole('alert').waitFor();
  t.match(await card.getByRole('alert').textContent(), /lowercase/, 'a bad environment name is explained');
  for (const name of ['staging', 'production']) {
    await card.getByLabel(/New environment/).fill(name);
    await card.getByRole('button', { name: 'Add environment' }).click();
    await card.locator(`li[data-environment="${name}"]`).waitFor();
  }
  await screenshot(page, 'repos');
  const staging = card.locator('li[data-environment="staging"]');
  await staging.getByRole('button', { name: 'Delete' }).click();
  await staging.getByRole('button', { name: /Delete staging/ }).click();
  await staging.waitFor({ state: 'detached' });
  t.pass('an environment is deleted after a confirm');

  // A deploy as the deploy service records it, moved along while the page watches.
  const repoId = (await cp.api<{ items: { id: string; repo: string }[] }>('GET', '/api/repos')).body.items.find((r) => r.repo === 'badri/my-fastapi-app')?.id ?? '';
  const prod = (await cp.api<{ items: { id: string; name: string }[] }>('GET', `/api/repos/${repoId}/environments`)).body.items.find((e) => e.name === 'production');
  const deploy = await createDeploy(cp.ctx.db, { workspaceId: cp.workspaceId, repoId, environmentId: prod?.id ?? '', status: 'running', currentStep: 'provisioning', sha: 'abc1234def5678' });
  const at = Date.now();
  await upsertDeployStep(cp.ctx.db, deploy.id, 0, { name: 'provisioning', state: 'succeeded', attempts: 1, startedAt: at, finishedAt: at });
  await upsertDeployStep(cp.ctx.db, deploy.id, 1, { name: 'waiting_for_agent', state: 'running', attempts: 1, startedAt: at });
  await card.locator('li[data-environment="production"] a').click();
  const shown = page.locator(`section[data-deploy="${deploy.id}"]`);
  await shown.locator('li[data-step="waiting_for_agent"] .badge-running').waitFor();
  t.match(await shown.locator('li[data-step="provisioning"]').textContent(), /succeeded/, 'the step timeline');
  // The filter takes its value once the page has the environments (a fetch of its own): wait for it.
  const filter = await eventually('the environment filter to be set', async () => {
    const v = await page.getByLabel('Environment').inputValue();
    return v === '' ? undefined : v;
  }, 30_000);
  t.equal(filter, 'production', 'filtered to the environment');

  await upsertDeployStep(cp.ctx.db, deploy.id, 1, { name: 'waiting_for_agent', state: 'failed', attempts: 1, startedAt: at, finishedAt: Date.now(), errorKey: 'agent_not_connected', errorMessage: 'The agent did not connect in time.' });
  await updateDeploy(cp.ctx.db, deploy.id, { status: 'failed', failedStep: 'waiting_for_agent', errorKey: 'agent_not_connected', errorMessage: 'The agent did not connect in time.' }, Date.now() + 1);
  deployServiceOf(cp.ctx).events.changed(deploy.id);
  await shown.locator('li[data-step="waiting_for_agent"] .badge-failed').waitFor();
  t.match(await shown.textContent(), /Failed at waiting for agent: The agent did not connect in time\./, 'the end is shown as it happens, in words');
  await screenshot(page, 'deploys');
  t.same(pageErrors, [], 'no script errors');
});

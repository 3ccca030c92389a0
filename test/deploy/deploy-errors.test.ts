// deploy's contract errors and bad requests: each a registered key with a sentence that
// says what to do, and nothing started.
import t from 'tap';
import type { Test } from 'tap';
import { DEST, FULL, deployRig } from '../helpers/deploy-rig.ts';
import type { DeployBody, DeployRig } from '../helpers/deploy-rig.ts';

const WORKFLOW = 'on:\n  workflow_dispatch:\n    inputs:\n      deploy_id: { required: true }\njobs: {}\n';

async function noDeploys(t: Test, rig: DeployRig): Promise<void> {
  const list = await rig.cp.api<{ items: DeployBody[] }>('GET', '/api/deploys');
  t.same(list.body.items, [], 'no deploy was recorded');
}

t.test('a repository not connected to the workspace is repo_not_found', async (t) => {
  const rig = await deployRig(t);
  const res = await rig.deploy({ repo: 'acme/other' });
  t.equal(res.status, 404);
  t.same(res.body, { error: 'repo_not_found', message: 'No repo acme/other is connected to this workspace; connect it with POST /api/repos first.' });
  await noDeploys(t, rig);
});

t.test('an environment the repository does not have is environment_not_found', async (t) => {
  const rig = await deployRig(t);
  const res = await rig.deploy({ dest: 'production' });
  t.equal(res.status, 404);
  t.match(res.body, { error: 'environment_not_found', message: `No environment "production" exists for ${FULL}; create it with POST /api/repos/${rig.repoId}/environments.` });
  await noDeploys(t, rig);
});

t.test('a workspace without GitHub is github_app_not_installed, told how to configure it', async (t) => {
  const rig = await deployRig(t, { noGitHub: true });
  const res = await rig.deploy();
  t.equal(res.status, 422);
  t.match(res.body, { error: 'github_app_not_installed', message: /PUT \/api\/workspace\/github.*VMKIT_GITHUB_APP_ID/ });
  await noDeploys(t, rig);
});

t.test('a workspace without compute is compute_target_missing once the workflow is in place', async (t) => {
  const rig = await deployRig(t, { noCompute: true, files: { 'README.md': '# shop\n', '.github/workflows/vmkit-deploy.yml': WORKFLOW } });
  const res = await rig.deploy();
  t.equal(res.status, 409);
  t.match(res.body, { error: 'compute_target_missing', message: /PUT \/api\/workspace\/compute/ });
  await noDeploys(t, rig);
});

t.test('a key without deploys:write is refused', async (t) => {
  const rig = await deployRig(t);
  const { secret } = await rig.cp.createKey(['deploys:read']);
  const res = await rig.deploy({}, secret);
  t.equal(res.status, 403);
  t.equal((res.body as unknown as { error: string }).error, 'forbidden');
  await noDeploys(t, rig);
});

t.test('malformed requests are invalid_request', async (t) => {
  const rig = await deployRig(t);
  for (const body of [{ repo: 'not a repo', dest: DEST }, { repo: FULL, dest: DEST, sha: 'xyz' }, { repo: FULL, dest: DEST, extra: 1 }, { repo: FULL }]) {
    const res = await rig.cp.api<{ error: string }>('POST', '/api/deploys', { body });
    t.equal(res.status, 400, JSON.stringify(body));
    t.equal(res.body.error, 'invalid_request');
  }
  const list = await rig.cp.api<{ error: string }>('GET', `/api/deploys?dest=${DEST}`);
  t.equal(list.status, 400, 'dest without repo');
  await noDeploys(t, rig);
});

t.test('an unknown deploy id is deploy_not_found', async (t) => {
  const rig = await deployRig(t);
  const res = await rig.cp.api<{ error: string }>('GET', '/api/deploys/dep_01jx5p0qr8s6n3t4u2v7w0y1z');
  t.equal(res.status, 404);
  t.equal(res.body.error, 'deploy_not_found');
});

t.test("another workspace never sees a workspace's deploys", async (t) => {
  const rig = await deployRig(t);
  const mine = await rig.deploy();
  t.equal(mine.status, 200);
  const other = await rig.cp.createWorkspace('other');
  const get = await rig.cp.api<{ error: string }>('GET', `/api/deploys/${mine.body.id}`, { key: other.adminKey });
  t.equal(get.status, 404);
  t.equal(get.body.error, 'deploy_not_found');
  const list = await rig.cp.api<{ items: DeployBody[] }>('GET', '/api/deploys', { key: other.adminKey });
  t.same(list.body.items, []);
  const post = await rig.cp.api<{ error: string }>('POST', '/api/deploys', { key: other.adminKey, body: { repo: FULL, dest: DEST } });
  t.equal(post.body.error, 'repo_not_found', "its repos are not the other's");
});

// deploy's first phase against the local GitHub stand-in: the scaffolding pull request,
// one at a time, the deploy-key secret sealed for the repository, and GitHub's refusals
// as clear errors.
import t from 'tap';
import { parse } from 'yaml';
import { deployKeyStoreOf } from '../../control-plane/src/services/harden/context.ts';
import { ALL_PERMISSIONS, FULL, deployRig } from '../helpers/deploy-rig.ts';
import type { DeployBody } from '../helpers/deploy-rig.ts';

const BRANCH = 'vmkit/scaffolding';
const WORKFLOW = '.github/workflows/vmkit-deploy.yml';


t.test('the first call opens a pull request with the workflow and the Kamal config, and seals the deploy key into a secret', async (t) => {
  const rig = await deployRig(t);
  const res = await rig.deploy();
  t.equal(res.status, 200);
  t.match(res.body, { status: 'scaffolding_pr_open', deploy_id: null, pr_url: `https://github.com/${FULL}/pull/1`, app_url: null, run_url: null, instance_id: null });
  const pulls = rig.fake.writes.pulls(FULL);
  t.equal(pulls.length, 1, 'one pull request');
  t.match(pulls[0], { head: BRANCH, base: 'main', state: 'open' });
  const files = rig.fake.writes.branchFiles(FULL, BRANCH);
  for (const path of [WORKFLOW, 'config/deploy.yml', 'config/deploy.staging.yml']) {
    const text = files?.get(path);
    t.ok(text, `${path} is on the branch`);
    t.doesNotThrow(() => {
      parse(text ?? '');
    }, `${path} parses as YAML`);
  }
  t.notOk(rig.fake.writes.branchFiles(FULL, 'main')?.has(WORKFLOW), 'the default branch is untouched');
  t.equal(rig.fake.writes.secret(FULL, 'VMKIT_SSH_PRIVATE_KEY'), (await deployKeyStoreOf(rig.cp.ctx).get(rig.cp.workspaceId)).privateKey, "the secret opens to the workspace's deploy private key");
  const list = await rig.cp.api<{ items: DeployBody[] }>('GET', `/api/deploys?repo=${FULL}`);
  t.equal(list.body.items.length, 1, 'the answer is on record');
  t.match(list.body.items[0]?.steps, [{ name: 'scaffolding', state: 'succeeded', attempts: 1 }]);
  const audit = await rig.cp.api<{ items: { action: string }[] }>('GET', '/api/audit?action=deploys.scaffolding.pr_opened');
  t.equal(audit.body.items.length, 1, 'opening the pull request is audited');
});

t.test('a repeat call while the pull request is open answers the same one and starts nothing', async (t) => {
  const rig = await deployRig(t);
  const first = await rig.deploy();
  const again = await rig.deploy();
  t.equal(again.status, 200);
  t.match(again.body, { status: 'scaffolding_pr_open', pr_url: first.body.pr_url, deploy_id: null, instance_id: null });
  t.equal(rig.fake.writes.pulls(FULL).length, 1, 'never a second pull request');
  t.same(await rig.vms(), [], 'no VM');
});

t.test('two concurrent first calls open one pull request', async (t) => {
  const rig = await deployRig(t);
  const [a, b] = await Promise.all([rig.deploy(), rig.deploy()]);
  t.equal(a.body.pr_url, b.body.pr_url);
  t.equal(rig.fake.writes.pulls(FULL).length, 1);
});

t.test('a pull request closed without merging is said once; the next call opens a fresh one', async (t) => {
  const rig = await deployRig(t);
  const first = await rig.deploy();
  rig.fake.writes.closePull(FULL, 1);
  const said = await rig.deploy();
  t.equal(said.status, 200);
  t.match(said.body, { status: 'failed', failed_step: 'scaffolding', error_key: 'scaffolding_pr_closed', pr_url: first.body.pr_url });
  t.match(said.body.error_message, /closed without being merged.*Call deploy again to open a fresh one/);
  t.equal(rig.fake.writes.pulls(FULL).length, 1, 'no fresh pull request yet');
  const fresh = await rig.deploy();
  t.match(fresh.body, { status: 'scaffolding_pr_open', pr_url: `https://github.com/${FULL}/pull/2` });
  t.equal(rig.fake.writes.pulls(FULL).filter((p) => p.state === 'open').length, 1, 'one open pull request');
});

t.test('an empty repository is github_repo_empty', async (t) => {
  const rig = await deployRig(t);
  rig.fake.writes.emptyRepos.add(FULL);
  const res = await rig.deploy();
  t.equal(res.status, 409);
  t.match(res.body, { error: 'github_repo_empty', message: /push a first commit/i });
  t.equal(rig.fake.writes.pulls(FULL).length, 0);
});

t.test('an App without the Workflows permission is told which permission and that installations must approve it', async (t) => {
  const { workflows: _w, ...rest } = ALL_PERMISSIONS;
  const rig = await deployRig(t, { appPermissions: rest });
  const res = await rig.deploy();
  t.equal(res.status, 422);
  t.match(res.body, { error: 'github_permission_missing', message: /"Workflows" repository permission.*existing installation must then approve/ });
  t.equal(rig.fake.writes.pulls(FULL).length, 0, 'no pull request without the workflow');
});

t.test('an App that may not write secrets still opens the pull request, whose body says how to get the secret set', async (t) => {
  const { secrets: _s, ...rest } = ALL_PERMISSIONS;
  const rig = await deployRig(t, { appPermissions: rest });
  const res = await rig.deploy();
  t.match(res.body, { status: 'scaffolding_pr_open' });
  t.equal(rig.fake.writes.secret(FULL, 'VMKIT_SSH_PRIVATE_KEY'), null, 'no secret');
  t.match(rig.fake.writes.pulls(FULL)[0]?.body, /could not set the repository secret `VMKIT_SSH_PRIVATE_KEY`.*"Secrets" repository permission/);
});

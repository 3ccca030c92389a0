import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { FakeGitHub } from '../helpers/fake-github.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';

const GH_TOKEN = 'github_pat_second_workspace_0123';

const github = await FakeGitHub.start({
  tokens: [GH_TOKEN],
  repos: [{ owner: 'acme', name: 'shop', files: { 'package.json': '{"name":"shop"}', '.github/workflows/vmkit-deploy.yml': 'name: deploy\n' } }],
});
t.teardown(() => github.close());
const cp = await startTestControlPlane();
t.teardown(() => cp.close());

t.test('a second workspace deploys only once it configured GitHub and compute, and each missing one is named', async (t) => {
  const other = await cp.createWorkspace('second');
  const as = { key: other.adminKey };
  const repo = await cp.api<{ id: string }>('POST', '/api/repos', { ...as, body: { repo: 'acme/shop' } });
  t.equal(repo.status, 201);
  t.equal((await cp.api('POST', `/api/repos/${repo.body.id}/environments`, { ...as, body: { name: 'staging' } })).status, 201);

  const noGitHub = await cp.api<{ error: string; message: string }>('POST', '/api/deploys', { ...as, body: { repo: 'acme/shop', dest: 'staging' } });
  t.equal(noGitHub.body.error, 'github_app_not_installed');
  t.match(noGitHub.body.message, /PUT \/api\/workspace\/github/, 'says how to configure GitHub');

  t.equal((await cp.api('PUT', '/api/workspace/github', { ...as, body: { provider: 'github', token: GH_TOKEN, api_url: github.url } })).status, 200);
  const noCompute = await cp.api<{ error: string; message: string }>('POST', '/api/deploys', { ...as, body: { repo: 'acme/shop', dest: 'staging' } });
  t.equal(noCompute.body.error, 'compute_target_missing', "the workspace's own GitHub was used to see the workflow is there");
  t.match(noCompute.body.message, /PUT \/api\/workspace\/compute/);
  t.ok(github.requests.some((r) => r.authorization === `Bearer ${GH_TOKEN}`), "through the workspace's token");
  t.same(await rawRows(cp.ctx.db, sql`select count(*) as n from deploys`), [{ n: 0 }], 'no deploy was recorded for either refusal');
});

import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { createInstance, updateInstance } from '../../control-plane/src/db/instances.ts';
import { createAgent, updateAgent } from '../../control-plane/src/db/agents.ts';
import { createScan, updateScan } from '../../control-plane/src/db/scans.ts';
import { createDeploy, upsertDeployStep } from '../../control-plane/src/db/deploys.ts';

interface Repo {
  id: string;
  repo: string;
  owner: string;
  name: string;
  created_at: string;
}

t.test('REST resources', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());

  t.test('connecting a repo is idempotent and case-insensitive', async (t) => {
    const first = await cp.api<Repo>('POST', '/api/repos', { body: { repo: 'Badri/My-App' } });
    t.equal(first.status, 201);
    t.match(first.body, { repo: 'Badri/My-App', owner: 'Badri', name: 'My-App' });
    t.match(first.body.id, /^repo_[0-9a-z]{26}$/);
    const again = await cp.api<Repo>('POST', '/api/repos', { body: { repo: 'badri/my-app' } });
    t.equal(again.status, 200, 'the second time answers 200 with the same repo');
    t.equal(again.body.id, first.body.id);
    const list = await cp.api<{ items: Repo[] }>('GET', '/api/repos');
    t.same(list.body.items.map((r) => r.id), [first.body.id]);
    const one = await cp.api<Repo>('GET', `/api/repos/${first.body.id}`);
    t.same(one.body, first.body);
  });

  t.test('an unknown repo id is repo_not_found with the contract sentence', async (t) => {
    const res = await cp.api('GET', '/api/repos/repo_abc123');
    t.equal(res.status, 404);
    t.same(res.body, { error: 'repo_not_found', message: 'No repo with id repo_abc123 found in this workspace.' });
  });

  t.test('environments belong to a repo, are unique by name and listed by name', async (t) => {
    const repo = (await cp.api<Repo>('POST', '/api/repos', { body: { repo: 'acme/shop' } })).body;
    const staging = await cp.api<{ id: string; name: string; repo_id: string }>('POST', `/api/repos/${repo.id}/environments`, {
      body: { name: 'staging' },
    });
    t.equal(staging.status, 201);
    t.match(staging.body, { name: 'staging', repo_id: repo.id });
    t.match(staging.body.id, /^env_/);
    const dup = await cp.api<{ id: string }>('POST', `/api/repos/${repo.id}/environments`, { body: { name: 'staging' } });
    t.equal(dup.status, 200);
    t.equal(dup.body.id, staging.body.id);
    await cp.api('POST', `/api/repos/${repo.id}/environments`, { body: { name: 'production' } });
    const list = await cp.api<{ items: { name: string }[] }>('GET', `/api/repos/${repo.id}/environments`);
    t.same(list.body.items.map((e) => e.name), ['production', 'staging']);
  });

  t.test('keys: the secret is returned once, lists never show it, revoke is final', async (t) => {
    const expires = new Date(Date.now() + 86_400_000).toISOString();
    const created = await cp.api<{ id: string; secret: string; scopes: string[]; expires_at: string; prefix: string }>('POST', '/api/keys', {
      body: { name: 'deploy bot', scopes: ['deploys:write', 'deploys:read', 'deploys:read'], expires_at: expires },
    });
    t.equal(created.status, 201);
    t.match(created.body.secret, /^vmk_/);
    t.same(created.body.scopes, ['deploys:write', 'deploys:read'], 'duplicate scopes collapse');
    t.equal(created.body.expires_at, expires);
    t.ok(created.body.secret.startsWith(created.body.prefix), 'the prefix is the start of the secret');
    const list = await cp.api<{ items: Record<string, unknown>[] }>('GET', '/api/keys');
    t.notOk(JSON.stringify(list.body).includes(created.body.secret), 'the list never shows a secret');
    t.ok(list.body.items.every((k) => !('secret' in k) && !('hash' in k)));
    const revoked = await cp.api<{ revoked_at: string }>('DELETE', `/api/keys/${created.body.id}`);
    const again = await cp.api<{ revoked_at: string }>('DELETE', `/api/keys/${created.body.id}`);
    t.equal(again.status, 200);
    t.equal(again.body.revoked_at, revoked.body.revoked_at, 'revoking twice keeps the first time');
    t.same(await cp.api('DELETE', '/api/keys/key_nope').then((r) => r.body), {
      error: 'key_not_found',
      message: 'No API key with id key_nope found in this workspace.',
    });
  });

  t.test('instances are listed with their agent state', async (t) => {
    const db = cp.ctx.db;
    const bare = await createInstance(db, { workspaceId: cp.workspaceId, name: 'no-agent', provider: 'local' });
    const vm = await createInstance(db, {
      workspaceId: cp.workspaceId,
      name: 'web-1',
      provider: 'local',
      status: 'running',
      sshHost: '10.77.0.2',
      sshPort: 22,
    });
    const agent = await createAgent(db, { workspaceId: cp.workspaceId, instanceId: vm.id, publicKey: 'k'.repeat(43) });
    const seen = Date.now();
    await updateAgent(db, agent.id, { state: 'connected', connectedAt: seen, lastSeen: seen, agentVersion: '0.1.0', hostname: 'web-1', os: 'linux' });
    await updateInstance(db, vm.id, { hardenedAt: seen });

    const list = await cp.api<{ items: Record<string, unknown>[] }>('GET', '/api/instances');
    t.equal(list.status, 200);
    t.same(list.body.items.map((i) => i.id), [bare.id, vm.id]);
    t.match(list.body.items[0], { name: 'no-agent', status: 'provisioning', ssh: null, agent: null, hardened_at: null });
    t.match(list.body.items[1], {
      name: 'web-1',
      status: 'running',
      provider: 'local',
      ssh: { host: '10.77.0.2', port: 22 },
      hardened_at: new Date(seen).toISOString(),
      agent: { id: agent.id, state: 'connected', last_seen: new Date(seen).toISOString(), agent_version: '0.1.0', hostname: 'web-1' },
    });
    const one = await cp.api('GET', `/api/instances/${vm.id}`);
    t.same(one.body, list.body.items[1]);
    const missing = await cp.api<{ error: string }>('GET', '/api/instances/inst_nope');
    t.equal(missing.status, 404);
    t.equal(missing.body.error, 'instance_not_found');
  });

  t.test('scans and deploys are readable by id with the contract fields', async (t) => {
    const db = cp.ctx.db;
    const repo = (await cp.api<Repo>('POST', '/api/repos', { body: { repo: 'badri/my-fastapi-app' } })).body;
    const env = (await cp.api<{ id: string }>('POST', `/api/repos/${repo.id}/environments`, { body: { name: 'staging' } })).body;
    const scan = await createScan(db, { workspaceId: cp.workspaceId, repo: repo.repo, repoId: repo.id });
    await updateScan(db, scan.id, {
      status: 'succeeded',
      language: 'python',
      framework: 'fastapi',
      buildpack: 'gcr.io/buildpacks/builder:v1',
      procfileDetected: true,
      dockerfileDetected: false,
      finishedAt: Date.now(),
    });
    const s = await cp.api<Record<string, unknown>>('GET', `/api/scans/${scan.id}`);
    t.equal(s.status, 200);
    t.match(s.body, {
      scan_id: scan.id,
      language: 'python',
      framework: 'fastapi',
      buildpack: 'gcr.io/buildpacks/builder:v1',
      procfile_detected: true,
      dockerfile_detected: false,
      status: 'succeeded',
    });

    const deploy = await createDeploy(db, { workspaceId: cp.workspaceId, repoId: repo.id, environmentId: env.id, status: 'running', sha: 'abc1234' });
    await upsertDeployStep(db, deploy.id, 0, { name: 'provision', state: 'succeeded', startedAt: 1, finishedAt: 2 });
    await upsertDeployStep(db, deploy.id, 1, { name: 'harden', state: 'running', startedAt: 3 });
    await upsertDeployStep(db, deploy.id, 1, { name: 'harden', state: 'failed', errorKey: 'lockout_risk', startedAt: 3, finishedAt: 4 });
    const d = await cp.api<{ steps: { name: string; state: string; error_key: string | null }[] } & Record<string, unknown>>(
      'GET',
      `/api/deploys/${deploy.id}`,
    );
    t.equal(d.status, 200);
    t.match(d.body, { deploy_id: deploy.id, status: 'running', pr_url: null, app_url: null, run_url: null, instance_id: null, sha: 'abc1234' });
    t.same(
      d.body.steps.map((x) => [x.name, x.state, x.error_key]),
      [
        ['provision', 'succeeded', null],
        ['harden', 'failed', 'lockout_risk'],
      ],
      'a step updated in place, not duplicated',
    );
    t.equal((await cp.api<{ error: string }>('GET', '/api/deploys/dep_nope')).body.error, 'deploy_not_found');
    t.equal((await cp.api<{ error: string }>('GET', '/api/scans/sc_nope')).body.error, 'scan_not_found');
  });

  t.test('the OpenAPI document is generated from the route schemas', async (t) => {
    const res = await cp.api<{
      openapi: string;
      paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, unknown> } }> } }>>;
    }>('GET', '/api/openapi.json', { key: null });
    t.equal(res.status, 200);
    t.match(res.body.openapi, /^3\./);
    for (const path of ['/api/keys', '/api/keys/{id}', '/api/repos', '/api/repos/{id}', '/api/repos/{id}/environments', '/api/instances', '/api/instances/{id}', '/api/deploys/{id}', '/api/scans/{id}', '/api/audit', '/healthz']) {
      t.ok(res.body.paths[path], `documents ${path}`);
    }
    const body = res.body.paths['/api/repos']?.post?.requestBody?.content['application/json']?.schema;
    t.ok(body?.properties.repo, 'POST /api/repos documents its repo field');
  });
});

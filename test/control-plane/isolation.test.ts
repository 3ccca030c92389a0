import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { createAgent } from '../../control-plane/src/db/agents.ts';
import { createScan } from '../../control-plane/src/db/scans.ts';
import { createDeploy } from '../../control-plane/src/db/deploys.ts';

t.test('a key of workspace A gets 404 for every resource of workspace B', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());
  const b = await cp.createWorkspace('b');
  const asB = { key: b.adminKey };

  // Workspace B's resources, made through its own key and its own rows.
  const repo = (await cp.api<{ id: string }>('POST', '/api/repos', { ...asB, body: { repo: 'bcorp/app' } })).body;
  const env = (await cp.api<{ id: string }>('POST', `/api/repos/${repo.id}/environments`, { ...asB, body: { name: 'staging' } })).body;
  const keyB = (await cp.api<{ id: string }>('POST', '/api/keys', { ...asB, body: { name: 'b ci', scopes: ['repos:read'] } })).body;
  const db = cp.ctx.db;
  const inst = await createInstance(db, { workspaceId: b.workspaceId, name: 'b-vm', provider: 'local', environmentId: env.id });
  await createAgent(db, { workspaceId: b.workspaceId, instanceId: inst.id, publicKey: 'x'.repeat(43) });
  const scan = await createScan(db, { workspaceId: b.workspaceId, repo: 'bcorp/app', repoId: repo.id });
  const deploy = await createDeploy(db, { workspaceId: b.workspaceId, repoId: repo.id, environmentId: env.id, status: 'running' });

  // Every route that takes an id, as A's admin key (admin: scope is never the reason).
  const cases: [string, string, string, unknown?][] = [
    ['GET', `/api/repos/${repo.id}`, 'repo_not_found'],
    ['GET', `/api/repos/${repo.id}/environments`, 'repo_not_found'],
    ['POST', `/api/repos/${repo.id}/environments`, 'repo_not_found', { name: 'prod' }],
    ['GET', `/api/instances/${inst.id}`, 'instance_not_found'],
    ['GET', `/api/deploys/${deploy.id}`, 'deploy_not_found'],
    ['GET', `/api/scans/${scan.id}`, 'scan_not_found'],
    ['DELETE', `/api/keys/${keyB.id}`, 'key_not_found'],
  ];
  for (const [method, path, key, body] of cases) {
    const res = await cp.api<{ error: string; message: string }>(method, path, body === undefined ? {} : { body });
    t.equal(res.status, 404, `${method} ${path.replace(/[a-z]+_[0-9a-z]{26}/g, '{id}')}: 404`);
    t.equal(res.body.error, key, `${method} ${path.replace(/[a-z]+_[0-9a-z]{26}/g, '{id}')}: ${key}`);
  }

  // Lists of A show nothing of B.
  for (const path of ['/api/repos', '/api/instances', '/api/keys']) {
    const res = await cp.api<{ items: { id: string }[] }>('GET', path);
    const text = JSON.stringify(res.body);
    for (const id of [repo.id, inst.id, keyB.id, b.workspaceId]) t.notOk(text.includes(id), `${path} does not show ${id.split('_')[0]}_ of B`);
  }

  // A's audit log holds A's own attempts at B's ids, but no request made by B.
  const keysOfA = new Set((await cp.api<{ items: { id: string }[] }>('GET', '/api/keys')).body.items.map((k) => k.id));
  const auditOfA = await cp.api<{ items: { key_id: string }[] }>('GET', '/api/audit?limit=500');
  t.ok(auditOfA.body.items.length > 0);
  t.ok(
    auditOfA.body.items.every((r) => keysOfA.has(r.key_id)),
    "every row of A's audit log was made by a key of A",
  );

  // And B still sees its own.
  t.equal((await cp.api('GET', `/api/repos/${repo.id}`, asB)).status, 200, 'B reads its repo');
  t.equal((await cp.api('GET', `/api/instances/${inst.id}`, asB)).status, 200, 'B reads its instance');
  t.equal((await cp.api('GET', `/api/deploys/${deploy.id}`, asB)).status, 200, 'B reads its deploy');
  t.equal((await cp.api('GET', `/api/scans/${scan.id}`, asB)).status, 200, 'B reads its scan');
  const keysOfB = await cp.api<{ items: { id: string }[] }>('GET', '/api/keys', asB);
  t.ok(keysOfB.body.items.some((k) => k.id === keyB.id), 'B lists its key');

  // The same repo name can be connected in both workspaces, as two repos.
  const aRepo = await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: 'bcorp/app' } });
  t.equal(aRepo.status, 201);
  t.not(aRepo.body.id, repo.id);
});

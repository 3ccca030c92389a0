import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';
import { computeProviderOf } from '../../control-plane/src/services/instances.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, sshBanner } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

interface InstanceBody {
  id: string;
  status: string;
  provider: string;
  ssh: { host: string; port: number } | null;
  agent: { state: string } | null;
}

t.test('POST /api/instances with provider local provisions a sandbox that turns running when its agent connects; DELETE destroys it', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(async () => {
    const local = computeProviderOf(cp.ctx, 'local');
    if (local instanceof LocalSandboxProvider) {
      for (const s of await local.list()) await local.destroy(s.ref).catch(() => undefined);
    }
    await cp.close();
  });

  const created = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'web-1', provider: 'local' } });
  t.equal(created.status, 201, JSON.stringify(created.body));
  t.equal(created.body.provider, 'local');
  t.match(created.body.status, /^(provisioning|running)$/);
  t.match(created.body.ssh?.host, /^10\.201\.\d+\.\d+$/, 'the sandbox address is the SSH address');
  t.equal(created.body.ssh?.port, 22);
  t.match(await sshBanner(created.body.ssh?.host ?? '', 22), /^SSH-2\.0-OpenSSH_/);

  let got = created.body;
  for (let i = 0; i < 120 && got.status !== 'running'; i++) {
    await new Promise((r) => setTimeout(r, 250));
    got = (await cp.api<InstanceBody>('GET', `/api/instances/${created.body.id}`)).body;
  }
  t.equal(got.status, 'running', 'running once the agent connected');
  t.equal(got.agent?.state, 'connected');

  const dir = join(cp.dataDir, 'sandboxes', created.body.id);
  t.ok(existsSync(dir), 'the sandbox lives under <dataDir>/sandboxes');
  const deleted = await cp.api<InstanceBody>('DELETE', `/api/instances/${created.body.id}`);
  t.equal(deleted.status, 200, JSON.stringify(deleted.body));
  t.equal(deleted.body.status, 'destroyed');
  t.equal(deleted.body.ssh, null);
  t.notOk(existsSync(dir), 'the sandbox folder is gone');
  await t.rejects(sshBanner(created.body.ssh?.host ?? '', 22, 1000), 'nothing answers on its address');
  const again = await cp.api<InstanceBody>('DELETE', `/api/instances/${created.body.id}`);
  t.equal(again.status, 200, 'deleting twice is fine');
});

t.test('an unknown provider is refused and a missing instance is not found', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const bad = await cp.api<{ error: string }>('POST', '/api/instances', { body: { name: 'x', provider: 'nimbus' } });
  t.equal(bad.status, 409);
  t.equal(bad.body.error, 'compute_target_missing');
  const missing = await cp.api<{ error: string }>('DELETE', '/api/instances/inst_01jx0000000000000000000000');
  t.equal(missing.status, 404);
  t.equal(missing.body.error, 'instance_not_found');
  const manual = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'by-hand' } });
  t.equal(manual.body.provider, 'manual');
  const del = await cp.api<InstanceBody>('DELETE', `/api/instances/${manual.body.id}`);
  t.equal(del.status, 200);
  t.equal(del.body.status, 'destroyed', 'a manual instance is only marked destroyed');
});

// The instances service with a stand-in compute provider: no root needed.
import t from 'tap';
import type { Test } from 'tap';
import { ComputeError } from '../../control-plane/src/providers/compute/types.ts';
import type { ComputeProvider, CreateVmSpec, CreatedVm, VmStatus } from '../../control-plane/src/providers/compute/types.ts';
import { getInstanceById } from '../../control-plane/src/db/instances.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

interface InstanceBody {
  id: string;
  name: string;
  status: string;
  provider: string;
  ssh: { host: string; port: number } | null;
}

/** Records what the service asks; fails when told to. */
class RecordingProvider implements ComputeProvider {
  readonly name = 'recording';
  created: CreateVmSpec[] = [];
  destroyed: string[] = [];
  failCreate: ComputeError | undefined;
  failDestroy: ComputeError | undefined;
  create(spec: CreateVmSpec): Promise<CreatedVm> {
    this.created.push(spec);
    if (this.failCreate) return Promise.reject(this.failCreate);
    return Promise.resolve({ ref: `vm-${this.created.length}`, address: '192.0.2.10', ssh_port: 2222, root_password: 'never-stored' });
  }
  status(): Promise<VmStatus> {
    return Promise.resolve('running');
  }
  destroy(ref: string): Promise<void> {
    if (this.failDestroy) return Promise.reject(this.failDestroy);
    this.destroyed.push(ref);
    return Promise.resolve();
  }
}

async function setup(t: Test) {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const provider = new RecordingProvider();
  cp.ctx.computeProviders = { recording: provider };
  return { cp, provider };
}

t.test('provisioning hands the provider the instance id, name and an agent enrollment, and stores the SSH address but not the password', async (t) => {
  const { cp, provider } = await setup(t);
  const res = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'api-1', provider: 'recording' } });
  t.equal(res.status, 201);
  t.equal(res.body.provider, 'recording');
  t.equal(res.body.status, 'provisioning', 'provisioning until its agent connects');
  t.same(res.body.ssh, { host: '192.0.2.10', port: 2222 });
  const spec = provider.created[0];
  t.equal(spec?.instance_id, res.body.id);
  t.equal(spec?.name, 'api-1');
  t.equal(spec?.bootstrap?.agent?.control_plane_url, cp.url);
  t.match(spec?.bootstrap?.agent?.token, /^vmkenr_/);
  t.match(spec?.bootstrap?.agent?.control_plane_keys?.[0], /^ed25519:[0-9a-f]{32}:[A-Za-z0-9_-]{43}$/);
  const row = await getInstanceById(cp.ctx.db, res.body.id);
  t.same(row?.providerRef, { ref: 'vm-1' }, 'only the provider ref is persisted');
  t.notMatch(JSON.stringify(row), /never-stored/);
});

t.test('a provider failure answers with its error key and leaves the instance failed', async (t) => {
  const { cp, provider } = await setup(t);
  provider.failCreate = new ComputeError('sandbox_unavailable', 'The local VM sandbox cannot run here: it needs root.');
  const res = await cp.api<{ error: string; message: string }>('POST', '/api/instances', { body: { name: 'api-2', provider: 'recording' } });
  t.equal(res.status, 503);
  t.same(res.body, { error: 'sandbox_unavailable', message: 'The local VM sandbox cannot run here: it needs root.' });
  const list = await cp.api<{ items: InstanceBody[] }>('GET', '/api/instances');
  t.same(
    list.body.items.map((i) => [i.name, i.status]),
    [['api-2', 'failed']],
  );
});

t.test('DELETE destroys through the provider with the stored ref, and passes its failure on', async (t) => {
  const { cp, provider } = await setup(t);
  const made = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'api-3', provider: 'recording' } });
  provider.failDestroy = new ComputeError('provision_failed', 'The provider could not remove the VM.');
  const failed = await cp.api<{ error: string }>('DELETE', `/api/instances/${made.body.id}`);
  t.equal(failed.status, 502);
  t.equal(failed.body.error, 'provision_failed');
  t.equal((await cp.api<InstanceBody>('GET', `/api/instances/${made.body.id}`)).body.status, 'provisioning', 'unchanged after a failed destroy');
  provider.failDestroy = undefined;
  const ok = await cp.api<InstanceBody>('DELETE', `/api/instances/${made.body.id}`);
  t.equal(ok.status, 200);
  t.equal(ok.body.status, 'destroyed');
  t.same(provider.destroyed, ['vm-1']);
  const noScope = await cp.createKey(['instances:read']);
  const forbidden = await cp.api<{ error: string }>('DELETE', `/api/instances/${made.body.id}`, { key: noScope.secret });
  t.equal(forbidden.status, 403, 'DELETE needs instances:write');
});

t.test('a ref known up front is stored before create, so DELETE undoes a create that never finished', async (t) => {
  const { cp, provider } = await setup(t);
  const withRef = Object.assign(provider, { refFor: (id: string) => `early-${id}` });
  withRef.failCreate = new ComputeError('provision_failed', 'The VM did not boot.');
  const res = await cp.api<{ error: string }>('POST', '/api/instances', { body: { name: 'api-4', provider: 'recording' } });
  t.equal(res.status, 502);
  const [row] = (await cp.api<{ items: InstanceBody[] }>('GET', '/api/instances')).body.items;
  t.equal(row?.status, 'failed');
  const del = await cp.api<InstanceBody>('DELETE', `/api/instances/${row?.id ?? ''}`);
  t.equal(del.status, 200);
  t.same(provider.destroyed, [`early-${row?.id ?? ''}`], 'the half-made VM is destroyed by its early ref');
});

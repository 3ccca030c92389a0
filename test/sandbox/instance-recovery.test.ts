// Start-up reconciliation of instances a killed control plane left waiting, with a
// stand-in compute provider (no root needed). The real kill is in
// test/control-plane/crash-provisioning.test.ts.
import t from 'tap';
import type { Test } from 'tap';
import { createAgent, updateAgent } from '../../control-plane/src/db/agents.ts';
import { createInstance, getInstanceById } from '../../control-plane/src/db/instances.ts';
import type { NewInstance } from '../../control-plane/src/db/instances.ts';
import type { ComputeProvider, CreatedVm, VmStatus } from '../../control-plane/src/providers/compute/types.ts';
import { instancesToRecover, recoverInstance } from '../../control-plane/src/services/instance-recovery.ts';
import { provisionInstance } from '../../control-plane/src/services/instances.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';

class StandInProvider implements ComputeProvider {
  readonly name = 'standin';
  vmStatus: VmStatus = 'running';
  destroyed: string[] = [];
  create(): Promise<CreatedVm> {
    return Promise.reject(new Error('not used here'));
  }
  status(): Promise<VmStatus> {
    return Promise.resolve(this.vmStatus);
  }
  destroy(ref: string): Promise<void> {
    this.destroyed.push(ref);
    return Promise.resolve();
  }
}

async function setup(t: Test) {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const provider = new StandInProvider();
  cp.ctx.computeProviders = { standin: provider };
  const make = (fields: Partial<NewInstance> = {}) =>
    createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: uniqueInstanceName('vm'), provider: 'standin', status: 'provisioning', ...fields });
  const recover = async (id: string) => {
    const row = (await instancesToRecover(cp.ctx)).find((r) => r.instance.id === id);
    if (!row) throw new Error(`${id} is not among the instances to recover`);
    return recoverInstance(cp.ctx, row);
  };
  return { cp, provider, make, recover };
}

t.test('a create that never returned is failed and undone through the ref stored before it', async (t) => {
  const { cp, provider, make, recover } = await setup(t);
  const inst = await make({ providerRef: { ref: 'vm-early' } });
  t.equal(await recover(inst.id), 'failed');
  t.same(provider.destroyed, ['vm-early'], 'the provider removed what it had made');
  const row = await getInstanceById(cp.ctx.db, inst.id);
  t.equal(row?.status, 'failed');
  t.match(row?.statusReason, /stopped while the VM was being created\. What the provider had made was removed\./);
});

t.test('a create that never returned and left no ref is failed with a reason that says what to check by hand', async (t) => {
  const { cp, provider, make, recover } = await setup(t);
  const inst = await make();
  t.equal(await recover(inst.id), 'failed');
  t.same(provider.destroyed, []);
  t.match((await getInstanceById(cp.ctx.db, inst.id))?.statusReason, /removed by hand/);
});

t.test('a created VM the provider no longer has is failed and its remains removed', async (t) => {
  const { cp, provider, make, recover } = await setup(t);
  provider.vmStatus = 'missing';
  const inst = await make({ providerRef: { ref: 'vm-gone' }, sshHost: '192.0.2.7', sshPort: 22 });
  t.equal(await recover(inst.id), 'failed');
  t.same(provider.destroyed, ['vm-gone']);
  const row = await getInstanceById(cp.ctx.db, inst.id);
  t.match(row?.statusReason, /is missing after a control-plane restart/);
  t.equal(row?.sshHost, null, 'the address of a removed VM is forgotten');
});

t.test('a created VM that is up waits for its agent, and fails when the agent does not come in time', async (t) => {
  const { cp, provider, make, recover } = await setup(t);
  cp.ctx.agentConnectTimeoutMs = 300;
  const inst = await make({ providerRef: { ref: 'vm-up' }, sshHost: '192.0.2.8', sshPort: 22 });
  t.equal(await recover(inst.id), 'waiting_for_agent');
  t.equal((await getInstanceById(cp.ctx.db, inst.id))?.status, 'provisioning', 'still provisioning while the agent may come');
  const row = await eventually('the agent deadline', async () => {
    const r = await getInstanceById(cp.ctx.db, inst.id);
    return r?.status === 'failed' && /was removed/.test(r.statusReason ?? '') ? r : undefined;
  }, 30_000);
  t.match(row.statusReason, /vmkit-agent did not connect within/);
  t.same(provider.destroyed, ['vm-up']);
});

t.test('an instance whose agent connected before the crash is running, provisioned or manual', async (t) => {
  const { cp, make, recover } = await setup(t);
  for (const [status, provider] of [['provisioning', 'standin'], ['awaiting_agent', 'manual']] as const) {
    const inst = await make({ status, provider, sshHost: '192.0.2.9' });
    const agent = await createAgent(cp.ctx.db, { workspaceId: cp.workspaceId, instanceId: inst.id, publicKey: 'x' });
    await updateAgent(cp.ctx.db, agent.id, { connectedAt: Date.now() - 1000 });
    t.equal(await recover(inst.id), 'running', status);
    t.equal((await getInstanceById(cp.ctx.db, inst.id))?.status, 'running');
  }
});

t.test('a provider instance is provisioning from its first write: a kill before the create leaves nothing that looks like a manual instance', async (t) => {
  const { cp, provider } = await setup(t);
  let seen: string | undefined;
  await t.rejects(
    provisionInstance(cp.ctx, {
      workspaceId: cp.workspaceId,
      name: uniqueInstanceName('vm'),
      environmentId: null,
      provider: 'standin',
      // The moment a caller persists the id: what a SIGKILL right after would leave behind.
      onRegistered: async (id) => void (seen = (await getInstanceById(cp.ctx.db, id))?.status),
    }),
  );
  t.equal(seen, 'provisioning');
  t.same(provider.destroyed, []);
});

t.test('a provider instance an earlier version left awaiting_agent with no VM is failed, not left waiting', async (t) => {
  const { cp, make, recover } = await setup(t);
  const inst = await make({ status: 'awaiting_agent' });
  t.equal(await recover(inst.id), 'failed');
  t.match(await getInstanceById(cp.ctx.db, inst.id), { status: 'failed', statusReason: /stopped before the VM was created/ });
});

t.test('a manual instance whose agent never connected keeps waiting', async (t) => {
  const { cp, make, recover } = await setup(t);
  const inst = await make({ status: 'awaiting_agent', provider: 'manual' });
  t.equal(await recover(inst.id), 'unchanged');
  t.equal((await getInstanceById(cp.ctx.db, inst.id))?.status, 'awaiting_agent');
});

t.test('a user who deletes the instance meanwhile wins over the reconciliation', async (t) => {
  const { cp, provider, make } = await setup(t);
  const inst = await make({ providerRef: { ref: 'vm-x' } });
  const [row] = (await instancesToRecover(cp.ctx)).filter((r) => r.instance.id === inst.id);
  const del = await cp.api<{ status: string }>('DELETE', `/api/instances/${inst.id}`);
  t.equal(del.body.status, 'destroyed');
  t.equal(await recoverInstance(cp.ctx, row!), 'unchanged');
  t.equal((await getInstanceById(cp.ctx.db, inst.id))?.status, 'destroyed', 'still destroyed');
  t.same(provider.destroyed, ['vm-x'], 'destroyed once, by the DELETE');
});

// A control plane stopped in the middle of a deploy step and started again on the same
// data dir and port: the same deploy continues from its last completed step and ends
// with one VM, one DNS record and one dispatch. (Process-level SIGKILL tests live in
// the crash tests; these stop the app in-process at chosen, deterministic points.)
import t from 'tap';
import type { ComputeProvider, CreateVmSpec } from '../../control-plane/src/providers/compute/types.ts';
import { eventually } from '../helpers/cp-process.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { FULL, deployRig } from '../helpers/deploy-rig.ts';
import type { DeployBody } from '../helpers/deploy-rig.ts';

t.setTimeout(900_000);

if (fileNeeds(sandboxSkipReason)) {
  // VM creates wait here while `held`; a create of an earlier control plane never goes on.
  let generation = 0;
  let held = true;
  let createAsked: () => void = () => undefined;
  const asked = new Promise<void>((resolve) => (createAsked = resolve));
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const holding = (p: ComputeProvider): ComputeProvider => {
    const mine = ++generation;
    return {
      name: p.name,
      ...(p.refFor ? { refFor: (id: string) => p.refFor?.(id) ?? id } : {}),
      status: (ref) => p.status(ref),
      destroy: (ref) => p.destroy(ref),
      async create(spec: CreateVmSpec) {
        if (held) {
          createAsked();
          await released;
          if (mine !== generation) throw new Error('its control plane was stopped');
        }
        return p.create(spec);
      },
    };
  };
  const rig = await deployRig(t, { wrapCompute: holding });
  const atRun = (d: DeployBody) => d.status !== 'running' || d.steps.some((s) => s.name === 'running_workflow' && s.state === 'running');
  const runsOf = (id: string) => rig.fake.writes.runs(FULL).filter((r) => r.inputs.deploy_id === id);
  const step = (d: DeployBody, name: string) => d.steps.find((s) => s.name === name);

  await rig.deploy();
  rig.fake.writes.mergePull(FULL, 1);

  t.test('stopped while the VM is being created: the same deploy ends with one VM', async (t) => {
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    await asked;
    const first = await rig.get(id);
    t.ok(first.body.instance_id, 'the instance id is on the deploy before the VM is created');
    await rig.cp.restart();
    // The restarted control plane has taken its providers (its create is held too) before
    // the release: else the stopped one's create, still waiting, would count as current.
    // (The resumed drive reaches them after restart() resolves, later on PostgreSQL.)
    await eventually('the restarted control plane to take its compute provider', () => (generation === 2 ? true : undefined));
    held = false;
    release();

    const running = await rig.until(id, atRun, 'the resumed deploy to reach the run');
    t.equal(running.status, 'running', `still running: ${running.error_message ?? ''}`);
    t.match(step(running, 'provisioning'), { state: 'succeeded', attempts: 2 }, 'provisioning ran again');
    const [run] = runsOf(id);
    if (!run) throw new Error('no run was dispatched');
    rig.fake.writes.completeRun(FULL, run.id, 'success');
    const done = await rig.until(id, (d) => d.status !== 'running');
    t.match(done, { status: 'succeeded', app_url: 'https://shop-staging.vmkit.internal' });
    t.equal((await rig.vms()).length, 1, 'one VM');
    const instances = await rig.cp.api<{ items: { id: string; status: string }[] }>('GET', '/api/instances');
    t.same(instances.body.items.filter((i) => i.status !== 'failed').map((i) => i.id), [done.instance_id], 'one live instance: the deploy’s');
    t.equal((await rig.dnsStore.list()).length, 1, 'one DNS record');
    t.equal(runsOf(id).length, 1, 'one dispatch');
  });

  t.test('stopped after the dispatch, before its run was known: the run is found by name, not dispatched again', async (t) => {
    rig.fake.writes.dispatchMode = 'no_content';
    rig.fake.writes.runsListedAfterReads = Number.MAX_SAFE_INTEGER;
    t.teardown(() => {
      rig.fake.writes.dispatchMode = 'details';
      rig.fake.writes.runsListedAfterReads = 0;
    });
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    await eventually('the workflow to be dispatched', () => (runsOf(id).length > 0 ? true : undefined), 300_000);
    await rig.cp.restart();
    rig.fake.writes.runsListedAfterReads = 0;

    const running = await rig.until(id, atRun, 'the resumed deploy to find its run');
    t.match(step(running, 'dispatching'), { state: 'succeeded', attempts: 2, detail: { found_by: 'run_name_after_restart' } });
    t.equal(runsOf(id).length, 1, 'one dispatch');
    const [run] = runsOf(id);
    if (!run) throw new Error('no run');
    t.equal(running.run_url, `https://github.com/${FULL}/actions/runs/${run.id}`);
    rig.fake.writes.completeRun(FULL, run.id, 'success');
    t.match(await rig.until(id, (d) => d.status !== 'running'), { status: 'succeeded' });
  });

  t.test('stopped while the run is followed: the same deploy follows it to the end', async (t) => {
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    const before = await rig.until(id, atRun, 'the run to be followed');
    t.equal(before.status, 'running');
    await rig.cp.restart();
    const [run] = runsOf(id);
    if (!run) throw new Error('no run');
    rig.fake.writes.completeRun(FULL, run.id, 'failure', { job: 'Deploy to staging', step: 'Deploy with Kamal' });
    const done = await rig.until(id, (d) => d.status !== 'running');
    t.match(done, { status: 'failed', failed_step: 'running_workflow', error_key: 'workflow_run_failed', run_url: `https://github.com/${FULL}/actions/runs/${run.id}` });
    t.match(step(done, 'running_workflow'), { state: 'failed', attempts: 2 });
    t.equal(runsOf(id).length, 1, 'one dispatch');
    t.equal((await rig.vms()).length, 1, 'still one VM');
    const audit = await rig.cp.api<{ items: { action: string; target_ids: Record<string, string> }[] }>('GET', '/api/audit?action=deploys.resumed');
    t.ok(audit.body.items.some((a) => a.target_ids?.id === id), 'the resume is in the audit trail');
  });

  t.test('stopped while the VM is hardened: the same deploy finishes, the restarted control plane joining the harden run', async (t) => {
    // A second environment: a fresh VM to harden.
    const env = await rig.cp.api<{ id: string }>('POST', `/api/repos/${rig.repoId}/environments`, { body: { name: 'production' } });
    t.equal(env.status, 201);
    rig.fake.writes.autoRun = 'success';
    t.teardown(() => void (rig.fake.writes.autoRun = null));
    const started = await rig.deploy({ dest: 'production' });
    const id = started.body.deploy_id ?? '';
    const at = await rig.until(id, (d) => d.status !== 'running' || step(d, 'hardening')?.state === 'running', 'hardening to start');
    t.equal(at.status, 'running', `still running: ${at.error_message ?? ''}`);
    await rig.cp.restart();
    const left = await rig.get(id);
    t.equal(step(left.body, 'hardening')?.state, 'running', 'the stop left hardening under way, not failed');

    const done = await rig.until(id, (d) => d.status !== 'running');
    t.match(done, { status: 'succeeded', app_url: 'https://shop-production.vmkit.internal' });
    t.match(step(done, 'hardening'), { state: 'succeeded', attempts: 2 });
    const inst = await rig.cp.api<{ hardened_at: string | null; environment_id: string }>('GET', `/api/instances/${done.instance_id ?? ''}`);
    t.match(inst.body, { environment_id: env.body.id });
    t.ok(inst.body.hardened_at, 'the VM is hardened');
    t.equal((await rig.vms()).length, 2, 'one VM per environment');
    t.equal((await rig.dnsStore.list()).length, 2, 'one DNS record per environment');
    t.equal(runsOf(id).length, 1, 'one dispatch');
  });
}

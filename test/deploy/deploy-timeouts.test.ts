// Per-step timeouts: a step that runs out of time fails the deploy with deploy_step_timed_out,
// naming the step and saying what to do.
import t from 'tap';
import type { ComputeProvider } from '../../control-plane/src/providers/compute/types.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { FULL, deployRig } from '../helpers/deploy-rig.ts';

t.setTimeout(600_000);

/** The VM boots without its agent, as a cloud VM whose cloud-init failed would. */
const withoutAgent = (p: ComputeProvider): ComputeProvider => ({
  name: p.name,
  ...(p.refFor ? { refFor: (id: string) => p.refFor?.(id) ?? id } : {}),
  status: (ref) => p.status(ref),
  destroy: (ref) => p.destroy(ref),
  create: (spec) => p.create({ ...spec, bootstrap: { ...spec.bootstrap, agent: undefined } }),
});

if (fileNeeds(sandboxSkipReason)) {
  t.test("a VM whose agent never connects fails the deploy at waiting_for_agent, saying what to check", async (t) => {
    const rig = await deployRig(t, { wrapCompute: withoutAgent, timings: { stepTimeoutMs: { waiting_for_agent: 3_000 } } });
    await rig.deploy();
    rig.fake.writes.mergePull(FULL, 1);
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    const done = await rig.until(id, (d) => d.status !== 'running');
    t.match(done, { status: 'failed', failed_step: 'waiting_for_agent', error_key: 'deploy_step_timed_out', run_url: null, app_url: null });
    t.equal(
      done.error_message,
      "The waiting_for_agent step timed out. The VM's vmkit-agent did not connect within 3 s; check that the VM reaches the control plane's public URL and read the instance's status_reason, then deploy again.",
    );
    t.match(done.steps.find((s) => s.name === 'waiting_for_agent'), { state: 'failed', attempts: 1, error_key: 'deploy_step_timed_out' });
    t.match(done.steps.find((s) => s.name === 'provisioning'), { state: 'succeeded' });
    t.equal(rig.fake.writes.runs(FULL).length, 0, 'nothing was dispatched');
    t.same(await rig.dnsStore.list(), [], 'no DNS record');
  });
}

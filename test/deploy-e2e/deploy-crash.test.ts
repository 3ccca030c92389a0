// The control plane killed with SIGKILL in the middle of a deploy (while the VM is being
// provisioned, while it is being hardened, while the workflow run is followed) and started
// again on the same data dir: the same deploy completes, with exactly one VM, one DNS
// record and one workflow dispatch. A real control-plane process, the local sandbox as
// compute, GitHub and Cloudflare as local stand-ins configured through the API.
import t from 'tap';
import type { Test } from 'tap';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { DEST, FULL, ZONE, atStep, deployProcess } from '../helpers/deploy-process.ts';
import type { DeployBody, DeployProcess } from '../helpers/deploy-process.ts';

t.setTimeout(1_800_000);

const ended = (d: DeployBody) => d.status !== 'running';

/** Opens the scaffolding PR, merges it and starts the second phase; answers the running deploy's id. */
async function startSecondPhase(t: Test, rig: DeployProcess): Promise<string> {
  const first = await rig.deploy();
  t.equal(first.body.status, 'scaffolding_pr_open', JSON.stringify(first.body));
  rig.github.writes.mergePull(FULL, rig.github.writes.pulls(FULL)[0]?.number ?? 1);
  const started = await rig.deploy();
  t.equal(started.body.status, 'running', JSON.stringify(started.body));
  return started.body.deploy_id ?? '';
}

/** Kills the control plane once `step` is under way; checks the dead process left the step running. */
async function crashDuring(t: Test, rig: DeployProcess, id: string, step: string): Promise<void> {
  const at = await rig.until(id, atStep(step), `step ${step} to run`);
  t.equal(at.status, 'running', `the deploy reached ${step} (${at.error_message ?? ''})`);
  let leftAs: string | undefined;
  await rig.crash(async () => (leftAs = await rig.stepState(id, step)));
  t.equal(leftAs, 'running', `the control plane died with ${step} under way`);
}

async function expectOneOfEach(t: Test, rig: DeployProcess, done: DeployBody): Promise<void> {
  t.match(done, { status: 'succeeded', app_url: `https://shop-staging.${ZONE}`, failed_step: null, error_key: null });
  t.match(done.instance_id, /^inst_/);
  const counts = await rig.counts();
  t.same(counts, { vms: 1, instances: 1, dnsRecords: 1, dispatches: 1 }, 'exactly one VM, one DNS record, one dispatch');
  const record = rig.cloudflare.records()[0];
  t.equal(record?.name, `shop-${DEST}.${ZONE}`);
  const run = rig.github.writes.dispatched(FULL)[0];
  t.equal(done.run_url, `https://github.com/${FULL}/actions/runs/${run?.id ?? 0}`, 'the one dispatched run is the deploy run');
}

if (fileNeeds(sandboxSkipReason)) {
  t.test('killed while the VM is provisioned: the restarted control plane finishes the same deploy with one VM', async (t) => {
    const rig = await deployProcess(t);
    rig.github.writes.autoRun = 'success';
    const id = await startSecondPhase(t, rig);
    await crashDuring(t, rig, id, 'provisioning');
    const done = await rig.until(id, ended, 'the resumed deploy to end');
    t.equal(done.deploy_id, id, 'the same deploy');
    await expectOneOfEach(t, rig, done);
  });

  t.test('killed while the VM is hardened: the restarted control plane finishes the same deploy, hardened once', async (t) => {
    const rig = await deployProcess(t);
    rig.github.writes.autoRun = 'success';
    const id = await startSecondPhase(t, rig);
    await crashDuring(t, rig, id, 'hardening');
    const done = await rig.until(id, ended, 'the resumed deploy to end');
    t.equal(done.deploy_id, id, 'the same deploy');
    await expectOneOfEach(t, rig, done);
    const inst = await rig.cp().api<{ hardened_at: string | null }>('GET', `/api/instances/${done.instance_id ?? ''}`);
    t.ok(inst.body.hardened_at, 'the VM is hardened');
  });

  t.test('killed while the run is followed: after the restart the same run is followed to its end, never dispatched again', async (t) => {
    const rig = await deployProcess(t);
    // Two calls at once for one environment: one deploy.
    const first = await rig.deploy();
    rig.github.writes.mergePull(FULL, rig.github.writes.pulls(FULL)[0]?.number ?? 1);
    t.equal(first.body.status, 'scaffolding_pr_open');
    const [a, b] = await Promise.all([rig.deploy(), rig.deploy()]);
    t.equal(a.body.deploy_id, b.body.deploy_id, 'two concurrent calls answer one deploy');
    const id = a.body.deploy_id ?? '';
    await crashDuring(t, rig, id, 'running_workflow');
    const run = await rig.github.writes.waitForDispatch(FULL);
    rig.github.writes.startRun(FULL, run.id);
    const again = await rig.deploy();
    t.equal(again.body.deploy_id, id, 'a call after the restart answers the deploy still running');
    rig.github.writes.completeRun(FULL, run.id, 'success');
    const done = await rig.until(id, ended, 'the resumed deploy to end');
    t.equal(done.deploy_id, id, 'the same deploy');
    await expectOneOfEach(t, rig, done);
  });
}

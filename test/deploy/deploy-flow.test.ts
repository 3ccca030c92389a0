// deploy's second phase end to end on one machine: the scaffolding PR merged on the
// local GitHub stand-in, a local sandbox VM whose real agent enrolls and is hardened,
// local DNS, the workflow dispatched and its run followed. One VM serves every deploy of
// the environment, so the later tests reuse it (hardening is then skipped).
import t from 'tap';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { DEST, FULL, deployRig } from '../helpers/deploy-rig.ts';
import type { DeployBody } from '../helpers/deploy-rig.ts';

t.setTimeout(900_000);

const SECOND_PHASE = ['provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'];

if (fileNeeds(sandboxSkipReason)) {
  const rig = await deployRig(t);
  const atRun = (d: DeployBody) => d.status !== 'running' || d.steps.some((s) => s.name === 'running_workflow' && s.state === 'running');
  const runOf = (d: DeployBody) => rig.fake.writes.runs(FULL).find((r) => r.inputs.deploy_id === d.deploy_id);

  t.test('before the pull request is merged, deploy answers it instead of starting', async (t) => {
    const first = await rig.deploy();
    t.match(first.body, { status: 'scaffolding_pr_open', deploy_id: null });
    const again = await rig.deploy();
    t.match(again.body, { status: 'scaffolding_pr_open', pr_url: first.body.pr_url });
    t.same(await rig.vms(), [], 'no VM yet');
  });

  t.test('once merged: a VM, its agent, hardening, DNS, the dispatch, and the run followed to succeeded', async (t) => {
    rig.fake.writes.mergePull(FULL, 1);
    const started = await rig.deploy();
    t.equal(started.status, 202, 'answers at once with the running deploy');
    t.match(started.body, { status: 'running', repo: FULL, dest: DEST, sha: rig.fake.shaOf(FULL) });
    const id = started.body.deploy_id ?? '';
    t.match(id, /^dep_/);

    const running = await rig.until(id, atRun, 'the run to be followed');
    t.equal(running.status, 'running', `still running: ${running.error_message ?? ''}`);
    const run = runOf(running);
    if (!run) throw new Error('no run was dispatched');
    const inst = await rig.cp.api<{ id: string; status: string; hardened_at: string | null; environment_id: string; ssh: { host: string } }>('GET', `/api/instances/${running.instance_id ?? ''}`);
    t.match(inst.body, { status: 'running', environment_id: rig.envId }, 'the VM belongs to the environment and its agent is connected');
    t.ok(inst.body.hardened_at, 'the VM is hardened');
    t.match(run.inputs, { deploy_id: id, dest: DEST, sha: rig.fake.shaOf(FULL), host: inst.body.ssh.host, app_host: 'shop-staging.vmkit.internal' }, 'dispatched with the VM, the commit and the app host');
    t.match(run.inputs.host_keys, /^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/]+=*(,|$)/, "the VM's SSH host keys, as its agent reported them");
    t.match(run.display_title, id, 'the run name carries the deploy id');

    rig.fake.writes.completeRun(FULL, run.id, 'success');
    const done = await rig.until(id, (d) => d.status !== 'running');
    t.match(done, {
      status: 'succeeded',
      app_url: 'https://shop-staging.vmkit.internal',
      run_url: `https://github.com/${FULL}/actions/runs/${run.id}`,
      instance_id: inst.body.id,
      current_step: 'succeeded',
      failed_step: null,
      error_key: null,
    });
    t.same(done.steps.map((s) => [s.name, s.state, s.attempts]), [['scaffolding', 'skipped', 0], ...SECOND_PHASE.map((s) => [s, 'succeeded', 1])]);
    t.same(await rig.dnsStore.list().then((l) => l.map((r) => [r.name, r.type, r.content, r.owner])), [['shop-staging.vmkit.internal', 'A', inst.body.ssh.host, rig.envId]], 'one DNS record, VMKit-owned');
    t.equal((await rig.vms()).length, 1, 'one VM');
    const audit = await rig.cp.api<{ items: { action: string; target_ids: Record<string, string> }[] }>('GET', '/api/audit?limit=200');
    const mine = audit.body.items.filter((a) => a.target_ids?.id === id).map((a) => a.action);
    for (const action of ['deploys.started', 'deploys.step.provisioning.running', 'deploys.step.hardening.succeeded', 'deploys.step.running_workflow.succeeded', 'deploys.succeeded']) {
      t.ok(mine.includes(action), `${action} is in the audit trail`);
    }
  });

  t.test('a failing run fails the deploy with its run_url and the failing job', async (t) => {
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    const running = await rig.until(id, atRun, 'the run to be followed');
    const run = runOf(running);
    if (!run) throw new Error('no run was dispatched');
    t.match(running.steps.find((s) => s.name === 'hardening'), { state: 'skipped' }, 'the hardened VM is reused without hardening again');
    rig.fake.writes.completeRun(FULL, run.id, 'failure', { job: 'Deploy to staging', step: 'Deploy with Kamal' });
    const done = await rig.until(id, (d) => d.status !== 'running');
    t.match(done, { status: 'failed', failed_step: 'running_workflow', error_key: 'workflow_run_failed', run_url: `https://github.com/${FULL}/actions/runs/${run.id}`, app_url: null });
    t.match(done.error_message, /job "Deploy to staging" failed at step "Deploy with Kamal"/i);
    t.equal((await rig.vms()).length, 1, 'still one VM');
  });

  for (const mode of ['no_content', 'reject_field'] as const) {
    t.test(`a GitHub that ${mode === 'no_content' ? 'answers 204' : 'refuses return_run_details'}: the run is found by its name`, async (t) => {
      rig.fake.writes.dispatchMode = mode;
      t.teardown(() => void (rig.fake.writes.dispatchMode = 'details'));
      rig.fake.writes.addRun(FULL, 'vmkit-deploy.yml', 'VMKit deploy dep_someone_else of x to staging');
      const started = await rig.deploy();
      const id = started.body.deploy_id ?? '';
      const running = await rig.until(id, atRun, 'the run to be found');
      t.match(running.steps.find((s) => s.name === 'dispatching'), { state: 'succeeded', detail: { found_by: 'run_name' } });
      const run = runOf(running);
      if (!run) throw new Error('no run was dispatched');
      t.equal(running.run_url, `https://github.com/${FULL}/actions/runs/${run.id}`, "its own run, not the other one");
      rig.fake.writes.completeRun(FULL, run.id, 'success');
      t.match(await rig.until(id, (d) => d.status !== 'running'), { status: 'succeeded' });
    });
  }

  t.test('a long-poll after the last updated_at answers when the deploy moves on', async (t) => {
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    const running = await rig.until(id, atRun, 'the run to be followed');
    const run = runOf(running);
    if (!run) throw new Error('no run was dispatched');
    const poll = rig.get(id, `?wait_ms=120000&after=${encodeURIComponent(running.updated_at)}`);
    rig.fake.writes.completeRun(FULL, run.id, 'success');
    const moved = await poll;
    t.equal(moved.status, 200);
    t.not(moved.body.updated_at, running.updated_at, 'answered with a newer state');
    t.match(await rig.until(id, (d) => d.status !== 'running'), { status: 'succeeded' });
  });

  t.test('a call that may wait answers 200 with the ended deploy', async (t) => {
    rig.fake.writes.autoRun = 'success';
    t.teardown(() => void (rig.fake.writes.autoRun = null));
    const res = await rig.deploy({ wait_ms: 120_000 });
    t.equal(res.status, 200, 'answered once it ended, within the server\'s wait bound');
    t.match(res.body, { status: 'succeeded', app_url: 'https://shop-staging.vmkit.internal' });
  });

  t.test('a run that outlasts its step timeout fails the deploy with what to do', async (t) => {
    const timings = rig.cp.ctx.deployTimings ?? {};
    rig.cp.ctx.deployTimings = { ...timings, stepTimeoutMs: { running_workflow: 1_500 } };
    t.teardown(() => void (rig.cp.ctx.deployTimings = timings));
    const started = await rig.deploy();
    const id = started.body.deploy_id ?? '';
    const done = await rig.until(id, (d) => d.status !== 'running');
    const run = runOf(done);
    if (!run) throw new Error('no run was dispatched');
    t.match(done, { status: 'failed', failed_step: 'running_workflow', error_key: 'deploy_step_timed_out', run_url: `https://github.com/${FULL}/actions/runs/${run.id}` });
    t.match(done.error_message, new RegExp(`The running_workflow step timed out\\. The deploy workflow run did not complete within 2 s; it may still be running at ${done.run_url ?? ''}: follow it there`));
    rig.fake.writes.completeRun(FULL, run.id, 'cancelled');
  });

  t.test('two concurrent calls for one environment make one deploy', async (t) => {
    const dispatchedBefore = rig.fake.writes.runs(FULL).length;
    const [a, b] = await Promise.all([rig.deploy(), rig.deploy()]);
    t.equal(a.body.deploy_id, b.body.deploy_id, 'the same deploy');
    const again = await rig.deploy();
    t.equal(again.body.deploy_id, a.body.deploy_id, 'a call while it runs answers the running one');
    const id = a.body.deploy_id ?? '';
    const running = await rig.until(id, atRun, 'the run to be followed');
    const run = runOf(running);
    if (!run) throw new Error('no run was dispatched');
    rig.fake.writes.completeRun(FULL, run.id, 'success');
    await rig.until(id, (d) => d.status !== 'running');
    t.equal(rig.fake.writes.runs(FULL).length, dispatchedBefore + 1, 'one dispatch');
    const list = await rig.cp.api<{ items: DeployBody[] }>('GET', `/api/deploys?repo=${FULL}&dest=${DEST}`);
    t.equal(list.body.items[0]?.deploy_id, id, 'newest first');
  });
}

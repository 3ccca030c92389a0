/**
 * `vmkit deploy`, `vmkit deploy status` and `vmkit deploys` against the real control
 * plane and deploy service over HTTP (GitHub is the local stand-in, the VM a local
 * sandbox): what they print, how they follow a deploy live, and their exit codes.
 * The whole flow in a real control-plane process is in test/deploy-e2e/.
 */
import t from 'tap';
import { vmkitCli } from '../helpers/vmkit-cli.ts';
import type { VmkitCli } from '../helpers/vmkit-cli.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { DEST, FULL, deployRig } from '../helpers/deploy-rig.ts';
import type { DeployBody, DeployRig } from '../helpers/deploy-rig.ts';

t.setTimeout(900_000);

const SECOND_PHASE = ['provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'];
const STEP_LINE = /^\d\d:\d\d:\d\dZ /;

const runners = new WeakMap<DeployRig, VmkitCli>();
/** The CLI against this rig's control plane (one config directory per rig). */
function vmkit(rig: DeployRig, args: string[]) {
  let run = runners.get(rig);
  if (run === undefined) {
    run = vmkitCli(t, () => ({ url: rig.cp.url, key: rig.cp.adminKey }));
    runners.set(rig, run);
  }
  return run(args);
}

const deploysOf = async (rig: DeployRig) => (await rig.cp.api<{ items: DeployBody[] }>('GET', `/api/deploys?repo=${FULL}`)).body.items;

// ---- without a VM: the pull-request phase, errors, listing, usage -----------------------

const rig = await deployRig(t);

t.test('the first deploy of a repo prints the pull request to merge and exits 3', async (t) => {
  const out = await vmkit(rig, ['deploy', FULL, DEST, '--wait']);
  t.equal(out.code, 3, out.stderr);
  t.match(out.stdout, new RegExp(`https://github\\.com/${FULL}/pull/1`));
  t.match(out.stdout, new RegExp(`merge it, then run \`vmkit deploy ${FULL} ${DEST}\` again`));
  t.equal(rig.fake.writes.pulls(FULL).length, 1, 'the pull request is open on GitHub');
  t.same(await rig.vms(), [], 'nothing to follow: no VM');
});

t.test('a contract error is printed as key, sentence and the URL tried, exit 1; --json prints the body with the URL', async (t) => {
  const direct = await rig.cp.api<{ error: string; message: string }>('POST', '/api/deploys', { body: { repo: 'acme/nope', dest: DEST } });
  t.equal(direct.status, 404);
  const out = await vmkit(rig, ['deploy', 'acme/nope', DEST]);
  t.equal(out.code, 1);
  t.equal(out.stderr, `error: ${direct.body.error}: ${direct.body.message} (POST ${rig.cp.url}/api/deploys answered 404)\n`);
  const json = await vmkit(rig, ['deploy', 'acme/nope', DEST, '--json']);
  t.equal(json.code, 1);
  t.same(JSON.parse(json.stderr), { ...direct.body, url: `${rig.cp.url}/api/deploys`, status: 404 }, 'the body, the URL and the status');
});

t.test('deploy status shows the steps; --json the record', async (t) => {
  const id = (await deploysOf(rig))[0]?.id ?? '';
  t.match(id, /^dep_/);
  const out = await vmkit(rig, ['deploy', 'status', id]);
  t.equal(out.code, 3, 'a deploy waiting for its pull request exits 3');
  t.match(out.stdout, /scaffolding +succeeded/);
  t.match(out.stdout, new RegExp(`https://github\\.com/${FULL}/pull/1`));
  const json = await vmkit(rig, ['deploy', 'status', id, '--json']);
  t.match(JSON.parse(json.stdout), { id, status: 'scaffolding_pr_open', repo: FULL, dest: DEST });
  const missing = await vmkit(rig, ['deploy', 'status', 'dep_nothere']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^error: deploy_not_found: /);
});

t.test('deploys lists with the repo and environment as filters', async (t) => {
  const out = await vmkit(rig, ['deploys', FULL, DEST]);
  t.equal(out.code, 0, out.stderr);
  t.match(out.stdout, /^ID\s+STATUS\s+STEP\s+REPO\s+DEST\s+SHA\s+CREATED\s+APP URL\n/);
  // A deploy still at its pull request has no deploy id yet.
  t.match(out.stdout, new RegExp(`\\n-\\s+scaffolding_pr_open\\s+scaffolding\\s+${FULL}\\s+${DEST}\\s`));
  const other = await vmkit(rig, ['deploys', FULL, 'production']);
  t.equal(other.code, 1, 'the environment filter reaches the server');
  t.match(other.stderr, /^error: environment_not_found: /);
  const json = await vmkit(rig, ['deploys', FULL, '--json']);
  t.same((JSON.parse(json.stdout) as { items: Array<{ id: string }> }).items.map((d) => d.id), (await deploysOf(rig)).map((d) => d.id));
});

t.test('wrong arguments print the usage and exit 2 and change nothing', async (t) => {
  const before = await deploysOf(rig);
  for (const args of [['deploy', FULL], ['deploy', 'status'], ['deploy', FULL, DEST, '--shaa', 'x'], ['deploys', 'a/b', 'c', 'd']]) {
    const out = await vmkit(rig, args);
    t.equal(out.code, 2, args.join(' '));
    t.match(out.stderr, /Usage:/);
  }
  t.same(await deploysOf(rig), before, 'no deploy made or moved');
  t.equal(rig.fake.writes.pulls(FULL).length, 1, 'no pull request');
  const help = await vmkit(rig, ['deploy', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Exit codes/);
});

// ---- on a VM: the second phase followed live ------------------------------------------

t.test('on a local sandbox VM', { skip: prerequisite(sandboxSkipReason) }, async (t) => {
  const vm = await deployRig(t);
  await vm.deploy();
  vm.fake.writes.mergePull(FULL, 1);

  t.test('--wait prints a line per step change with its time and exits 0 when it succeeds', async (t) => {
    vm.fake.writes.autoRun = 'success';
    t.teardown(() => void (vm.fake.writes.autoRun = null));
    const out = await vmkit(vm, ['deploy', FULL, DEST, '--wait']);
    t.equal(out.code, 0, out.stderr + out.stdout);
    const lines = out.stdout.split('\n').filter((l) => STEP_LINE.test(l));
    const changes = lines.map((l) => l.split(/\s+/).slice(1, 3).join(' '));
    t.same(changes.filter((c) => c.endsWith(' succeeded')).map((c) => c.split(' ')[0]), SECOND_PHASE, `each step's end once, in order: ${changes.join(' | ')}`);
    t.equal(new Set(changes).size, changes.length, 'one line per change');
    t.match(lines.find((l) => /provisioning +succeeded/.test(l)), /succeeded {2}\d+\.\d s$/, 'a finished step shows how long it took');
    t.match(out.stdout, new RegExp(`^Deploy dep_\\w+ of ${FULL} to ${DEST} at ${vm.fake.shaOf(FULL).slice(0, 12)}\\n`));
    t.match(out.stdout, /app: +https:\/\/shop-staging\.vmkit\.internal/);
    t.match(out.stdout, new RegExp(`run: +https://github\\.com/${FULL}/actions/runs/${vm.fake.writes.dispatched(FULL)[0]?.id ?? 0}`));
    t.match(out.stdout, /instance: +inst_\w+/);
  });

  t.test('without --wait it starts the deploy, prints its id and how to follow it', async (t) => {
    const dispatched = vm.fake.writes.dispatched(FULL).length;
    const out = await vmkit(vm, ['deploy', FULL, DEST]);
    t.equal(out.code, 0, out.stderr);
    const id = /Deploy (dep_\w+) is running/.exec(out.stdout)?.[1] ?? '';
    t.match(id, /^dep_/, out.stdout);
    t.match(out.stdout, `vmkit deploy status ${id} --wait`);
    t.equal((await vm.get(id)).body.status, 'running', 'it returned while the deploy runs');
    const run = await vm.fake.writes.waitForDispatch(FULL, dispatched + 1);
    vm.fake.writes.completeRun(FULL, run.id, 'success');
    const status = await vmkit(vm, ['deploy', 'status', id, '--wait']);
    t.equal(status.code, 0, status.stderr + status.stdout);
    t.match(status.stdout, /running_workflow +succeeded/);
    t.match(status.stdout, /hardening +skipped/, 'the hardened VM is reused');
  });

  t.test('--wait exits non-zero with the failed step and its reason when the deploy fails', async (t) => {
    vm.fake.writes.autoRun = 'failure';
    t.teardown(() => void (vm.fake.writes.autoRun = null));
    const out = await vmkit(vm, ['deploy', FULL, DEST, '--wait']);
    t.equal(out.code, 1, out.stderr + out.stdout);
    t.match(out.stdout, /running_workflow +failed .*workflow_run_failed: /);
    t.match(out.stdout, /failed at step running_workflow: .*\(workflow_run_failed\)/);
    t.match(out.stdout, new RegExp(`run: +https://github\\.com/${FULL}/actions/runs/\\d+`));
  });

  t.test('deploys lists the succeeded and the failed deploys newest first; deploy status shows a failed one', async (t) => {
    const out = await vmkit(vm, ['deploys', FULL, DEST]);
    t.equal(out.code, 0, out.stderr);
    const rows = out.stdout.split('\n').slice(1).filter(Boolean).map((l) => l.split(/\s+/).slice(0, 3));
    t.same(rows.map((r) => r[1]), ['failed', 'succeeded', 'succeeded', 'scaffolding_pr_open'], 'newest first');
    t.equal(rows[0]?.[2], 'running_workflow', 'the step it failed at');
    const status = await vmkit(vm, ['deploy', 'status', rows[0]?.[0] ?? '']);
    t.equal(status.code, 1, 'a failed deploy exits 1');
    t.match(status.stdout, /failed at step running_workflow: /);
  });
});

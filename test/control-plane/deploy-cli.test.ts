/**
 * `vmkit deploy`, `vmkit deploy status` and `vmkit deploys` against a scripted deploys
 * API over HTTP: what they print, how they follow a deploy live, and their exit codes.
 * The same commands against the real control plane are in test/deploy-e2e/.
 */
import t from 'tap';
import { runVmkitCli } from '../../control-plane/src/cli/vmkit.ts';
import { ScriptedDeploys } from '../helpers/scripted-deploys.ts';

async function vmkit(url: string, args: string[], onStdout?: (text: string) => void) {
  let stdout = '';
  let stderr = '';
  const code = await runVmkitCli(args, {
    stdout: (s) => {
      stdout += s;
      onStdout?.(s);
    },
    stderr: (s) => (stderr += s),
    env: { VMKIT_URL: url, VMKIT_API_KEY: 'vmk_test' },
  });
  return { code, stdout, stderr };
}

t.test('without --wait it starts the deploy, prints its id and how to follow it', async (t) => {
  const api = new ScriptedDeploys();
  const url = await api.listen(t);
  const res = await vmkit(url, ['deploy', 'badri/app', 'staging', '--sha', 'abc1234']);
  t.equal(res.code, 0);
  t.match(res.stdout, /Deploy dep_01jx5p0qr8s6n3t4u2v7w0y1z is running/);
  t.match(res.stdout, /vmkit deploy status dep_01jx5p0qr8s6n3t4u2v7w0y1z --wait/);
  t.same(api.requests[0]?.body, { repo: 'badri/app', dest: 'staging', sha: 'abc1234', wait_ms: 0 });
  t.equal(api.requests[0]?.authorization, 'Bearer vmk_test');
  t.equal(api.requests.length, 1, 'nothing followed');
});

t.test('--wait prints a line per step change with its time and exits 0 when it succeeds', async (t) => {
  const api = new ScriptedDeploys();
  const url = await api.listen(t);
  const script = [
    () => api.advance({ name: 'provisioning', state: 'succeeded' }, { instance_id: 'inst_1' }),
    () => api.advance({ name: 'waiting_for_agent', state: 'succeeded' }),
    () => api.advance({ name: 'hardening', state: 'succeeded' }),
    () => api.advance({ name: 'dns', state: 'succeeded' }),
    () => api.advance({ name: 'dispatching', state: 'succeeded' }, { run_url: 'https://github.com/badri/app/actions/runs/5' }),
    () => api.advance({ name: 'running_workflow', state: 'succeeded' }, { status: 'succeeded', app_url: 'https://app-staging.vmkit.internal' }),
  ];
  // Each printed step line moves the deploy on; the first move once the CLI is following.
  const res = vmkit(url, ['deploy', 'badri/app', 'staging', '--wait'], (s) => {
    if (/^\d\d:\d\d:\d\dZ /m.test(s)) script.shift()?.();
  });
  await waitFor(() => api.requests.some((r) => r.method === 'GET'));
  api.advance({ name: 'provisioning', state: 'running' });
  const out = await res;
  t.equal(out.code, 0, out.stderr);
  const lines = out.stdout.split('\n').filter((l) => /^\d\d:\d\d:\d\dZ /.test(l));
  t.same(
    lines.map((l) => l.split(/\s+/).slice(1, 3).join(' ')),
    ['provisioning running', 'provisioning succeeded', 'waiting_for_agent succeeded', 'hardening succeeded', 'dns succeeded', 'dispatching succeeded', 'running_workflow succeeded'],
    'one line per step change, in order',
  );
  t.match(lines[1], /succeeded {2}\d+\.\d s$/, 'a finished step shows how long it took');
  t.match(out.stdout, /^Deploy dep_\w+ of badri\/app to staging at a{12}\n/);
  t.match(out.stdout, /app: +https:\/\/app-staging\.vmkit\.internal/);
  t.match(out.stdout, /run: +https:\/\/github\.com\/badri\/app\/actions\/runs\/5/);
  t.match(out.stdout, /instance: +inst_1/);
});

t.test('--wait exits non-zero with the failed step and its reason when the deploy fails', async (t) => {
  const api = new ScriptedDeploys();
  const url = await api.listen(t);
  const res = vmkit(url, ['deploy', 'badri/app', 'staging', '--wait']);
  await waitFor(() => api.requests.some((r) => r.method === 'GET'));
  api.advance(
    { name: 'hardening', state: 'failed', error_key: 'harden_failed', error_message: 'sshd -t refused the drop-in.' },
    { status: 'failed', failed_step: 'hardening', error_key: 'harden_failed', error_message: 'sshd -t refused the drop-in.' },
  );
  const out = await res;
  t.equal(out.code, 1);
  t.match(out.stdout, /hardening +failed .*harden_failed: sshd -t refused the drop-in\./);
  t.match(out.stdout, /failed at step hardening: sshd -t refused the drop-in\. \(harden_failed\)/);
});

t.test('the first deploy of a repo prints the pull request to merge and exits 3', async (t) => {
  const api = new ScriptedDeploys();
  api.postAnswer = { status: 200, headers: {}, body: { ...api.view, status: 'scaffolding_pr_open', pr_url: 'https://github.com/badri/app/pull/12' } };
  const url = await api.listen(t);
  const out = await vmkit(url, ['deploy', 'badri/app', 'staging', '--wait']);
  t.equal(out.code, 3);
  t.match(out.stdout, /https:\/\/github\.com\/badri\/app\/pull\/12/);
  t.match(out.stdout, /merge it, then run `vmkit deploy badri\/app staging` again/);
  t.equal(api.requests.length, 1, 'nothing to follow');
});

t.test('a contract error is printed as key and sentence, exit 1; --json prints the body', async (t) => {
  const api = new ScriptedDeploys();
  api.postAnswer = { status: 404, headers: {}, body: { error: 'repo_not_found', message: 'No repo badri/nope in this workspace.' } };
  const url = await api.listen(t);
  const out = await vmkit(url, ['deploy', 'badri/nope', 'staging']);
  t.equal(out.code, 1);
  t.equal(out.stderr, 'error: repo_not_found: No repo badri/nope in this workspace.\n');
  const json = await vmkit(url, ['deploy', 'badri/nope', 'staging', '--json']);
  t.same(JSON.parse(json.stderr), { error: 'repo_not_found', message: 'No repo badri/nope in this workspace.' });
});

t.test('deploy status shows the steps; --json the record', async (t) => {
  const api = new ScriptedDeploys();
  api.advance({ name: 'provisioning', state: 'succeeded' });
  api.advance({ name: 'waiting_for_agent', state: 'running' });
  const url = await api.listen(t);
  const out = await vmkit(url, ['deploy', 'status', 'dep_01jx5p0qr8s6n3t4u2v7w0y1z']);
  t.equal(out.code, 0);
  t.match(out.stdout, /provisioning +succeeded/);
  t.match(out.stdout, /waiting_for_agent +running/);
  t.match(out.stdout, /is running \(step waiting_for_agent\)/);
  t.equal(api.requests[0]?.path, '/api/deploys/dep_01jx5p0qr8s6n3t4u2v7w0y1z');
  const json = await vmkit(url, ['deploy', 'status', 'dep_01jx5p0qr8s6n3t4u2v7w0y1z', '--json']);
  t.equal((JSON.parse(json.stdout) as { deploy_id: string }).deploy_id, 'dep_01jx5p0qr8s6n3t4u2v7w0y1z');
});

t.test('deploys lists with the repo and environment as filters', async (t) => {
  const api = new ScriptedDeploys();
  const url = await api.listen(t);
  const out = await vmkit(url, ['deploys', 'badri/app', 'staging']);
  t.equal(out.code, 0);
  t.match(out.stdout, /^ID\s+STATUS\s+STEP\s+REPO\s+DEST\s+SHA\s+CREATED\s+APP URL\n/);
  t.match(out.stdout, /dep_01jx5p0qr8s6n3t4u2v7w0y1z\s+running/);
  t.equal(api.requests[0]?.path, '/api/deploys?repo=badri%2Fapp&dest=staging');
});

t.test('wrong arguments print the usage and exit 2 without calling the server', async (t) => {
  const api = new ScriptedDeploys();
  const url = await api.listen(t);
  for (const args of [['deploy', 'badri/app'], ['deploy', 'status'], ['deploy', 'badri/app', 'staging', '--shaa', 'x'], ['deploys', 'a/b', 'c', 'd']]) {
    const out = await vmkit(url, args);
    t.equal(out.code, 2, args.join(' '));
    t.match(out.stderr, /Usage:/);
  }
  t.equal(api.requests.length, 0);
  const help = await vmkit(url, ['deploy', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Exit codes/);
});

async function waitFor(cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
}

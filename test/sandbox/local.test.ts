import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { loopbackPort } from '../../control-plane/src/providers/compute/local.ts';
import { run } from '../../control-plane/src/providers/compute/run.ts';
import { ComputeError } from '../../control-plane/src/providers/compute/types.ts';
import { sandboxProvider, sandboxSkipReason, sshBanner, sshRun, startSandbox } from '../helpers/sandbox.ts';

if (sandboxSkipReason) {
  console.log(`# skipping local sandbox tests: ${sandboxSkipReason}`);
  t.plan(0, sandboxSkipReason);
}

const HOST_FILES = ['/etc/passwd', '/etc/shadow', '/etc/group', '/etc/hostname', '/etc/ssh/sshd_config'];
const snapshot = (): Map<string, string> => new Map(HOST_FILES.map((f) => [f, readFileSync(f, 'latin1')]));

/** Everything the host would show of a sandbox. */
async function hostTraces(netns: string, hostIf: string | undefined, dir: string): Promise<string[]> {
  const traces: string[] = [];
  const ns = await run('ip', ['netns', 'list']);
  if (ns.stdout.split('\n').some((l) => l.split(' ')[0] === netns)) traces.push(`netns ${netns}`);
  if (hostIf !== undefined && (await run('ip', ['link', 'show', 'dev', hostIf])).code === 0) traces.push(`link ${hostIf}`);
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    if (line.includes(dir) || line.includes(`/run/netns/${netns}`)) traces.push(`mount ${line}`);
  }
  const pg = spawnSync('pgrep', ['-f', dir], { encoding: 'utf8' });
  if (pg.stdout.trim() !== '') traces.push(`processes ${pg.stdout.trim().replace(/\n/g, ',')}`);
  if (existsSync(dir)) traces.push(`folder ${dir}`);
  return traces;
}

t.test('a fresh sandbox answers SSH on its own address and accepts root with its password, like a fresh cloud VM', async (t) => {
  const sb = await startSandbox(t, { name: 'Fresh VM 1', rootPassword: 'correct horse battery' });
  t.match(sb.vm.address, /^10\.201\.\d+\.\d+$/, 'guest address from the default pool');
  t.equal(sb.vm.ssh_port, 22);
  t.not(sb.vm.address, sb.vm.host_address);
  t.match(await sshBanner(sb.vm.address, 22), /^SSH-2\.0-OpenSSH_/, 'raw socket sees the OpenSSH banner');
  const r = await sshRun({ host: sb.vm.address, password: 'correct horse battery' }, 'id -un; hostname');
  t.equal(r.code, 0);
  t.same(r.stdout.trim().split('\n'), ['root', 'fresh-vm-1'], 'logged in as root on the sandbox');
  await t.rejects(sshRun({ host: sb.vm.address, password: 'wrong' }, 'true'), 'a wrong password is refused');
  const eff = await sb.exec(['/usr/sbin/sshd', '-T', '-C', 'user=root,host=x,addr=10.0.0.1']);
  t.match(eff.stdout, /^permitrootlogin yes$/m, 'effective config permits root login');
  t.match(eff.stdout, /^passwordauthentication yes$/m, 'effective config allows passwords');
  t.equal(readFileSync(join(sb.vm.dir, 'fs', 'etc', 'upper', 'ssh', 'sshd_config.d', '50-cloud-init.conf'), 'utf8'), 'PasswordAuthentication yes\n');
});

t.test('a generated root password is returned and works', async (t) => {
  const sb = await startSandbox(t);
  t.ok(sb.vm.root_password.length >= 20, 'a long random password');
  const r = await sshRun({ host: sb.vm.address, password: sb.vm.root_password }, 'id -u');
  t.equal(r.stdout.trim(), '0');
});

t.test("useradd inside changes the sandbox's /etc/passwd while the host's stays byte-identical", async (t) => {
  const before = snapshot();
  const sb = await startSandbox(t, { name: 'users' });
  const add = await sb.exec(['useradd', '--create-home', '--shell', '/bin/bash', 'vmktestuser']);
  t.equal(add.code, 0, add.stderr);
  const inside = await sb.exec(['getent', 'passwd', 'vmktestuser']);
  t.match(inside.stdout, /^vmktestuser:x:\d+:\d+::\/home\/vmktestuser:\/bin\/bash$/m);
  t.ok((await sb.exec(['test', '-d', '/home/vmktestuser'])).code === 0, 'home made inside');
  t.match(readFileSync(join(sb.vm.dir, 'fs', 'etc', 'upper', 'passwd'), 'utf8'), /^vmktestuser:/m, 'the change lives in the overlay');
  t.same(snapshot(), before, 'host files unchanged');
  t.notOk(existsSync('/home/vmktestuser'), 'no home on the host');
  t.notOk(spawnSync('getent', ['passwd', 'vmktestuser']).status === 0, 'no such user on the host');
});

t.test("the sandbox has its own hostname and host keys, not the host's", async (t) => {
  const sb = await startSandbox(t, { name: 'named-box' });
  const h = await sb.exec(['hostname']);
  t.equal(h.stdout.trim(), 'named-box');
  t.not(h.stdout.trim(), hostname());
  t.equal(hostname(), readFileSync('/etc/hostname', 'utf8').trim() || hostname(), 'host hostname unchanged');
  const key = await sb.exec(['cat', '/etc/ssh/ssh_host_ed25519_key.pub']);
  t.equal(key.code, 0);
  if (existsSync('/etc/ssh/ssh_host_ed25519_key.pub')) {
    t.not(key.stdout, readFileSync('/etc/ssh/ssh_host_ed25519_key.pub', 'utf8'), 'fresh host key');
  }
});

t.test("two sandboxes at once get different addresses and do not see each other's /etc", async (t) => {
  const provider = sandboxProvider(t);
  const [a, b] = await Promise.all([
    startSandbox(t, { provider, name: 'box-a' }),
    startSandbox(t, { provider, name: 'box-b' }),
  ]);
  t.not(a.vm.address, b.vm.address);
  t.not(a.vm.host_address, b.vm.host_address);
  t.not(a.vm.netns, b.vm.netns);
  t.equal((await a.exec(['sh', '-c', 'echo from-a > /etc/vmk-marker'])).code, 0);
  t.equal((await a.exec(['cat', '/etc/vmk-marker'])).stdout, 'from-a\n');
  t.not((await b.exec(['test', '-e', '/etc/vmk-marker'])).code, 0, 'b does not see it');
  t.notOk(existsSync('/etc/vmk-marker'), 'the host does not see it');
  t.equal((await sshRun({ host: b.vm.address, password: b.vm.root_password }, 'hostname')).stdout.trim(), 'box-b');
  t.equal((await sshRun({ host: a.vm.address, password: a.vm.root_password }, 'hostname')).stdout.trim(), 'box-a');
});

t.test('destroy removes the netns, the link, the processes, the mounts and the folder', async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  const state = provider.readState(sb.vm.ref);
  t.ok(state?.host_if, 'state names the host link');
  t.not((await hostTraces(sb.vm.netns, state?.host_if, sb.vm.dir)).length, 0, 'the sandbox is visible before');
  t.equal(await provider.status(sb.vm.ref), 'running');
  const started = Date.now();
  await sb.destroy();
  t.comment(`destroy took ${Date.now() - started} ms`);
  t.same(await hostTraces(sb.vm.netns, state?.host_if, sb.vm.dir), [], 'nothing left on the host');
  const initGone = async (): Promise<boolean> => {
    for (let i = 0; i < 100; i++) {
      const st = spawnSync('ps', ['-o', 'stat=', '-p', String(state?.init_pid)], { encoding: 'utf8' }).stdout.trim();
      if (st === '' || st.startsWith('Z')) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  };
  t.ok(state?.init_pid !== undefined && (await initGone()), 'init is gone');
  t.equal(await provider.status(sb.vm.ref), 'missing');
  await t.resolves(sb.destroy(), 'destroying again is fine');
});

t.test('destroy after the supervisor was killed still cleans up', async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  const pid = provider.readState(sb.vm.ref)?.init_pid;
  const state = provider.readState(sb.vm.ref);
  if (pid === undefined) throw new Error('no init pid in the state file');
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && (await provider.status(sb.vm.ref)) === 'running'; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await provider.status(sb.vm.ref), 'stopped', 'a crashed sandbox is stopped, not running');
  // The kernel kills the rest of the pid namespace while init's threads finish exiting.
  let answering = true;
  for (let i = 0; i < 50 && answering; i++) {
    answering = await sshBanner(sb.vm.address, 22, 1000).then(
      () => true,
      () => false,
    );
    if (answering) await new Promise((r) => setTimeout(r, 100));
  }
  t.notOk(answering, 'its sshd died with it');
  await sb.destroy();
  t.same(await hostTraces(sb.vm.netns, state?.host_if, sb.vm.dir), []);
  t.equal(await provider.status(sb.vm.ref), 'missing');
});

t.test('killing the host-side supervisor process takes the sandbox down and destroy cleans up', async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  const state = provider.readState(sb.vm.ref);
  const pid = state?.supervisor_pid;
  if (pid === undefined) throw new Error('no supervisor pid in the state file');
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && (await provider.status(sb.vm.ref)) === 'running'; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await provider.status(sb.vm.ref), 'stopped');
  await sb.destroy();
  t.same(await hostTraces(sb.vm.netns, state?.host_if, sb.vm.dir), []);
});

t.test('a half-made sandbox left by a crash is found and removed by destroyStale', async (t) => {
  const provider = sandboxProvider(t);
  const ref = 'half-made';
  const dir = provider.dirOf(ref);
  const netns = provider.netnsOf(ref);
  // What a crash right after `ip netns add` leaves: a folder without state, and a netns.
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'boot.json'), '{}');
  t.equal((await run('ip', ['netns', 'add', netns])).code, 0);
  t.equal(await provider.status(ref), 'stopped');
  t.same(await provider.destroyStale(), [ref]);
  t.same(await hostTraces(netns, undefined, dir), []);
  t.equal(await provider.status(ref), 'missing');
});

t.test('status tells running from missing', async (t) => {
  const provider = sandboxProvider(t);
  t.equal(await provider.status('never-made'), 'missing');
  const sb = await startSandbox(t, { provider });
  t.equal(await provider.status(sb.vm.ref), 'running');
  t.same(await provider.list(), [{ ref: sb.vm.ref, status: 'running' }]);
  await sb.destroy();
  t.equal(await provider.status(sb.vm.ref), 'missing');
  const err: unknown = await provider.exec(sb.vm.ref, ['true']).catch((e: unknown) => e);
  t.equal(err instanceof ComputeError ? err.key : err, 'vm_not_provisioned', 'exec on a missing sandbox fails clearly');
});

t.test('a program given at create runs inside after sshd is up, with its env, logging to program.log', async (t) => {
  const sb = await startSandbox(t, {
    name: 'prog',
    program: {
      steps: [
        { argv: ['sh', '-c', 'echo "first $GREETING $(hostname)"'], env: { GREETING: 'hello' } },
        { argv: ['sh', '-c', 'test -s /run/sshd.pid && echo "sshd up"; echo "pid $$"; exec sleep 600'] },
      ],
    },
  });
  const log = join(sb.vm.dir, 'program.log');
  let text = '';
  for (let i = 0; i < 100 && !text.includes('sshd up'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    text = existsSync(log) ? readFileSync(log, 'utf8') : '';
  }
  t.match(text, /^first hello prog$/m, 'env and hostname seen by the program');
  t.match(text, /^sshd up$/m, 'started after sshd wrote its pid file');
  t.match(text, /^pid \d+$/m);
  const ps = await sb.exec(['ps', '-o', 'args=', '-e']);
  t.match(ps.stdout, /sleep 600/, 'the long-running step runs in the sandbox');
});

t.test('an agent enrollment becomes the agent program with the control plane URL seen from inside', async (t) => {
  const sb = await startSandbox(t, {
    enrollment: { control_plane_url: 'http://127.0.0.1:9/', token: 'enr-secret' },
  });
  t.notOk(existsSync(join(sb.vm.dir, 'boot.json')), 'boot.json with the secrets is gone once read');
  // The agent program is started (whether the CLI exists yet or not): its log names the steps.
  let text = '';
  for (let i = 0; i < 100 && !text.includes('program step 1/2'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    text = readFileSync(join(sb.vm.dir, 'supervisor.log'), 'utf8');
  }
  t.match(text, /program step 1\/2/);
});

t.test('create refuses clearly where the sandbox cannot run (not root)', async (t) => {
  const script = [
    "import { LocalSandboxProvider } from './control-plane/src/providers/compute/local.ts';",
    "const p = new LocalSandboxProvider({ baseDir: '/tmp/vmk-unprivileged-never-made' });",
    "p.create({ instance_id: 'x', name: 'x' }).then(() => console.log('created'), (e) => console.log(e.key + ': ' + e.message));",
  ].join('\n');
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: join(import.meta.dirname, '..', '..'),
    uid: 65534,
    gid: 65534,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp' },
    timeout: 30_000,
  });
  t.match(r.stdout, /^sandbox_unavailable: The local VM sandbox cannot run here: it needs root/m);
  t.notOk(existsSync('/tmp/vmk-unprivileged-never-made'));
  t.ok(new ComputeError('sandbox_unavailable', 'x') instanceof Error);
});

t.test('only a loopback control-plane URL is relayed into the sandbox', async (t) => {
  t.equal(loopbackPort('http://127.0.0.1:8080'), 8080);
  t.equal(loopbackPort('http://localhost/'), 80);
  t.equal(loopbackPort('https://localhost'), 443);
  t.equal(loopbackPort('https://cp.example.com:8443'), undefined);
  t.equal(loopbackPort('http://10.0.0.5:8080'), undefined);
});

t.test('sshd reloads on SIGHUP with a new config and keeps its pid, as on a VM without systemd', async (t) => {
  const sb = await startSandbox(t, { rootPassword: 'pw-before-reload' });
  const pid = (await sb.exec(['cat', '/run/sshd.pid'])).stdout.trim();
  t.match(pid, /^\d+$/, 'sshd wrote /run/sshd.pid');
  const write = await sb.exec(['sh', '-c', 'cat > /etc/ssh/sshd_config.d/00-test.conf'], { input: 'PasswordAuthentication no\n' });
  t.equal(write.code, 0, 'exec passes stdin');
  t.equal((await sb.exec(['kill', '-HUP', pid])).code, 0);
  let refused = false;
  for (let i = 0; i < 50 && !refused; i++) {
    await new Promise((r) => setTimeout(r, 100));
    refused = await sshRun({ host: sb.vm.address, password: 'pw-before-reload' }, 'true', 3000).then(
      () => false,
      () => true,
    );
  }
  t.ok(refused, 'password login refused after the reload');
  t.match(await sshBanner(sb.vm.address, 22), /^SSH-2\.0-/, 'sshd still answers');
  t.equal((await sb.exec(['cat', '/run/sshd.pid'])).stdout.trim(), pid, 'same sshd process');
  t.equal((await sb.exec(['sh', '-c', 'exit 7'])).code, 7, 'exec returns the exit code');
  t.notOk(existsSync('/etc/ssh/sshd_config.d/00-test.conf'), 'the host config is untouched');
});

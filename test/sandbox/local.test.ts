import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { sandboxProvider, sandboxSkipReason, sshBanner, sshRun, startSandbox } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

const HOST_FILES = ['/etc/passwd', '/etc/shadow', '/etc/group', '/etc/hostname', '/etc/ssh/sshd_config'];
const snapshot = (): Map<string, string> => new Map(HOST_FILES.map((f) => [f, readFileSync(f, 'latin1')]));

t.test('a fresh sandbox answers SSH on its own address and accepts root with its password, like a fresh cloud VM', needsSandbox, async (t) => {
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

t.test('a generated root password is returned and works', needsSandbox, async (t) => {
  const sb = await startSandbox(t);
  t.ok(sb.vm.root_password.length >= 20, 'a long random password');
  const r = await sshRun({ host: sb.vm.address, password: sb.vm.root_password }, 'id -u');
  t.equal(r.stdout.trim(), '0');
});

t.test("useradd inside changes the sandbox's /etc/passwd while the host's stays byte-identical", needsSandbox, async (t) => {
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

t.test("the sandbox has its own hostname and host keys, not the host's", needsSandbox, async (t) => {
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

t.test("two sandboxes at once get different addresses and do not see each other's /etc", needsSandbox, async (t) => {
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

t.test('sshd reloads on SIGHUP with a new config and keeps its pid, as on a VM without systemd', needsSandbox, async (t) => {
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

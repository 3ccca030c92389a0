/**
 * Runs INSIDE `unshare -m -n -p` (started by harden-accounts.test.ts; the pid namespace
 * guarantees sshd dies with this script): overlays /etc, /home
 * and /root and a tmpfs /run, so the real groupadd/useradd/usermod and the sshd files
 * change only this namespace's copies; loopback only. Starts a real sshd from the
 * (overlaid) system config, hardens the "VM" with root '/', checks logins with the ssh
 * client, and prints one JSON line with what it saw.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 20_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function must(file: string, args: string[]): Promise<Run> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

const [work, hostKey, userKey] = process.argv.slice(2);
if (!work || !hostKey || !userKey) throw new Error('usage: harden-accounts-ns.ts <workdir> <hostkey> <userkey>');

const ovl = join(work, 'ovl');
await mkdir(ovl, { recursive: true });
await must('mount', ['-t', 'tmpfs', 'tmpfs', ovl]);
for (const [name, target] of [['etc', '/etc'], ['home', '/home'], ['root', '/root']] as const) {
  await mkdir(join(ovl, name + '-up'));
  await mkdir(join(ovl, name + '-work'));
  await must('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${target},upperdir=${join(ovl, name + '-up')},workdir=${join(ovl, name + '-work')}`, target]);
}
await must('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run']);
await mkdir('/run/sshd', { mode: 0o755 });
await must('ip', ['link', 'set', 'lo', 'up']);

// A docker socket as dockerd leaves it before group docker exists: root:root 0600.
const sock = createServer();
await new Promise<void>((r) => sock.listen('/run/docker.sock', r));
await chmod('/run/docker.sock', 0o600);

// A fresh cloud VM: root can log in with a key (and passwords are on by default).
await mkdir('/root/.ssh', { recursive: true, mode: 0o700 });
const pub = (await readFile(userKey + '.pub', 'utf8')).trim();
await writeFile('/root/.ssh/authorized_keys', pub + '\n', { mode: 0o600 });
await must('/usr/sbin/sshd', ['-h', hostKey, '-o', 'ListenAddress=127.0.0.1', '-o', 'PidFile=/run/sshd.pid']);
// sshd daemonizes: its child writes the pid file a moment after the parent exits.
let pidText: string | null = null;
for (let i = 0; i < 100 && pidText === null; i++) {
  pidText = await readFile('/run/sshd.pid', 'utf8').catch(() => null);
  if (pidText === null) await new Promise((r) => setTimeout(r, 50));
}
const sshdPid = Number(pidText?.trim());
if (!Number.isInteger(sshdPid)) throw new Error('sshd did not write /run/sshd.pid');
// Never leave the daemon behind, whatever happens below.
process.on('exit', () => {
  try {
    process.kill(sshdPid, 'SIGTERM');
  } catch {
    // already gone
  }
});

const sshArgs = (user: string, extra: string[] = []) => [
  '-F', '/dev/null',
  '-o', 'BatchMode=yes',
  '-o', 'StrictHostKeyChecking=no',
  '-o', 'UserKnownHostsFile=/dev/null',
  '-o', 'ConnectTimeout=5',
  '-i', userKey,
  ...extra,
  `${user}@127.0.0.1`,
  'id',
];
/** The auth methods the server offers: what an attacker sees before any credential. */
async function offered(): Promise<string> {
  const r = await run('ssh', [...sshArgs('nobody-here', ['-v', '-o', 'PreferredAuthentications=none'])]);
  return /Authentications that can continue: (\S+)/.exec(r.stderr)?.[1] ?? '';
}

const before = { offered: await offered(), rootLogin: (await run('ssh', sshArgs('root'))).code === 0 };

/** Inode of sshd's listening socket on 127.0.0.1:22: a new one means sshd re-executed and listens again. */
async function listener(): Promise<string | undefined> {
  const rows = (await readFile('/proc/net/tcp', 'utf8')).split('\n').map((l) => l.trim().split(/\s+/));
  return rows.find((f) => f[1] === '0100007F:0016' && f[3] === '0A')?.[9];
}
const listenerBefore = await listener();

const env = { root: '/', manageAccounts: true, reload: 'auto' as const, sshdArgs: ['-h', hostKey] };
const first = await runHarden({ deploy_keys: [pub], dry_run: false }, env);
// The reload is a SIGHUP: wait until sshd listens on a new socket, not for a fixed time.
for (const deadline = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 50))) {
  const now = await listener();
  if (now !== undefined && now !== listenerBefore) break;
  if (Date.now() > deadline) throw new Error('sshd did not listen again after the harden reload');
}
const kamalLogin = await run('ssh', sshArgs('kamal'));
const after = {
  offered: await offered(),
  rootLogin: (await run('ssh', sshArgs('root'))).code === 0,
  kamalLogin: kamalLogin.code === 0,
  kamalId: kamalLogin.stdout.trim(),
  sshdPidAlive: await stat(`/proc/${sshdPid}`).then(() => true, () => false),
};
const passwd = await readFile('/etc/passwd', 'utf8');
const sockStat = await stat('/run/docker.sock');
const group = await readFile('/etc/group', 'utf8');
const dockerGid = Number(/^docker:[^:]*:(\d+):/m.exec(group)?.[1]);

// Second run on the hardened "VM": nothing to do, nothing touched.
const watched = ['/etc/ssh/sshd_config', '/etc/ssh/sshd_config.d/00-vmkit-hardening.conf', '/home/kamal/.ssh', '/home/kamal/.ssh/authorized_keys', '/etc/passwd', '/etc/group'];
const mtimes = async () => Promise.all(watched.map(async (p) => (await stat(p)).mtimeMs));
const m1 = await mtimes();
const second = await runHarden({ deploy_keys: [pub], dry_run: false }, env);
const m2 = await mtimes();

// An existing kamal with a wrong shell and outside docker is fixed up, not recreated.
await must('usermod', ['--shell', '/usr/sbin/nologin', 'kamal']);
await must('gpasswd', ['--delete', 'kamal', 'docker']);
const uidBefore = /^kamal:[^:]*:(\d+):/m.exec(await readFile('/etc/passwd', 'utf8'))?.[1];
const third = await runHarden({ deploy_keys: [pub], dry_run: false }, env);
const kamalLine = /^kamal:.*$/m.exec(await readFile('/etc/passwd', 'utf8'))?.[0];
const idAfterFix = (await run('id', ['kamal'])).stdout.trim();

sock.close();
console.log(
  JSON.stringify({
    before,
    first,
    after,
    kamalInPasswd: /^kamal:/m.test(passwd),
    socket: { gid: sockStat.gid, mode: sockStat.mode & 0o777, dockerGid },
    second,
    mtimesUnchanged: JSON.stringify(m1) === JSON.stringify(m2),
    third,
    uidBefore,
    kamalLine,
    idAfterFix,
  }),
);

// The harden executor with real groupadd/useradd/usermod and a real running sshd, all
// inside a private mount + network namespace (harden-accounts-ns.ts); the host's own
// users, /etc and /home are checked byte for byte afterwards.
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cannotRunSshd, makeHostKey } from './harden-fixture.ts';
import { execTool } from '../../vmkit-agent/src/executors/harden/exec.ts';
import { fileNeeds } from '../helpers/prereq.ts';

const SCRIPT = fileURLToPath(new URL('./harden-accounts-ns.ts', import.meta.url));
const HOST_FILES = ['/etc/passwd', '/etc/group', '/etc/shadow', '/etc/gshadow', '/etc/ssh/sshd_config'];

async function hostState(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of HOST_FILES) {
    const bytes = await readFile(f).catch(() => Buffer.from('(absent)'));
    out[f] = createHash('sha256').update(bytes).digest('hex');
  }
  out['/etc/ssh/sshd_config.d'] = (await readdir('/etc/ssh/sshd_config.d').catch(() => [])).join(',');
  out['/home'] = (await readdir('/home')).join(',');
  out['/root/.ssh'] = (await readdir('/root/.ssh').catch(() => ['(absent)'])).join(',');
  return out;
}

const reason = (await cannotRunSshd()) ?? (await missingTools());
async function missingTools(): Promise<string | null> {
  const dirs = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const tool of ['useradd', 'groupadd', 'usermod', 'gpasswd', 'ssh', 'ip']) {
    const found = await Promise.all(dirs.map((d) => access(join(d, tool), constants.X_OK).then(() => true, () => false)));
    if (!found.includes(true)) return `${tool} is not installed`;
  }
  return null;
}

if (fileNeeds(reason)) {
  t.test('on a fresh VM harden creates kamal and docker, locks root and passwords out, and kamal logs in with the deploy key', async (t) => {
    const work = await mkdtemp(join(tmpdir(), 'vmkit-harden-ns-'));
    t.teardown(() => rm(work, { recursive: true, force: true }));
    const hostKey = await makeHostKey(work);
    const userKey = join(work, 'deploy');
    const kg = await execTool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'deploy', '-f', userKey]);
    t.equal(kg.code, 0);
    const host = await hostState();

    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        'unshare',
        ['-m', '-n', '-p', '--fork', '--mount-proc', '--kill-child', '--propagation', 'private', '--', process.execPath, '--import', 'tsx', SCRIPT, work, hostKey, userKey],
        { timeout: 90_000, encoding: 'utf8', maxBuffer: 8 * 1024 * 1024 },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      );
    });
    t.equal(out.code, 0, out.stderr.slice(-2000));
    const line = out.stdout.trim().split('\n').pop() ?? '{}';
    const r = JSON.parse(line) as {
      before: { offered: string; rootLogin: boolean };
      first: { ok: boolean; output: { status: string; docker: string; steps: { step: string; changed: boolean; detail?: string }[] }; error?: unknown };
      after: { offered: string; rootLogin: boolean; kamalLogin: boolean; kamalId: string; sshdPidAlive: boolean };
      kamalInPasswd: boolean;
      socket: { gid: number; mode: number; dockerGid: number };
      second: { ok: boolean; output: { status: string } };
      mtimesUnchanged: boolean;
      third: { ok: boolean; output: { status: string; steps: { step: string; changed: boolean; before?: string }[] } };
      uidBefore: string;
      kamalLine: string;
      idAfterFix: string;
    };

    t.match(r.before.offered, /password/, 'a fresh VM offers passwords');
    t.ok(r.before.rootLogin, 'a fresh VM lets root in with a key');

    t.ok(r.first.ok, JSON.stringify(r.first.error ?? ''));
    t.equal(r.first.output.status, 'hardened');
    t.ok(r.kamalInPasswd, 'kamal was created');
    for (const step of ['group_docker', 'user_kamal', 'docker_socket', 'ssh_dir', 'authorized_keys', 'sshd_config']) {
      t.ok(r.first.output.steps.find((s) => s.step === step)?.changed, `${step} changed`);
    }
    t.match(r.first.output.steps.find((s) => s.step === 'sshd_reload')?.detail, /SIGHUP to sshd/, 'the running sshd was reloaded with SIGHUP (no systemd here)');
    t.equal(r.socket.gid, r.socket.dockerGid, 'the docker socket belongs to group docker');
    t.equal(r.socket.mode, 0o660, 'and is group read-write');

    t.equal(r.after.offered, 'publickey', 'only publickey is offered: no password, no keyboard-interactive');
    t.notOk(r.after.rootLogin, 'root is refused even with a valid key');
    t.ok(r.after.kamalLogin, 'kamal logs in with the deploy key');
    t.match(r.after.kamalId, /\(docker\)/, 'id shows the docker group');
    t.ok(r.after.sshdPidAlive, 'sshd survived the reload');

    t.equal(r.second.output.status, 'already_hardened');
    t.ok(r.mtimesUnchanged, 'the second run wrote nothing');

    t.equal(r.third.output.status, 'hardened', 'a drifted kamal is fixed');
    t.match(r.third.output.steps.find((s) => s.step === 'user_kamal')?.before, /nologin/);
    t.match(r.kamalLine, new RegExp(`^kamal:x:${r.uidBefore}:.*:/bin/bash$`), 'same uid (not recreated), shell back to bash');
    t.match(r.idAfterFix, /\(docker\)/, 'back in docker');

    t.same(await hostState(), host, "the host's users, /etc/ssh, /home and /root/.ssh are byte-identical");
  });
}

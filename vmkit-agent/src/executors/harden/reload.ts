/**
 * Makes the running sshd read the new configuration: systemd's `ssh` unit on
 * Debian/Ubuntu (`sshd` elsewhere), nothing to do when only `ssh.socket` is active
 * (Ubuntu 22.10+ socket activation starts sshd per the new config on the next
 * connection), and SIGHUP to the pid in the pid file where there is no systemd.
 */
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { tail } from './exec.ts';
import type { ExecFn } from './exec.ts';
import type { HardenPaths } from './types.ts';

export type ReloadOutcome = { ok: true; how: string } | { ok: false; message: string };

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function reloadSshd(exec: ExecFn, paths: HardenPaths): Promise<ReloadOutcome> {
  const init = (await readFile(paths.initComm, 'utf8').catch(() => '')).trim();
  // sd_booted() plus PID 1 itself: a namespace sandbox may see the host's /run/systemd
  // and must never reload the host's sshd through the host's systemd.
  if (init === 'systemd' && (await isDir(paths.systemdRunDir))) {
    const active = async (unit: string) => (await exec('systemctl', ['is-active', '--quiet', unit])).code === 0;
    for (const unit of ['ssh.service', 'sshd.service']) {
      if (await active(unit)) {
        const r = await exec('systemctl', ['reload', unit]);
        if (r.code !== 0) return { ok: false, message: `systemctl reload ${unit} failed: ${tail(r.stderr)}` };
        if (!(await active(unit))) return { ok: false, message: `${unit} is not active after the reload` };
        return { ok: true, how: `systemctl reload ${unit}` };
      }
    }
    if (await active('ssh.socket')) return { ok: true, how: 'ssh.socket is socket-activated: the next connection reads the new config' };
    return { ok: true, how: 'sshd is not running under systemd: it reads the new config when it starts' };
  }
  const text = await readFile(paths.sshdPidFile, 'utf8').catch(() => null);
  const pid = text === null ? NaN : Number.parseInt(text.trim(), 10);
  // A stale pid file can name any process now: signal it only if it is sshd.
  const comm = Number.isInteger(pid) ? (await readFile(`${paths.proc}/${pid}/comm`, 'utf8').catch(() => '')).trim() : '';
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid) || comm !== 'sshd') {
    return { ok: true, how: 'sshd is not running: it reads the new config when it starts' };
  }
  try {
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    return { ok: false, message: `SIGHUP to sshd (pid ${pid}) failed: ${(err as Error).message}` };
  }
  // sshd re-executes itself in place on SIGHUP; a bad config would make it exit.
  await sleep(500);
  if (!alive(pid)) return { ok: false, message: `sshd (pid ${pid}) exited after SIGHUP` };
  return { ok: true, how: `SIGHUP to sshd (pid ${pid})` };
}

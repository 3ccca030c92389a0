// How the runner reloads sshd (systemd unit, socket activation, failure → rollback).
// sshd is real (in a mount namespace); systemctl is recorded and answered by the test,
// because the host's own systemd must never be asked to reload anything.
import t from 'tap';
import { spawn } from 'node:child_process';
import { appendFile, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';
import type { ExecFn } from '../../vmkit-agent/src/executors/harden/exec.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { cannotRunSshd, fixtureRoot, sshdRig, treeState, withoutTimes } from './harden-fixture.ts';

if (fileNeeds(await cannotRunSshd())) {
  const { hostKey, deployKey, ns } = await sshdRig(t, 'vmkit-harden-reload-');

  /** An exec where systemctl answers from a table and every call is recorded. */
  const withSystemctl = (answers: Record<string, number>) => {
    const calls: string[] = [];
    const exec: ExecFn = async (file, args, opts) => {
      if (file === 'systemctl') {
        const call = args.join(' ');
        calls.push(call);
        return { code: answers[call] ?? 3, stdout: '', stderr: answers[call] === undefined ? '' : `${call} failed` };
      }
      return ns.exec(file, args, opts);
    };
    return { exec, calls };
  };

  const systemdFixture = async (t: { teardown: (fn: () => Promise<void>) => void }, name: string) => {
    const fx = await fixtureRoot(name);
    t.teardown(fx.cleanup);
    await mkdir(fx.paths.systemdRunDir, { recursive: true }); // "booted with systemd"
    await mkdir(join(fx.root, 'proc/1'), { recursive: true });
    await writeFile(fx.paths.initComm, 'systemd\n');
    return fx;
  };

  t.test('on Debian/Ubuntu with systemd the ssh unit is reloaded', async (t) => {
    const fx = await systemdFixture(t, 'debian-12-cloud-init');
    const { exec, calls } = withSystemctl({ 'is-active --quiet ssh.service': 0, 'reload ssh.service': 0 });
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec });
    t.ok(r.ok);
    t.ok(calls.includes('reload ssh.service'));
    t.match(r.ok ? r.output.steps.find((s) => s.step === 'sshd_reload')?.detail : '', /systemctl reload ssh\.service/);
  });

  t.test('with only ssh.socket active (Ubuntu 22.10+ socket activation) nothing is reloaded', async (t) => {
    const fx = await systemdFixture(t, 'ubuntu-24.04-cloud-init');
    const { exec, calls } = withSystemctl({ 'is-active --quiet ssh.socket': 0 });
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec });
    t.ok(r.ok);
    t.notOk(calls.some((c) => c.startsWith('reload')), 'no reload issued');
    t.match(r.ok ? r.output.steps.find((s) => s.step === 'sshd_reload')?.detail : '', /socket-activated/);
  });

  t.test('other distributions use the sshd unit', async (t) => {
    const fx = await systemdFixture(t, 'no-include');
    const { exec, calls } = withSystemctl({ 'is-active --quiet sshd.service': 0, 'reload sshd.service': 0 });
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec });
    t.ok(r.ok);
    t.ok(calls.includes('reload sshd.service'));
  });

  t.test('a failed reload restores every file byte-identical and reports reload_failed', async (t) => {
    const fx = await systemdFixture(t, 'match-passwords');
    const before = await treeState(fx.root);
    const { exec, calls } = withSystemctl({ 'is-active --quiet ssh.service': 0 });
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec });
    t.notOk(r.ok);
    if (r.ok) return;
    t.equal(r.error.key, 'reload_failed');
    t.match(r.error.message, /systemctl reload ssh\.service failed/);
    t.equal(r.output.failed_check, 'reload');
    t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'sshd files, keys and .ssh back as they were');
    t.equal(calls.filter((c) => c === 'reload ssh.service').length, 2, 'reloaded again onto the restored config (best effort)');
  });

  t.test('a /run/systemd/system seen from a sandbox whose PID 1 is not systemd does not use systemctl', async (t) => {
    const fx = await fixtureRoot('debian-12-cloud-init');
    t.teardown(fx.cleanup);
    await mkdir(fx.paths.systemdRunDir, { recursive: true });
    await mkdir(join(fx.root, 'proc/1'), { recursive: true });
    await writeFile(fx.paths.initComm, 'sleep\n');
    const { exec, calls } = withSystemctl({ 'is-active --quiet ssh.service': 0, 'reload ssh.service': 0 });
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec });
    t.ok(r.ok);
    t.same(calls, [], 'systemctl never called');
    t.match(r.ok ? r.output.steps.find((s) => s.step === 'sshd_reload')?.detail : '', /not running/, 'no pid file here: nothing to signal');
  });

  /** A fixture without systemd whose pid file names a real process we own, named as given in its fake /proc. */
  const pidFixture = async (t: { teardown: (fn: () => Promise<void>) => void }, comm: string) => {
    const fx = await fixtureRoot('debian-12-cloud-init');
    t.teardown(fx.cleanup);
    const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
    t.teardown(async () => {
      victim.kill('SIGKILL');
    });
    const pid = victim.pid ?? 0;
    await writeFile(fx.paths.sshdPidFile, `${pid}\n`);
    await mkdir(join(fx.paths.proc, String(pid)), { recursive: true });
    await writeFile(join(fx.paths.proc, String(pid), 'comm'), comm + '\n');
    const exited = new Promise<string>((r) => victim.once('exit', (_c, sig) => r(String(sig))));
    return { fx, victim, exited };
  };

  t.test('without systemd a stale pid file naming another program is never signalled', async (t) => {
    const { fx, victim } = await pidFixture(t, 'sleep');
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec: ns.exec });
    t.ok(r.ok);
    t.equal(victim.exitCode, null, 'the process is still running');
    t.equal(victim.signalCode, null);
  });

  t.test('without systemd sshd gets SIGHUP, and an sshd that dies on it means reload_failed and a rollback', async (t) => {
    // The "sshd" here is a sleep: SIGHUP kills it, exactly as a config sshd cannot load would.
    const { fx, exited } = await pidFixture(t, 'sshd');
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'auto', sshdArgs: ['-h', hostKey], exec: ns.exec });
    t.equal(await exited, 'SIGHUP', 'it was sent SIGHUP');
    t.ok(!r.ok && r.error.key === 'reload_failed', r.ok ? 'succeeded?' : r.error.message);
    t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'files restored');
  });

  t.test('a missing sshd_config.d is created for the drop-in and removed again on rollback', async (t) => {
    const fx = await fixtureRoot('debian-12');
    t.teardown(fx.cleanup);
    await rmdir(join(fx.root, 'etc/ssh/sshd_config.d'));
    const ok = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, sshdArgs: ['-h', hostKey], exec: ns.exec });
    t.ok(ok.ok && ok.output.placement === 'drop-in', ok.ok ? '' : JSON.stringify(ok.error));
    t.match(await readFile(join(fx.root, 'etc/ssh/sshd_config.d/00-vmkit-hardening.conf'), 'utf8'), /PermitRootLogin no/);

    const bad = await fixtureRoot('debian-12');
    t.teardown(bad.cleanup);
    await rmdir(join(bad.root, 'etc/ssh/sshd_config.d'));
    await appendFile(bad.paths.sshdConfig, 'NoSuchKeyword yes\n');
    const before = await treeState(bad.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: bad.root, manageAccounts: false, sshdArgs: ['-h', hostKey], exec: ns.exec });
    t.ok(!r.ok && r.error.key === 'sshd_validation_failed');
    t.same(withoutTimes(await treeState(bad.root)), withoutTimes(before), 'the directory it created is gone again');
  });
}

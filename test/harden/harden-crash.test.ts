// The agent killed with SIGKILL at every harden step boundary, on a sandbox VM with a
// real sshd, real accounts and the real agent process (restarted as systemd would):
// after the restart the VM is either exactly as before (files byte for byte with
// modes and owners, passwd/group/shadow entries) or fully hardened with kamal logging
// in with its key, and the command's result says which. The agent runs with
// `--test-stop-at-harden-steps`: it stops itself (SIGSTOP) at each journaled boundary
// and this test either continues it or kills it there.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deployKeyStoreOf } from '../../control-plane/src/services/harden/context.ts';
import { defaultAgentProgram } from '../../control-plane/src/providers/compute/local.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { startEnrolledVm } from '../helpers/enrolled-vm.ts';
import { sandboxProvider, sandboxSkipReason, sshRun } from '../helpers/sandbox.ts';
import type { TestSandbox } from '../helpers/sandbox.ts';
import { fileNeeds } from '../helpers/prereq.ts';

t.setTimeout(1_500_000);

const ROOT_PASSWORD = 'fresh-cloud-vm-password';
/** Boundaries a fresh VM passes, in this order (the plan may add more sshd steps in between; they are tried too). */
const ROLLED_BACK = ['journaled', 'group_docker', 'user_kamal', 'ssh_dir', 'authorized_keys', 'keys_checked', 'sshd_config', 'sshd_validated'];
const COMPLETED = ['checks_passed', 'sshd_reload', 'finished'];

interface CommandBody {
  state: string;
  progress?: { seq: number }[];
  result: { status?: string; recovery?: { action: string; reason: string }; verification?: { ok: boolean | null } } | null;
  error: { error: string; message: string; detail?: { status?: string; recovery?: { action: string; reason: string }; restored?: string[]; accounts_restored?: string[] } } | null;
}

if (fileNeeds(sandboxSkipReason)) {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const deployKey = await deployKeyStoreOf(cp.ctx).get(cp.workspaceId);
  const keyDir = mkdtempSync(join(tmpdir(), 'vmkit-crash-key-'));
  t.teardown(() => rmSync(keyDir, { recursive: true, force: true }));
  const keyFile = join(keyDir, 'deploy');
  writeFileSync(keyFile, deployKey.privateKey, { mode: 0o600 });

  // The repository's agent exactly as the sandbox runs it, plus the crash-test flag.
  const provider = sandboxProvider(t, {
    agentProgram: (e) => {
      const p = defaultAgentProgram(e);
      p.steps.at(-1)?.argv.push('--test-stop-at-harden-steps');
      // Killed on purpose at every boundary: restart at once instead of backing off to 10 s.
      return { ...p, restart_delay_ms: 200 };
    },
  });

  /** Every file and directory hardening may touch, with bytes, mode and owner; the account databases byte for byte. */
  async function systemState(sb: TestSandbox): Promise<string> {
    const r = await sb.exec([
      'sh',
      '-c',
      'find /etc/ssh /home -xdev -printf "%p %y %m %U:%G\\n" | LC_ALL=C sort; ' +
        'find /etc/ssh /home -xdev -type f -exec sha256sum {} + | LC_ALL=C sort; ' +
        'for f in /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/subuid /etc/subgid; do ' +
        '[ -e "$f" ] && { stat -c "%n %a %U:%G %s" "$f"; sha256sum "$f"; } || echo "$f absent"; done; ' +
        'getent passwd kamal || echo "no user kamal"; getent group docker || echo "no group docker"; getent group kamal || echo "no group kamal"',
    ]);
    if (r.code !== 0) throw new Error(`state read failed: ${r.stderr}`);
    return r.stdout;
  }

  function logSize(sb: TestSandbox): number {
    return statSync(join(sb.vm.dir, 'program.log')).size;
  }

  /** The next `test stop` line after `offset` in the agent's log: its step and in-sandbox pid. */
  async function nextStop(sb: TestSandbox, offset: number): Promise<{ step: string; pid: number; offset: number }> {
    const file = join(sb.vm.dir, 'program.log');
    const deadline = Date.now() + 120_000;
    for (;;) {
      const text = readFileSync(file).subarray(offset).toString('utf8');
      const m = /^warn test stop at harden step boundary (\{.*\})$/m.exec(text);
      if (m?.[1] !== undefined) {
        const f = JSON.parse(m[1]) as { step: string; pid: number };
        return { step: f.step, pid: f.pid, offset: offset + Buffer.byteLength(text.slice(0, m.index + m[0].length)) };
      }
      if (Date.now() > deadline) throw new Error(`no harden step boundary reached; agent log:\n${text.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits until the process is really stopped (state T), so the kill lands exactly at the boundary. */
  async function waitStopped(sb: TestSandbox, pid: number): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await sb.exec(['cat', `/proc/${pid}/stat`]);
      const state = /\) (\S)/.exec(r.stdout)?.[1];
      if (state === 'T') return;
      if (Date.now() > deadline) throw new Error(`agent ${pid} did not stop (state ${state ?? '?'})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function waitResult(commandId: string): Promise<CommandBody> {
    const deadline = Date.now() + 300_000;
    // after_seq: the long-poll answers at once while there is progress the caller has not seen.
    let afterSeq = -1;
    for (;;) {
      const r = await cp.api<CommandBody>('GET', `/api/commands/${commandId}?wait_ms=8000&after_seq=${afterSeq}`);
      if (r.status === 200 && r.body.state !== 'running') return r.body;
      for (const p of r.body.progress ?? []) afterSeq = Math.max(afterSeq, p.seq);
      if (Date.now() > deadline) throw new Error(`command ${commandId} did not finish: ${JSON.stringify(r.body)}`);
    }
  }

  function openSsh(host: string, user: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const args = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=10', '-i', keyFile, `${user}@${host}`, 'id'];
    return new Promise((resolve) => {
      execFile('ssh', args, { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }));
    });
  }

  let n = 0;
  const freshVm = async () => {
    const vm = await startEnrolledVm(t, cp, { name: `crash-${++n}`, rootPassword: ROOT_PASSWORD, provider });
    return { ...vm, original: await systemState(vm.sb) };
  };

  t.test('killed at any harden step boundary, the restarted agent leaves the VM as it was or fully hardened, never between', async (t) => {
    let vm = await freshVm();
    const killedAt: string[] = [];
    for (let k = 0; ; k++) {
      const host = vm.sb.vm.address;
      let offset = logSize(vm.sb);
      const started = await cp.api<{ command_id: string }>('POST', `/api/instances/${vm.id}/harden`, { body: { wait_ms: 0 } });
      t.equal(started.status, 202, JSON.stringify(started.body));
      // Continue through the first k boundaries, SIGKILL at boundary k.
      let step = '';
      for (let i = 0; i <= k; i++) {
        const stop = await nextStop(vm.sb, offset);
        offset = stop.offset;
        await waitStopped(vm.sb, stop.pid);
        if (i < k) await vm.sb.exec(['kill', '-CONT', String(stop.pid)]);
        else {
          step = stop.step;
          const killed = await vm.sb.exec(['kill', '-KILL', String(stop.pid)]);
          t.equal(killed.code, 0, `SIGKILL at ${step}`);
        }
      }
      // Before the checks pass, a kill means rollback; from there on, completion.
      const checksPassed = step === 'checks_passed' || killedAt.includes('checks_passed');
      killedAt.push(step);
      const res = await waitResult(started.body.command_id);
      const log = readFileSync(join(vm.sb.vm.dir, 'program.log')).subarray(offset).toString('utf8');

      if (!checksPassed) {
        t.equal(res.state, 'failed', `killed at ${step}: the command failed`);
        t.equal(res.error?.error, 'command_interrupted', `killed at ${step}: ${JSON.stringify(res.error)}`);
        t.match(res.error?.message, /rolled every change back/, 'the message says it was rolled back');
        t.equal(res.error?.detail?.recovery?.action, 'rolled_back', 'the result reports rolled_back');
        t.match(res.error?.detail?.recovery?.reason, new RegExp(`last step journaled: ${step}`), 'with the reason');
        t.match(log, /harden was interrupted by an agent restart: rolled back every change/, 'the agent log says so');
        t.equal(await systemState(vm.sb), vm.original, `killed at ${step}: every file, mode, owner and account is exactly as before`);
        const root = await sshRun({ host, password: ROOT_PASSWORD }, 'id -un');
        t.equal(root.stdout.trim(), 'root', `killed at ${step}: sshd serves the original config (root with a password still gets in)`);
        continue;
      }

      t.equal(res.state, 'succeeded', `killed at ${step}: ${JSON.stringify(res.error)}`);
      t.equal(res.result?.status, 'hardened');
      t.equal(res.result?.recovery?.action, 'completed', `killed at ${step}: the result reports completed`);
      t.type(res.result?.recovery?.reason, 'string', 'with the reason');
      t.equal(res.result?.verification?.ok, true, 'the control plane verified the hardening from outside');
      if (step !== 'finished') t.match(log, /harden was interrupted by an agent restart after every check had passed: completed it/, 'the agent log says so');
      const kamal = await sshRun({ host, username: 'kamal', privateKey: deployKey.privateKey }, 'id');
      t.match(kamal.stdout, /uid=\d+\(kamal\).*\(docker\)/, `killed at ${step}: kamal logs in with its key (ssh2)`);
      const viaOpenSsh = await openSsh(host, 'kamal');
      t.equal(viaOpenSsh.code, 0, `killed at ${step}: kamal logs in with OpenSSH's ssh: ${viaOpenSsh.stderr}`);
      t.match(viaOpenSsh.stdout, /\(kamal\)/);
      await t.rejects(sshRun({ host, password: ROOT_PASSWORD }, 'true'), `killed at ${step}: root with a password is refused`);
      t.not((await openSsh(host, 'root')).code, 0, 'root with a key is refused');
      if (step === 'finished') break;
      vm = await freshVm();
    }
    const rolledBack = ROLLED_BACK.filter((s) => killedAt.includes(s));
    t.same(rolledBack, ROLLED_BACK, `every boundary before the checks passed was tried: ${killedAt.join(', ')}`);
    t.same(killedAt.filter((s) => COMPLETED.includes(s)), COMPLETED, 'and every one after');
    t.ok(killedAt.indexOf('keys_checked') < killedAt.indexOf('sshd_config'), 'the keys are checked before any sshd change');
    t.ok(killedAt.indexOf('user_kamal') < killedAt.indexOf('keys_checked'), 'kamal exists before the keys are checked');
  });
}

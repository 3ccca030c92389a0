/**
 * `vmkit instances harden NAME` against a real VM: a local sandbox with a real sshd and a
 * real vmkit-agent. The CLI prints a line per step as the agent reports it, answers
 * `hardened` with exit 0, `already_hardened` the second time, and exits 1 naming the
 * error when the agent refuses.
 */
import t from 'tap';
import { stepLine } from '../../control-plane/src/cli/instances-cli.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { startEnrolledVm } from '../helpers/enrolled-vm.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason, sshRun } from '../helpers/sandbox.ts';
import { vmkitCli } from '../helpers/vmkit-cli.ts';

t.setTimeout(480_000);

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };
const ROOT_PASSWORD = 'fresh-cloud-vm-password';

interface CommandBody {
  state: string;
  progress: { seq: number; step: string; state: string; message?: string }[];
  result: { status?: string } | null;
}

const cp = await startTestControlPlane();
t.teardown(() => cp.close());
const vmkit = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));

t.test('vmkit instances harden NAME prints each step, answers hardened and exits 0; again: already_hardened', needsSandbox, async (t) => {
  const name = uniqueInstanceName('cli-harden');
  const { id, sb } = await startEnrolledVm(t, cp, { name, rootPassword: ROOT_PASSWORD });

  const out = await vmkit(['instances', 'harden', name]);
  t.equal(out.code, 0, out.stderr);
  t.equal(out.stdout, `Instance ${name} (${id}): hardened.\n`);
  const commandId = new RegExp(`^Hardening ${name} \\(${id}\\), command (cmd_\\w+):\\n`).exec(out.stderr)?.[1];
  t.ok(commandId, 'the first line names the instance and the command');
  // What the agent reported, as the control plane recorded it: the CLI printed each, in order.
  const cmd = await cp.api<CommandBody>('GET', `/api/commands/${commandId}`);
  t.equal(cmd.body.state, 'succeeded');
  t.ok(cmd.body.progress.length >= 3, `several steps reported (${cmd.body.progress.length})`);
  t.equal(out.stderr.split('\n').slice(1).join('\n'), cmd.body.progress.map(stepLine).join(''), 'one line per step, in order, nothing else');
  t.match(out.stderr, /sshd/, 'the lines name the steps');

  await t.rejects(sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'true'), 'the VM refuses root with a password now');

  const again = await vmkit(['instances', 'harden', name, '--json']);
  t.equal(again.code, 0, again.stderr);
  t.match(JSON.parse(again.stdout), { status: 'already_hardened' }, '--json prints the result');
});

t.test('a harden the agent refuses exits 1 with the error key and sentence, and changes nothing', needsSandbox, async (t) => {
  const name = uniqueInstanceName('cli-lockout');
  const { id, sb } = await startEnrolledVm(t, cp, { name, rootPassword: ROOT_PASSWORD });
  // Only root may log in: hardening (no root login) would lock everyone out.
  await sb.exec(['sh', '-c', 'printf "AllowUsers root\\n" > /etc/ssh/sshd_config.d/10-allow.conf']);

  const out = await vmkit(['instances', 'harden', name]);
  t.equal(out.code, 1, out.stdout);
  t.equal(out.stdout, '', 'no result on stdout');
  t.match(out.stderr, new RegExp(`^Hardening ${name} \\(${id}\\), command cmd_\\w+:\\n`));
  t.match(out.stderr, /\nerror: harden of .* failed: lockout_risk: .+\n$/, 'the last line names the error key and why');
  const inst = await cp.api<{ hardened_at: string | null }>('GET', `/api/instances/${id}`);
  t.equal(inst.body.hardened_at, null, 'not hardened');
  const still = await sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'id -un');
  t.equal(still.stdout.trim(), 'root', 'the VM works as before');
});

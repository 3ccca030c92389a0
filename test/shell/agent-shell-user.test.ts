import t from 'tap';
import { defaultAgentProgram } from '../../control-plane/src/providers/compute/local.ts';
import type { GuestProgram } from '../../control-plane/src/providers/compute/local.ts';
import type { ApiError } from '../../control-plane/src/errors.ts';
import type { ShellExit } from '../../control-plane/src/shell/channel.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { startEnrolledVm } from '../helpers/enrolled-vm.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxProvider, sandboxSkipReason } from '../helpers/sandbox.ts';

/**
 * The account switch, inside a sandbox VM (users are made there, never on the host):
 * the sandbox's own agent, as root, opens sessions as `alice`, a member of `ops`.
 */

/** The repository's agent, after making alice (group ops) and setting the agent's shell config. */
function agentWithAlice(shell: Record<string, unknown>) {
  return (e: Parameters<typeof defaultAgentProgram>[0]): GuestProgram => {
    const base = defaultAgentProgram(e);
    const [enroll, run] = base.steps;
    if (!enroll || !run) throw new Error('the default agent program changed shape');
    const patch = `const fs=require('fs');const f='/etc/vmkit/agent.json';const c=JSON.parse(fs.readFileSync(f,'utf8'));c.shell=${JSON.stringify(shell)};fs.writeFileSync(f,JSON.stringify(c),{mode:0o600})`;
    return {
      ...base,
      steps: [
        { argv: ['groupadd', 'ops'] },
        { argv: ['useradd', '--create-home', '--shell', '/bin/bash', '--groups', 'ops', 'alice'] },
        enroll,
        { argv: [process.execPath, '-e', patch] },
        run,
      ],
    };
  };
}

if (fileNeeds(sandboxSkipReason)) {
  t.test('a shell runs as the requested user with its groups, home and environment; root stays refused', async (t) => {
    const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 } } });
    t.teardown(() => cp.close());
    const provider = sandboxProvider(t, { agentProgram: agentWithAlice({ default_user: 'alice' }) });
    const vm = await startEnrolledVm(t, cp, { name: 'shell-user', rootPassword: 'pw-shell-user', provider, connectTimeoutMs: 180_000 });
    const inst = await cp.api<{ agent: { id: string } | null }>('GET', `/api/instances/${vm.id}`);
    const agentId = inst.body.agent?.id;
    if (!agentId) throw new Error('no agent');
    const opener = cp.ctx.shellOpener;
    if (!opener) throw new Error('no shellOpener');

    const run = async (command: string, user?: string) => {
      const ch = await opener.open({ agentId, cols: 80, rows: 24, term: 'xterm', command, ...(user === undefined ? {} : { user }) });
      let out = '';
      ch.onData((c, done) => {
        out += c.toString('utf8');
        done();
      });
      const exit = await new Promise<ShellExit>((resolve) => ch.onExit(resolve));
      return { out, exit };
    };

    const who = await run('id -un; id -Gn; pwd; echo "home=$HOME user=$USER"');
    t.equal(who.exit.code, 0);
    const lines = who.out.split(/\r?\n/);
    t.equal(lines[0], 'alice', 'the default user from the config');
    t.ok(lines[1]?.split(' ').includes('ops'), `supplementary groups set (${lines[1] ?? ''})`);
    t.notOk(lines[1]?.split(' ').includes('root'), "none of root's groups kept");
    t.equal(lines[2], '/home/alice', 'cwd is the home directory');
    t.equal(lines[3], 'home=/home/alice user=alice');

    const named = await run('id -u', 'alice');
    t.not(named.out.trim(), '0', 'not uid 0');

    const root = await opener.open({ agentId, cols: 80, rows: 24, term: 'xterm', user: 'root' }).catch((e: unknown) => e as ApiError);
    t.equal((root as ApiError).key, 'shell_user_refused', 'root is refused: the config does not allow it');
  });
}

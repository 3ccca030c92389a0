// A control plane killed with SIGKILL while a local VM is being created, then started
// again on the same data dir and port: the instance does not stay `provisioning`.
import t from 'tap';
import type { Test } from 'tap';
import { existsSync } from 'node:fs';
import type { SandboxState } from '../../control-plane/src/providers/compute/local.ts';
import { alive } from '../../control-plane/src/providers/compute/local-host.ts';
import { eventually } from '../helpers/cp-process.ts';
import { crashRig } from '../helpers/crash-rig.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';

t.setTimeout(600_000);

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

interface InstanceBody {
  id: string;
  status: string;
  status_reason: string | null;
  ssh: { host: string } | null;
}

/** The processes a half-made sandbox left on the host, by what its state file recorded. */
function leftovers(state: SandboxState): number[] {
  return [state.relay_pid, state.supervisor_pid, state.init_pid].filter((p): p is number => p !== undefined && alive(p, undefined));
}

async function killMidCreate(t: Test, killWhen: (s: SandboxState) => boolean) {
  const { provider, start } = await crashRig(t);
  const first = await start();

  // The answer never comes: the process dies under it.
  const answer = first.api('POST', '/api/instances', { name: 'web-1', provider: 'local' }, 120_000).catch((err: unknown) => err);
  const ref = await eventually('the sandbox folder', () => provider.list().then((l) => l[0]?.ref));
  // Polled every 5 ms: the boot phase lasts as long as sshd takes to answer. A sandbox seen
  // past the kill point (running, or gone) fails at once, naming what was seen.
  const seen: string[] = [];
  const state = await eventually(
    'the sandbox reaching the kill point',
    async () => {
      const s = provider.readState(ref);
      const phase = s === undefined ? 'gone' : s.phase;
      if (seen.at(-1) !== phase) seen.push(phase);
      if (s !== undefined && killWhen(s)) return s;
      if (phase === 'running' || (phase === 'gone' && seen.length > 1)) {
        // A sandbox gone before the kill point failed to start: the create's answer says why.
        const why = await Promise.race([answer, new Promise((r) => setTimeout(() => r('no answer yet'), 10_000))]);
        throw new Error(`the sandbox went past the kill point before it was seen there (phases seen: ${seen.join(' → ')}); the create answered: ${why instanceof Error ? why.message : JSON.stringify(why)}`);
      }
      return undefined;
    },
    120_000,
    5,
  );
  first.kill('SIGKILL');
  await first.exited;
  t.type(await answer, Error, 'the create request died with the process');
  t.ok(leftovers(state).length > 0 || existsSync(`/run/netns/${state.netns}`), 'the killed create left processes or a namespace behind');

  const cp = await start();
  const inst = await eventually('the instance leaving provisioning and its leftovers removed', async () => {
    const list = await cp.api<{ items: InstanceBody[] }>('GET', '/api/instances');
    const i = list.body.items[0];
    // Failed at once, then the reason tells how removing the leftovers went.
    return i !== undefined && i.status !== 'provisioning' && !/Removing what/.test(i.status_reason ?? '') ? i : undefined;
  });
  t.equal(inst.status, 'failed', 'the instance is failed');
  t.match(inst.status_reason, /control plane stopped while the VM was being created.*removed/, `with the reason: ${inst.status_reason}`);
  t.equal(inst.ssh, null, 'and no address');
  t.notOk(existsSync(provider.dirOf(ref)), 'the sandbox folder is gone');
  t.notOk(existsSync(`/run/netns/${state.netns}`), 'its network namespace is gone');
  t.same(leftovers(state), [], 'no process of it is left');
  const del = await cp.api<InstanceBody>('DELETE', `/api/instances/${inst.id}`);
  t.equal(del.status, 200, 'the failed instance can still be deleted');
}

t.test('killed while the sandbox network and relay are being set up: the instance fails with a reason and nothing is left', needsSandbox, (t) =>
  killMidCreate(t, (s) => s.phase === 'creating' && s.relay_pid !== undefined),
);

t.test('killed while the sandbox boots (before sshd answers): the instance fails with a reason and nothing is left', needsSandbox, (t) =>
  killMidCreate(t, (s) => s.phase === 'booting' && s.init_pid !== undefined),
);

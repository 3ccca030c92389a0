// Parallel harden calls on one VM share one run: one command, one outside check.
import t from 'tap';
import { getCommand } from '../../control-plane/src/db/commands.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { startEnrolledVm } from '../helpers/enrolled-vm.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import type { HardenBody } from '../helpers/harden-body.ts';

t.setTimeout(480_000);

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

t.test('six parallel harden calls on one VM send one command and verify once; all six get its answer', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const { id } = await startEnrolledVm(t, cp, { name: 'web-1', rootPassword: 'fresh-cloud-vm-password' });

  // Six real HTTP requests at once, each on its own connection.
  const calls = Array.from({ length: 6 }, () =>
    fetch(`${cp.url}/api/instances/${id}/harden`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cp.adminKey}`, 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ wait_ms: 120_000 }),
      signal: AbortSignal.timeout(180_000),
    }).then(async (res) => ({ status: res.status, body: (await res.json()) as HardenBody })),
  );
  const answers = await Promise.all(calls);
  const statuses = answers.map((a) => a.status);
  t.same(statuses, Array(6).fill(200), statuses.every((s) => s === 200) ? 'all six answer 200' : JSON.stringify(answers.map((a) => a.body)));
  const ids = new Set(answers.map((a) => a.body.command_id));
  t.equal(ids.size, 1, 'they share one command');
  t.same(answers.map((a) => a.body.status), Array(6).fill('hardened'), 'and its answer');
  t.ok(answers.every((a) => a.body.verification?.ok === true), 'verified from outside');

  const commands = await rawRows(cp.ctx.db, sql`select id from commands where instance_id = ${id} and type = 'harden'`);
  t.equal(commands.length, 1, 'one harden command reached the agent');
  t.equal((await getCommand(cp.ctx.db, [...ids][0] ?? ''))?.state, 'succeeded');
  // The audit row is written as the response ends (onResponse): on PostgreSQL the last one may
  // land a round trip after its caller has the answer, so read until the sixth is there.
  let actions: string[] = [];
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
    const audit = await cp.api<{ items: Array<{ action: string }> }>('GET', '/api/audit?limit=50');
    actions = audit.body.items.map((i) => i.action);
    if (actions.filter((a) => a === 'instances.harden').length >= 6) break;
  }
  t.equal(actions.filter((a) => a === 'instances.harden').length, 6, 'each call is audited');
  t.equal(actions.filter((a) => a === 'instances.harden.completed').length, 1, 'the one run and its outside check once');
});

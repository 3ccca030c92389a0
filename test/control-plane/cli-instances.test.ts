import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { vmkitCli } from '../helpers/vmkit-cli.ts';
import { stepLine } from '../../control-plane/src/cli/instances-cli.ts';

t.test('vmkit instances create, show, delete, harden and scan against a real server', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());
  const vmkit = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));

  t.test('create a manual instance, then show it by name and by id', async (t) => {
    const created = await vmkit(['instances', 'create', 'web-1', '--provider', 'manual']);
    t.equal(created.code, 0, created.stderr);
    const id = /is (inst_[0-9a-z]{26}) \(manual, /.exec(created.stdout)?.[1];
    t.ok(id, 'prints the new id and provider');
    const byName = await vmkit(['instances', 'show', 'WEB-1']);
    t.equal(byName.code, 0, byName.stderr);
    t.match(byName.stdout, new RegExp(`${id}\\s+web-1\\s+\\w+\\s+manual`), 'a name is accepted where an id is (any case)');
    const byId = await vmkit(['instances', 'show', id ?? '', '--json']);
    t.equal((JSON.parse(byId.stdout) as { name: string }).name, 'web-1');
  });

  t.test('create needs --provider; an unknown name says so', async (t) => {
    const noProvider = await vmkit(['instances', 'create', 'web-2']);
    t.equal(noProvider.code, 2);
    t.match(noProvider.stderr, /^--provider is required/);
    const unknown = await vmkit(['instances', 'show', 'nope']);
    t.equal(unknown.code, 1);
    t.equal(unknown.stderr, `error: no instance named nope in this workspace at ${cp.url} (see: vmkit instances list)\n`);
    t.equal((await vmkit(['instances', 'create', 'a', 'b', '--provider', 'manual'])).code, 2, 'one name only');
  });

  t.test('delete by name destroys it, and the name is then free', async (t) => {
    t.equal((await vmkit(['instances', 'create', 'tmp-1', '--provider', 'manual'])).code, 0);
    const del = await vmkit(['instances', 'delete', 'tmp-1']);
    t.equal(del.code, 0, del.stderr);
    t.match(del.stdout, /^Instance tmp-1 \(inst_\w+\) is destroyed\.\n$/);
    const again = await vmkit(['instances', 'delete', 'tmp-1']);
    t.equal(again.code, 1, 'a destroyed instance is not found by its name');
    t.match(again.stderr, /no instance named tmp-1/);
  });

  t.test('harden of an instance without an agent fails with the API error', async (t) => {
    const out = await vmkit(['instances', 'harden', 'web-1']);
    t.equal(out.code, 1);
    t.match(out.stderr, /^error: \w+: /);
  });

  t.test('scan of a repo not connected is an API error', async (t) => {
    const out = await vmkit(['scan', 'badri/nothing-here']);
    t.equal(out.code, 1);
    t.match(out.stderr, /^error: \w+: /);
    t.equal((await vmkit(['scan'])).code, 2, 'scan needs OWNER/NAME');
  });

  t.test('a harden step is printed as one line, escaped', async (t) => {
    t.equal(stepLine({ seq: 0, step: 'kamal_user', state: 'done' }), '  kamal_user: done\n');
    t.equal(stepLine({ seq: 1, step: 'sshd', state: 'failed', message: 'bad\u001b[2J' }), '  sshd: failed (bad\\x1b[2J)\n');
  });
});

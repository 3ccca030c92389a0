import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { runVmkit, vmkitCli } from '../helpers/vmkit-cli.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';

const ROOT = join(import.meta.dirname, '..', '..');

t.test('the vmkit CLI against a real server', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());

  // Never the machine's own saved login.
  const vmkit = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));

  t.test('repos add and list, as a table and as JSON', async (t) => {
    const add = await vmkit(['repos', 'add', 'badri/my-app']);
    t.equal(add.code, 0);
    const id = /(repo_[0-9a-z]{26})/.exec(add.stdout)?.[1];
    t.ok(id, 'prints the new id');
    const list = await vmkit(['repos', 'list']);
    t.match(list.stdout, /^ID\s+REPO\s+CREATED\n/);
    t.match(list.stdout, new RegExp(`${id}\\s+badri/my-app`));
    const json = await vmkit(['repos', 'list', '--json']);
    t.same((JSON.parse(json.stdout) as { items: { id: string }[] }).items.map((r) => r.id), [id]);
    const show = await vmkit(['repos', 'show', id ?? '']);
    t.match(show.stdout, /badri\/my-app/);
    const env = await vmkit(['environments', 'create', id ?? '', 'staging']);
    t.equal(env.code, 0);
    t.match((await vmkit(['environments', 'list', id ?? ''])).stdout, /staging/);
  });

  t.test('keys create, list and revoke', async (t) => {
    const created = await vmkit(['keys', 'create', '--name', 'ci', '--scopes', 'repos:read,instances:read', '--expires-in-days', '7', '--json']);
    t.equal(created.code, 0);
    const key = JSON.parse(created.stdout) as { id: string; secret: string; expires_at: string };
    t.match(key.secret, /^vmk_/);
    t.ok(Date.parse(key.expires_at) > Date.now() + 6 * 86_400_000, 'expires in about a week');
    const asCi = await vmkit(['repos', 'list'], { VMKIT_API_KEY: key.secret });
    t.equal(asCi.code, 0, 'the new key works');
    const list = await vmkit(['keys', 'list']);
    t.match(list.stdout, new RegExp(`${key.id}\\s+ci\\s+vmk_\\w{8}\\s+repos:read,instances:read`));
    t.notOk(list.stdout.includes(key.secret));
    const revoke = await vmkit(['keys', 'revoke', key.id]);
    t.equal(revoke.code, 0);
    t.match(revoke.stdout, /Revoked key/);
    const after = await vmkit(['repos', 'list'], { VMKIT_API_KEY: key.secret });
    t.equal(after.code, 1);
    t.match(after.stderr, /^error: unauthorized: The API key has been revoked\./);
  });

  t.test('instances list shows agent state', async (t) => {
    await createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: 'web-1', provider: 'local', status: 'running', sshHost: '10.0.0.2', sshPort: 22 });
    const out = await vmkit(['instances', 'list']);
    t.equal(out.code, 0);
    t.match(out.stdout, /^ID\s+NAME\s+STATUS\s+PROVIDER\s+SSH\s+AGENT/);
    t.match(out.stdout, /web-1\s+running\s+local\s+10\.0\.0\.2:22\s+none/);
  });

  t.test('audit list shows the trail with filters and a cursor hint', async (t) => {
    const out = await vmkit(['audit', 'list', '--action', 'repos.list', '--limit', '1']);
    t.equal(out.code, 0);
    t.match(out.stdout, /^AT\s+ACTION\s+STATUS\s+ERROR\s+KEY\s+CHANNEL/);
    // The newest repos.list is the revoked key's attempt of the test above.
    t.match(out.stdout, /repos\.list\s+401\s+unauthorized\s+key_\w+\s+rest\s+-\s+-\s+127\.0\.0\.1/);
    t.match(out.stdout, /\(more: --cursor aud_\w+\)/, 'more than one repos.list: a cursor is offered');
    const json = await vmkit(['audit', 'list', '--action', 'keys.revoke', '--json']);
    const page = JSON.parse(json.stdout) as { items: { action: string; target_ids: Record<string, string> }[] };
    t.ok(page.items.length >= 1);
    t.ok(page.items.every((a) => a.action === 'keys.revoke'));
    t.equal((await vmkit(['audit', 'list', '--since', 'nope'])).code, 1, 'a bad filter is an API error');
  });

  t.test('errors: API errors exit 1 with the key, usage errors exit 2', async (t) => {
    const missing = await vmkit(['repos', 'show', 'repo_nope']);
    t.equal(missing.code, 1);
    t.equal(
      missing.stderr,
      `error: repo_not_found: No repo with id repo_nope found in this workspace. (GET ${cp.url}/api/repos/repo_nope answered 404)\n`,
      'the key, the sentence and the URL it tried',
    );
    const json = await vmkit(['repos', 'show', 'repo_nope', '--json']);
    t.same(JSON.parse(json.stderr), {
      error: 'repo_not_found',
      message: 'No repo with id repo_nope found in this workspace.',
      url: `${cp.url}/api/repos/repo_nope`,
      status: 404,
    });
    t.equal((await vmkit(['keys', 'create', '--name', 'x'])).code, 2, 'missing --scopes');
    t.equal((await vmkit(['frobnicate'])).code, 2);
    t.equal((await vmkit(['repos', 'list', '--nope'])).code, 2);
    const scope = await vmkit(['keys', 'create', '--name', 'x', '--scopes', 'root']);
    t.equal(scope.code, 1);
    t.match(scope.stderr, /invalid_request/);
    const noKey = await runVmkit(['repos', 'list'], { VMKIT_URL: cp.url, VMKIT_DATA_DIR: '/nonexistent', XDG_CONFIG_HOME: vmkit.configHome });
    t.equal(noKey.code, 2, 'no key anywhere is a usage error');
  });

  t.test('the bin shim runs as a real process', async (t) => {
    const { stdout } = await promisify(execFile)(process.execPath, ['control-plane/bin/vmkit.js', 'repos', 'list', '--url', cp.url, '--key', cp.adminKey], {
      cwd: ROOT,
      timeout: 20_000,
    });
    t.match(stdout, /badri\/my-app/);
  });
});

import t from 'tap';
import { generateEd25519KeyPair } from '../../control-plane/src/shell/ssh-key.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

const cp = await startTestControlPlane();
t.teardown(() => cp.close());

const newKey = (comment = 'op@laptop') => generateEd25519KeyPair(comment).public;
type SshKeyBody = { id: string; key_id: string; fingerprint: string; type: string; comment: string | null; public_key: string };
type ErrorBody = { error: string; message: string };

t.test('an operator registers, lists and removes an SSH key on their own API key', async (t) => {
  const me = await cp.createKey(['shell']);
  const line = newKey();
  const added = await cp.api<SshKeyBody>('POST', `/api/keys/${me.id}/ssh-keys`, { key: me.secret, body: { public_key: line } });
  t.equal(added.status, 201);
  t.match(added.body, { key_id: me.id, type: 'ssh-ed25519', comment: 'op@laptop', public_key: line.trim() });
  t.match(added.body.fingerprint, /^SHA256:/);
  const list = await cp.api<{ items: SshKeyBody[] }>('GET', `/api/keys/${me.id}/ssh-keys`, { key: me.secret });
  t.same(list.body.items.map((k) => k.id), [added.body.id]);
  const del = await cp.api<SshKeyBody>('DELETE', `/api/keys/${me.id}/ssh-keys/${added.body.id}`, { key: me.secret });
  t.equal(del.status, 200);
  const after = await cp.api<{ items: SshKeyBody[] }>('GET', `/api/keys/${me.id}/ssh-keys`, { key: me.secret });
  t.same(after.body.items, []);
});

t.test('an invalid key line is refused with ssh_key_invalid and the reason, nothing stored', async (t) => {
  const me = await cp.createKey(['shell']);
  const res = await cp.api<ErrorBody>('POST', `/api/keys/${me.id}/ssh-keys`, { key: me.secret, body: { public_key: 'ssh-dss AAAA' } });
  t.equal(res.status, 400);
  t.equal(res.body.error, 'ssh_key_invalid');
  t.match(res.body.message, /ssh-dss.*not accepted/);
  const list = await cp.api<{ items: unknown[] }>('GET', `/api/keys/${me.id}/ssh-keys`, { key: me.secret });
  t.same(list.body.items, []);
});

t.test('one SSH key belongs to one API key: registering it again is ssh_key_exists', async (t) => {
  const a = await cp.createKey(['shell']);
  const b = await cp.createKey(['shell']);
  const line = newKey();
  t.equal((await cp.api('POST', `/api/keys/${a.id}/ssh-keys`, { key: a.secret, body: { public_key: line } })).status, 201);
  const again = await cp.api<ErrorBody>('POST', `/api/keys/${b.id}/ssh-keys`, { key: b.secret, body: { public_key: line } });
  t.equal(again.status, 409);
  t.equal(again.body.error, 'ssh_key_exists');
});

t.test("a key without admin cannot touch another key's SSH keys", async (t) => {
  const a = await cp.createKey(['shell']);
  const b = await cp.createKey(['shell']);
  const res = await cp.api<ErrorBody>('POST', `/api/keys/${b.id}/ssh-keys`, { key: a.secret, body: { public_key: newKey() } });
  t.equal(res.status, 403);
  t.equal(res.body.error, 'forbidden');
  const list = await cp.api<ErrorBody>('GET', `/api/keys/${b.id}/ssh-keys`, { key: a.secret });
  t.equal(list.status, 403);
});

t.test('the admin key registers an SSH key on any key of its workspace', async (t) => {
  const op = await cp.createKey(['shell']);
  const res = await cp.api<SshKeyBody>('POST', `/api/keys/${op.id}/ssh-keys`, { body: { public_key: newKey() } });
  t.equal(res.status, 201);
  t.equal(res.body.key_id, op.id);
});

t.test("another workspace's key is key_not_found, even for an admin", async (t) => {
  const other = await cp.createWorkspace('ssh-keys-other');
  const res = await cp.api<ErrorBody>('GET', `/api/keys/${(await cp.createKey(['shell'])).id}/ssh-keys`, { key: other.adminKey });
  t.equal(res.status, 404);
  t.equal(res.body.error, 'key_not_found');
});

t.test('a key without the shell scope may not register SSH keys', async (t) => {
  const reader = await cp.createKey(['instances:read']);
  const res = await cp.api<ErrorBody>('POST', `/api/keys/${reader.id}/ssh-keys`, { key: reader.secret, body: { public_key: newKey() } });
  t.equal(res.status, 403);
  t.equal(res.body.error, 'forbidden');
});

t.test('removing an unknown SSH key is ssh_key_not_found', async (t) => {
  const me = await cp.createKey(['shell']);
  const res = await cp.api<ErrorBody>('DELETE', `/api/keys/${me.id}/ssh-keys/sshk_nope`, { key: me.secret });
  t.equal(res.status, 404);
  t.equal(res.body.error, 'ssh_key_not_found');
});

t.test('registering an SSH key is on the audit trail', async (t) => {
  const me = await cp.createKey(['shell']);
  await cp.api('POST', `/api/keys/${me.id}/ssh-keys`, { key: me.secret, body: { public_key: newKey() } });
  const audit = await cp.api<{ items: { action: string; key_id: string; status: number }[] }>('GET', `/api/audit?action=ssh_keys.add&key_id=${me.id}`);
  t.equal(audit.body.items.length, 1);
  t.equal(audit.body.items[0]?.status, 201);
});

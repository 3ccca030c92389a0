import t from 'tap';
import { createAgent, updateAgent } from '../../control-plane/src/db/agents.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { openShell } from '../helpers/shell-client.ts';
import type { OpenResult } from '../helpers/shell-client.ts';

// Refusals happen before any agent is involved: no VM needed.
const cp = await startTestControlPlane();
t.teardown(() => cp.close());

const inst = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'door-vm' } });
const instanceId = inst.body.id;

function refused(r: OpenResult): { status: number; body: { error: string; message: string } } {
  if (!('refused' in r)) {
    r.session.ws.terminate();
    throw new Error('the shell opened');
  }
  return r.refused;
}

type AuditItem = { action: string; status: number; error_key: string | null; channel: string; key_id: string; target_ids: Record<string, string> | null };
async function lastShellAudit(keyId: string): Promise<AuditItem | undefined> {
  const res = await cp.api<{ items: AuditItem[] }>('GET', `/api/audit?action=shell.refused&key_id=${keyId}`);
  return res.body.items[0];
}

t.test('without an API key the shell is refused with 401 unauthorized', async (t) => {
  const r = refused(await openShell(cp.url, instanceId, { key: null }));
  t.equal(r.status, 401);
  t.equal(r.body.error, 'unauthorized');
});

t.test('a key without the shell scope is refused (403 forbidden) and the refusal is audited', async (t) => {
  const reader = await cp.createKey(['instances:read']);
  const r = refused(await openShell(cp.url, instanceId, { key: reader.secret }));
  t.equal(r.status, 403);
  t.same(r.body, { error: 'forbidden', message: `The API key ${reader.id} lacks the scope shell.` });
  t.match(await lastShellAudit(reader.id), { action: 'shell.refused', status: 403, error_key: 'forbidden', channel: 'shell', target_ids: { via: 'websocket' } });
});

t.test('a revoked key is refused with 401 and audited', async (t) => {
  const op = await cp.createKey(['shell']);
  await cp.api('DELETE', `/api/keys/${op.id}`);
  const r = refused(await openShell(cp.url, instanceId, { key: op.secret }));
  t.equal(r.status, 401);
  t.match(r.body.message, /revoked/);
  t.match(await lastShellAudit(op.id), { status: 401, error_key: 'unauthorized' });
});

t.test('an unknown instance is instance_not_found, audited', async (t) => {
  const op = await cp.createKey(['shell']);
  const r = refused(await openShell(cp.url, 'no-such-vm', { key: op.secret }));
  t.equal(r.status, 404);
  t.equal(r.body.error, 'instance_not_found');
  t.match(await lastShellAudit(op.id), { status: 404, error_key: 'instance_not_found', target_ids: { instance: 'no-such-vm' } });
});

t.test("another workspace's instance is instance_not_found, by id as by name", async (t) => {
  const other = await cp.createWorkspace('door-other');
  for (const ref of [instanceId, 'door-vm']) {
    const r = refused(await openShell(cp.url, ref, { key: other.adminKey }));
    t.equal(r.body.error, 'instance_not_found', ref);
  }
});

t.test('an instance whose agent is not connected is agent_not_connected', async (t) => {
  const op = await cp.createKey(['shell']);
  const r = refused(await openShell(cp.url, instanceId, { key: op.secret }));
  t.equal(r.status, 409);
  t.equal(r.body.error, 'agent_not_connected');
  // An agent row that says connected while the hub holds no socket for it: still refused.
  const agent = await createAgent(cp.ctx.db, { workspaceId: cp.workspaceId, instanceId, publicKey: 'x'.repeat(43) });
  await updateAgent(cp.ctx.db, agent.id, { state: 'connected' });
  const again = refused(await openShell(cp.url, 'door-vm', { key: op.secret }));
  t.equal(again.body.error, 'agent_not_connected');
});

t.test('a name names one instance: a second cannot take it, and the door resolves the one', async (t) => {
  t.equal((await cp.api('POST', '/api/instances', { body: { name: 'twin' } })).status, 201);
  const second = await cp.api<{ error: string }>('POST', '/api/instances', { body: { name: 'twin' } });
  t.equal(second.status, 409);
  t.equal(second.body.error, 'instance_name_taken');
  const r = refused(await openShell(cp.url, 'twin', { key: cp.adminKey }));
  t.equal(r.body.error, 'agent_not_connected', 'found by its name; it has no agent yet');
});

t.test('the door finds the live instance of a name, in any case, past a destroyed one of that name', async (t) => {
  const op = await cp.createKey(['shell']);
  const old = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'Reborn' } });
  t.equal((await cp.api('DELETE', `/api/instances/${old.body.id}`)).status, 200);
  const gone = refused(await openShell(cp.url, 'Reborn', { key: op.secret }));
  t.equal(gone.body.error, 'instance_not_found', 'a destroyed instance is not found by its name');
  const live = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'reborn' } });
  t.equal(live.status, 201, 'the name is free again');
  for (const name of ['reborn', 'REBORN', 'Reborn']) {
    const r = refused(await openShell(cp.url, name, { key: op.secret }));
    t.equal(r.body.error, 'agent_not_connected', `${name}: found, and it has no agent yet`);
    t.match(await lastShellAudit(op.id), { target_ids: { instance_id: live.body.id } }, `${name}: the live one`);
  }
});

for (const [what, query, field] of [
  ['zero columns', { cols: '0' }, 'cols'],
  ['a TERM with a space', { term: 'xterm 256' }, 'term'],
  ['a user name with a slash', { user: '../root' }, 'user'],
  ['an unknown query field', { colour: 'red' }, 'colour'],
] as const) {
  t.test(`${what} is invalid_request, nothing opened`, async (t) => {
    const op = await cp.createKey(['shell']);
    const r = refused(await openShell(cp.url, instanceId, { key: op.secret, query }));
    t.equal(r.status, 400);
    t.equal(r.body.error, 'invalid_request');
    t.match(r.body.message, field);
  });
}

t.test('no shell session row is left by refusals', async (t) => {
  const list = await cp.api<{ items: unknown[] }>('GET', '/api/shell-sessions');
  t.equal(list.status, 200);
  t.same(list.body.items, []);
});

import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSigningKeyPair, privateKeyToPem } from '@vmkit/protocol';
import { FileKeyRing } from '../../control-plane/src/hub/signing-keys.ts';
import { AgentProcess, TEST_RECONNECT, runCli } from '../agent/agent-process.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { getAgentById } from '../../control-plane/src/db/agents.ts';

interface KeyList {
  items: { key_id: string; state: string }[];
}

async function waitConnected(cp: TestControlPlane, instanceId: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const r = await cp.api<{ agent: { state: string } | null }>('GET', `/api/instances/${instanceId}`).catch(() => undefined);
    if (r?.body.agent?.state === 'connected') return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('agent did not connect');
}

t.test('signing keys live in the data dir, 0600, and survive a reopen; an existing signing-key.pem is adopted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-ring-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const legacy = generateSigningKeyPair();
  writeFileSync(join(dir, 'signing-key.pem'), privateKeyToPem(legacy.privateKey), { mode: 0o600 });
  const ring = FileKeyRing.open(dir, join(dir, 'signing-key.pem'));
  t.equal(ring.active().keyId, legacy.keyId, 'the existing key becomes the active one');
  const next = ring.addNext();
  t.equal(statSync(ring.dir).mode & 0o777, 0o700);
  t.equal(statSync(join(ring.dir, `${next.keyId.replace('ed25519:', '')}.pem`)).mode & 0o777, 0o600);
  t.equal(statSync(join(ring.dir, 'keys.json')).mode & 0o777, 0o600);
  t.same(ring.published().map((k) => k.key_id), [legacy.keyId, next.keyId], 'active first, then next');
  t.throws(() => ring.addNext(), /already exists/);
  ring.promoteNext();
  const reopened = FileKeyRing.open(dir, join(dir, 'signing-key.pem'));
  t.equal(reopened.active().keyId, next.keyId);
  t.same(reopened.retiredIds(), [legacy.keyId]);
  t.ok(reopened.get(legacy.keyId), 'a retired key is still held (for catch-up of offline agents)');
  t.same(reopened.published().map((k) => k.key_id), [next.keyId]);
  t.throws(() => reopened.promoteNext(), /no next key/);
  t.notOk(readFileSync(join(ring.dir, 'keys.json'), 'utf8').includes('PRIVATE'), 'the list holds no private key');
});

t.test('key rotation with a real agent: it pins the new key, then accepts commands signed only by it', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500 } } });
  t.teardown(() => cp.close());
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'rot' } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-rot-'));
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  const enrolled = await runCli(['enroll', '--url', cp.url, '--token', tok.token, '--config', configFile, '--state-dir', stateDir]);
  t.equal(enrolled.code, 0, enrolled.stderr);
  const cfg = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  writeFileSync(configFile, JSON.stringify({ ...cfg, reconnect: TEST_RECONNECT }), { mode: 0o600 });
  const agentId = String(cfg.agent_id);
  const agent = new AgentProcess(['run', '--config', configFile, '--state-dir', stateDir]);
  t.teardown(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitConnected(cp, inst.id);

  const before = (await cp.api<KeyList>('GET', '/api/admin/signing-keys')).body.items;
  t.equal(before.length, 1);
  const oldId = before[0]?.key_id ?? '';

  const added = await cp.api<{ key_id: string; agents_updated: number; agents_failed: number }>('POST', '/api/admin/signing-keys');
  t.equal(added.status, 201);
  t.equal(added.body.agents_updated, 1, 'the connected agent confirmed the new key');
  t.equal(added.body.agents_failed, 0);
  const again = await cp.api<{ error: string }>('POST', '/api/admin/signing-keys');
  t.equal(again.status, 409, 'one next key at a time');

  const promoted = await cp.api<{ active: string; retired: string; agents_updated: number }>('POST', '/api/admin/signing-keys/promote');
  t.equal(promoted.status, 200);
  t.equal(promoted.body.active, added.body.key_id);
  t.equal(promoted.body.retired, oldId);
  t.equal(promoted.body.agents_updated, 1);
  const bus = cp.ctx.commandBus;
  const pong = await bus?.send(agentId, 'ping', {}, { timeoutMs: 10_000 });
  t.equal(pong?.status, 'succeeded');
  const stored = await bus?.get(pong?.commandId ?? '');
  t.equal(stored?.envelope.key_id, added.body.key_id, 'signed by the new key');
  const row = await getAgentById(cp.ctx.db, agentId);
  t.same(row?.pinnedKeyIds, [added.body.key_id]);
  const states = (await cp.api<KeyList>('GET', '/api/admin/signing-keys')).body.items.map((k) => `${k.key_id === oldId ? 'old' : 'new'}:${k.state}`);
  t.same(states.sort(), ['new:active', 'old:retired']);
});

t.test('an agent offline during the rotation catches up when it connects', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500 } } });
  t.teardown(() => cp.close());
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'late' } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-rot-'));
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  t.equal((await runCli(['enroll', '--url', cp.url, '--token', tok.token, '--config', configFile, '--state-dir', stateDir])).code, 0);
  const cfg = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  writeFileSync(configFile, JSON.stringify({ ...cfg, reconnect: TEST_RECONNECT }), { mode: 0o600 });
  t.equal((await cp.api('POST', '/api/admin/signing-keys')).status, 201);
  const promoted = await cp.api<{ active: string; agents_updated: number }>('POST', '/api/admin/signing-keys/promote');
  t.equal(promoted.body.agents_updated, 0, 'nobody connected');
  const agent = new AgentProcess(['run', '--config', configFile, '--state-dir', stateDir]);
  t.teardown(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitConnected(cp, inst.id);
  // The catch-up keys.rotate is signed by the retired key the agent still pins; then new-key commands pass.
  let pong;
  for (let i = 0; i < 50 && !pong; i++) {
    pong = await cp.ctx.commandBus?.send(String(cfg.agent_id), 'ping', {}, { timeoutMs: 5_000 }).catch(() => undefined);
    if (!pong) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(pong?.status, 'succeeded', 'a command signed by the new key is accepted');
});

t.test('only an admin key of the operator workspace may manage signing keys', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const other = await cp.createWorkspace('tenant');
  const res = await cp.api<{ error: string }>('POST', '/api/admin/signing-keys', { key: other.adminKey });
  t.equal(res.status, 403);
  t.equal(res.body.error, 'forbidden');
  t.equal((await cp.api('GET', '/api/admin/signing-keys', { key: other.adminKey })).status, 403);
  const narrow = await cp.createKey(['instances:write']);
  t.equal((await cp.api('POST', '/api/admin/signing-keys', { key: narrow.secret })).status, 403);
  t.equal((await cp.api<KeyList>('GET', '/api/admin/signing-keys')).body.items.length, 1, 'nothing was added');
});

t.test('an agent enrolled mid-rotation with --cp-key (active key only) learns the next key before it is promoted', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500 } } });
  t.teardown(() => cp.close());
  t.equal((await cp.api('POST', '/api/admin/signing-keys')).status, 201, 'a next key exists before enrollment');
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'mid' } })).body;
  const tok = (await cp.api<{ token: string; signing_keys: { key_id: string; public_key: string }[] }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  t.equal(tok.signing_keys.length, 2);
  const active = tok.signing_keys[0];
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-rot-'));
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  const r = await runCli(['enroll', '--url', cp.url, '--token', tok.token, '--cp-key', `${active?.key_id}:${active?.public_key}`, '--config', configFile, '--state-dir', stateDir]);
  t.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  writeFileSync(configFile, JSON.stringify({ ...cfg, reconnect: TEST_RECONNECT }), { mode: 0o600 });
  const agent = new AgentProcess(['run', '--config', configFile, '--state-dir', stateDir]);
  t.teardown(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitConnected(cp, inst.id);
  const agentId = String(cfg.agent_id);
  // The connect-time catch-up (keys.rotate add, signed by the active key) runs in the background.
  for (let i = 0; i < 100; i++) {
    const row = await getAgentById(cp.ctx.db, agentId);
    if ((row?.pinnedKeyIds ?? []).length === 2) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  const promoted = await cp.api<{ agents_updated: number }>('POST', '/api/admin/signing-keys/promote');
  t.equal(promoted.status, 200);
  const pong = await cp.ctx.commandBus?.send(agentId, 'ping', {}, { timeoutMs: 10_000 });
  t.equal(pong?.status, 'succeeded', 'a command signed by the promoted key is accepted');
});

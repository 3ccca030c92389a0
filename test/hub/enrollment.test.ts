import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodePublicKey } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { FakeAgent } from './fake-agent.ts';
import { getAgentByInstance } from '../../control-plane/src/db/agents.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';

interface TokenAnswer {
  token: string;
  expires_at: string;
  instance_id: string;
  signing_keys: { key_id: string; public_key: string }[];
  connect_url: string;
  install_command: string;
}
interface EnrollAnswer {
  agent_id: string;
  instance_id: string;
  signing_keys: { key_id: string; public_key: string }[];
  connect_url: string;
}
interface InstanceAnswer {
  id: string;
  status: string;
  provider: string;
  agent: { id: string; state: string; connected_at: string | null; last_seen: string | null; hostname: string | null; agent_version: string | null } | null;
}

let instances = 0;
async function newInstance(cp: TestControlPlane, key?: string): Promise<InstanceAnswer> {
  // Names are unique per workspace.
  const res = await cp.api<InstanceAnswer>('POST', '/api/instances', { body: { name: `web-${++instances}` }, ...(key && { key }) });
  if (res.status !== 201) throw new Error(`POST /api/instances: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

async function newToken(cp: TestControlPlane, instanceId: string, key?: string) {
  return cp.api<TokenAnswer>('POST', `/api/instances/${instanceId}/enrollment-token`, key ? { key } : {});
}

function agentKeys() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey: encodePublicKey(publicKey) };
}

const enrollBody = (token: string, publicKey: string) => ({ token, public_key: publicKey, hostname: 'vm-1', os: 'Debian 12', agent_version: '0.1.0' });

t.test('an instance is registered, enrolled with a one-time token, connects and shows as connected', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await newInstance(cp);
  t.equal(inst.status, 'awaiting_agent');
  t.equal(inst.provider, 'manual');
  t.equal(inst.agent, null);

  const tok = await newToken(cp, inst.id);
  t.equal(tok.status, 201);
  t.match(tok.body.token, /^vmkenr_[A-Za-z0-9_-]{43}$/);
  t.equal(tok.body.instance_id, inst.id);
  t.equal(tok.body.connect_url, `${cp.url.replace('http:', 'ws:')}/agent/v1/connect`);
  t.ok(tok.body.signing_keys.length >= 1);
  t.match(tok.body.install_command, /install\.sh/);
  t.match(tok.body.install_command, `VMKIT_CP_KEY=${tok.body.signing_keys[0]?.key_id}:${tok.body.signing_keys[0]?.public_key}`, 'pins the active key');
  const expiresIn = Date.parse(tok.body.expires_at) - Date.now();
  t.ok(expiresIn > 59 * 60_000 && expiresIn <= 60 * 60_000, 'default TTL is one hour');

  const keys = agentKeys();
  const enrolled = await cp.api<EnrollAnswer>('POST', '/api/agents/enroll', { key: null, body: enrollBody(tok.body.token, keys.publicKey) });
  t.equal(enrolled.status, 201);
  t.equal(enrolled.body.instance_id, inst.id);
  t.match(enrolled.body.agent_id, /^agt_/);
  t.same(enrolled.body.signing_keys, tok.body.signing_keys);
  t.equal(enrolled.body.connect_url, tok.body.connect_url);

  const { agent, welcome } = await FakeAgent.connect(enrolled.body.connect_url, enrolled.body.agent_id, keys.privateKey, { hostname: 'vm-1' });
  t.ok(welcome);
  t.same(welcome?.signing_keys, tok.body.signing_keys);
  const got = await cp.api<InstanceAnswer>('GET', `/api/instances/${inst.id}`);
  t.equal(got.body.agent?.state, 'connected');
  t.ok(got.body.agent?.connected_at);
  t.equal(got.body.agent?.hostname, 'vm-1');
  const list = await cp.api<{ items: InstanceAnswer[] }>('GET', '/api/instances');
  t.equal(list.body.items.find((i) => i.id === inst.id)?.agent?.state, 'connected');

  // Through the CommandBus, on the real database.
  const bus = cp.ctx.commandBus;
  t.ok(bus, 'ctx.commandBus is set');
  const progress: string[] = [];
  const pending = bus?.send(enrolled.body.agent_id, 'ping', {}, { onProgress: (p) => progress.push(p.step) });
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  agent.send({ protocol: 1, type: 'ack', command_id: cmd.envelope.id });
  agent.send({ protocol: 1, type: 'progress', command_id: cmd.envelope.id, seq: 0, step: 'pong', state: 'done' });
  agent.send({ protocol: 1, type: 'result', command_id: cmd.envelope.id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  const outcome = await pending;
  t.same(outcome?.output, { pong: true });
  t.same(progress, ['pong']);
  await agent.next('result_ack');
  const stored = await bus?.get(String(cmd.envelope.id));
  t.equal(stored?.state, 'succeeded');
  t.equal(stored?.signature, cmd.signature, 'the signature is persisted');

  await agent.close();
  let state = '';
  for (const deadline = Date.now() + 60_000; state !== 'disconnected' && Date.now() < deadline; ) {
    state = (await cp.api<InstanceAnswer>('GET', `/api/instances/${inst.id}`)).body.agent?.state ?? '';
    if (state !== 'disconnected') await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(state, 'disconnected');
});

t.test('a reused, expired or unknown token is refused with 401 and registers nothing', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { enrollmentTokenTtlMs: 300 } } });
  t.teardown(() => cp.close());
  const inst = await newInstance(cp);
  const tok = await newToken(cp, inst.id);
  const first = agentKeys();
  t.equal((await cp.api('POST', '/api/agents/enroll', { key: null, body: enrollBody(tok.body.token, first.publicKey) })).status, 201);
  const agentBefore = (await cp.api<InstanceAnswer>('GET', `/api/instances/${inst.id}`)).body.agent;

  const reuse = await cp.api<{ error: string; message: string }>('POST', '/api/agents/enroll', {
    key: null,
    body: enrollBody(tok.body.token, agentKeys().publicKey),
  });
  t.equal(reuse.status, 401);
  t.equal(reuse.body.error, 'enrollment_token_invalid');
  t.match(reuse.body.message, /already used/);
  const agentAfter = (await cp.api<InstanceAnswer>('GET', `/api/instances/${inst.id}`)).body.agent;
  t.same(agentAfter, agentBefore, 'the agent is unchanged');
  const row = await getAgentByInstance(cp.ctx.db, inst.id);
  t.equal(row?.publicKey, first.publicKey, 'the first key stays registered');

  const inst2 = await newInstance(cp);
  const tok2 = await newToken(cp, inst2.id);
  await new Promise((r) => setTimeout(r, 400));
  const expired = await cp.api<{ error: string }>('POST', '/api/agents/enroll', { key: null, body: enrollBody(tok2.body.token, agentKeys().publicKey) });
  t.equal(expired.status, 401);
  t.equal(expired.body.error, 'enrollment_token_invalid');
  t.equal((await cp.api<InstanceAnswer>('GET', `/api/instances/${inst2.id}`)).body.agent, null, 'nothing registered');

  const unknown = await cp.api<{ error: string }>('POST', '/api/agents/enroll', {
    key: null,
    body: enrollBody(`vmkenr_${'A'.repeat(43)}`, agentKeys().publicKey),
  });
  t.equal(unknown.status, 401);
  t.equal(unknown.body.error, 'enrollment_token_invalid');
  const [count] = await rawRows<{ n: number }>(cp.ctx.db, sql`select count(*) as n from agents`);
  t.equal(count?.n, 1, 'only the first enrollment registered an agent');
});

t.test('two concurrent enrollments with one token: exactly one wins', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await newInstance(cp);
  const tok = await newToken(cp, inst.id);
  const answers = await Promise.all(
    [1, 2, 3, 4].map(() => cp.api('POST', '/api/agents/enroll', { key: null, body: enrollBody(tok.body.token, agentKeys().publicKey) })),
  );
  t.same(answers.map((a) => a.status).sort(), [201, 401, 401, 401]);
});

t.test('re-enrolling an instance replaces its agent key and drops the old connection', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await newInstance(cp);
  const old = agentKeys();
  const e1 = await cp.api<EnrollAnswer>('POST', '/api/agents/enroll', { key: null, body: enrollBody((await newToken(cp, inst.id)).body.token, old.publicKey) });
  const c1 = await FakeAgent.connect(e1.body.connect_url, e1.body.agent_id, old.privateKey);
  t.ok(c1.welcome);
  const fresh = agentKeys();
  const e2 = await cp.api<EnrollAnswer>('POST', '/api/agents/enroll', { key: null, body: enrollBody((await newToken(cp, inst.id)).body.token, fresh.publicKey) });
  t.equal(e2.status, 201);
  t.equal(e2.body.agent_id, e1.body.agent_id, 'the instance keeps its agent id');
  t.equal((await c1.agent.closed).code, 4001, 'the old connection is closed as unauthorized');
  const again = await FakeAgent.connect(e1.body.connect_url, e1.body.agent_id, old.privateKey);
  t.equal(again.error?.key, 'unauthorized', 'the old key no longer authenticates');
  const c2 = await FakeAgent.connect(e2.body.connect_url, e2.body.agent_id, fresh.privateKey);
  t.ok(c2.welcome, 'the new key does');
  await c2.agent.close();
});

t.test('the new routes are isolated per workspace and need instances:write', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const other = await cp.createWorkspace('other');
  const inst = await newInstance(cp);
  const cross = await newToken(cp, inst.id, other.adminKey);
  t.equal(cross.status, 404);
  t.equal((cross.body as unknown as { error: string }).error, 'instance_not_found');
  const readOnly = await cp.createKey(['instances:read']);
  t.equal((await cp.api('POST', '/api/instances', { key: readOnly.secret, body: { name: 'x' } })).status, 403);
  t.equal((await newToken(cp, inst.id, readOnly.secret)).status, 403);
  t.equal((await cp.api('POST', '/api/instances', { key: null, body: { name: 'x' } })).status, 401);
  const foreignEnv = await cp.api<{ error: string }>('POST', '/api/instances', { body: { name: 'x', environment_id: 'env_nope' } });
  t.equal(foreignEnv.status, 404);
  t.equal(foreignEnv.body.error, 'environment_not_found');
  const list = await cp.api<{ items: InstanceAnswer[] }>('GET', '/api/instances', { key: other.adminKey });
  t.equal(list.body.items.length, 0, 'the other workspace sees none of our instances');
});

t.test('enroll rejects a malformed public key with 400 and consumes nothing', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await newInstance(cp);
  const tok = await newToken(cp, inst.id);
  const bad = await cp.api<{ error: string }>('POST', '/api/agents/enroll', { key: null, body: enrollBody(tok.body.token, 'not-a-key') });
  t.equal(bad.status, 400);
  t.equal(bad.body.error, 'invalid_request');
  const good = await cp.api('POST', '/api/agents/enroll', { key: null, body: enrollBody(tok.body.token, agentKeys().publicKey) });
  t.equal(good.status, 201, 'the token still works');
});

t.test('the install script is served; the source bundle of old installers is gone', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const script = await fetch(`${cp.url}/install.sh`);
  t.equal(script.status, 200);
  t.equal(script.headers.get('content-type'), 'text/x-shellscript; charset=utf-8');
  t.equal(await script.text(), readFileSync(join(import.meta.dirname, '..', '..', 'scripts', 'install-agent.sh'), 'utf8'));
  // Agents are installed as one signed executable now (GET /agent/releases/...).
  t.equal((await fetch(`${cp.url}/agent/bundle.tar.gz`)).status, 404);
});

t.test('enrollment is rate limited per address (the token is the only credential)', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { anonymousMax: 3 } } });
  t.teardown(() => cp.close());
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) {
    statuses.push((await cp.api('POST', '/api/agents/enroll', { key: null, body: enrollBody(`vmkenr_${'B'.repeat(43)}`, agentKeys().publicKey) })).status);
  }
  t.same(statuses, [401, 401, 401, 429]);
});

import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { rmSync } from 'node:fs';
import { encodePublicKey } from '@vmkit/protocol';
import { closeDatabase, isDatabaseClosed, openDatabase } from '../../control-plane/src/db/index.ts';
import { getAgentById, updateAgent } from '../../control-plane/src/db/agents.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { FakeAgent } from './fake-agent.ts';

interface AgentView {
  state: string;
  connected_at: string | null;
  last_seen: string | null;
}

async function enrolledFake(cp: TestControlPlane) {
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('state') } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const e = await cp.api<{ agent_id: string; connect_url: string }>('POST', '/api/agents/enroll', {
    key: null,
    body: { token: tok.token, public_key: encodePublicKey(publicKey), hostname: 'h', os: 'o', agent_version: 'v' },
  });
  return { instanceId: inst.id, agentId: e.body.agent_id, key: privateKey, connectUrl: () => `${cp.url.replace('http:', 'ws:')}/agent/v1/connect` };
}

const agentOf = async (cp: TestControlPlane, id: string) => (await cp.api<{ agent: AgentView | null }>('GET', `/api/instances/${id}`)).body.agent;

t.test('last_seen advances on the real database while the agent answers pings', async (t) => {
  // deadAfterMs far above any stall of this process, which runs both the hub and the agent.
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 100, deadAfterMs: 30_000, lastSeenFlushMs: 200 } } });
  t.teardown(() => cp.close());
  const a = await enrolledFake(cp);
  const { agent } = await FakeAgent.connect(a.connectUrl(), a.agentId, a.key);
  const first = await agentOf(cp, a.instanceId);
  t.equal(first?.state, 'connected');
  const moved = (v: AgentView | null | undefined): boolean => Date.parse(v?.last_seen ?? '') > Date.parse(first?.last_seen ?? '');
  let later = await agentOf(cp, a.instanceId);
  for (const deadline = Date.now() + 30_000; !moved(later) && Date.now() < deadline; later = await agentOf(cp, a.instanceId)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(later?.state, 'connected');
  t.ok(Date.parse(later?.last_seen ?? '') > Date.parse(first?.last_seen ?? ''), `last_seen moved: ${first?.last_seen} -> ${later?.last_seen}`);
  t.equal(later?.connected_at, first?.connected_at, 'connected_at is the handshake time');
  await agent.close();
});

t.test('agents left connected by a crashed control plane are disconnected at start-up', async (t) => {
  const cp = await startTestControlPlane({ keepDataDir: true });
  const a = await enrolledFake(cp);
  await cp.close();
  t.teardown(() => rmSync(cp.dataDir, { recursive: true, force: true }));
  // What a crash leaves behind: the row still says connected.
  const db = await openDatabase(cp.database);
  await updateAgent(db, a.agentId, { state: 'connected' });
  await closeDatabase(db);
  const cp2 = await startTestControlPlane({ dataDir: cp.dataDir });
  t.teardown(() => cp2.close());
  t.equal((await agentOf(cp2, a.instanceId))?.state, 'disconnected');
});

t.test('a control-plane shutdown closes agent sockets with 1001 and marks them disconnected', async (t) => {
  const cp = await startTestControlPlane({ keepDataDir: true });
  const a = await enrolledFake(cp);
  const { agent } = await FakeAgent.connect(a.connectUrl(), a.agentId, a.key);
  const db = cp.ctx.db;
  const closing = cp.running.close();
  t.equal((await agent.closed).code, 1001);
  await closing;
  t.teardown(() => rmSync(cp.dataDir, { recursive: true, force: true }));
  t.ok(isDatabaseClosed(db), 'the database was closed after the hub');
  const again = await openDatabase(cp.database);
  const row = await getAgentById(again, a.agentId);
  await closeDatabase(again);
  t.equal(row?.state, 'disconnected');
});

t.test('over the handshake bound the real control plane answers overloaded with retry_after_ms', async (t) => {
  // One token, refilled every 100 s: the second handshake cannot find a fresh one on a slow machine.
  const cp = await startTestControlPlane({ config: { agentHub: { handshakesPerSecond: 0.01 } } });
  t.teardown(() => cp.close());
  const a = await enrolledFake(cp);
  const b = await enrolledFake(cp);
  const first = await FakeAgent.connect(a.connectUrl(), a.agentId, a.key);
  t.ok(first.welcome);
  const second = await FakeAgent.connect(b.connectUrl(), b.agentId, b.key);
  const answer = second.error;
  t.equal(answer?.key, 'overloaded', 'a second verified agent in the same second is refused');
  t.ok((answer?.retry_after_ms ?? 0) > 0);
  t.equal((await second.agent.closed).code, 1013);
  await first.agent.close();
});

/**
 * A key rotation made through one control plane reaches agents another one holds: two
 * control planes on one PostgreSQL database (one signing key ring, one secret-box key),
 * a real agent connected to A, the rotation asked of B. B sends `keys.rotate` to the
 * agent through the bus (routed to A over NOTIFY), so the agent pins the next key before
 * it signs anything, and commands signed with the promoted key are accepted through either.
 */
import t from 'tap';
import { commandBusOf } from '../../control-plane/src/hub/plugin.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { startTestCluster } from '../helpers/cluster.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';

interface RotationAnswer {
  key_id?: string;
  active?: string;
  agents_updated: number;
  agents_failed: number;
}

if (fileNeeds(postgresMissing())) {
  t.test('a rotation through B reaches the agent A holds', async (t) => {
    const agentHub = { nodeHeartbeatMs: 300, nodeStaleAfterMs: 10_000 };
    const { nodes } = await startTestCluster(t, { config: { agentHub }, nodeIds: ['rot-a', 'rot-b'] });
    const [a, b] = nodes as [TestControlPlane, TestControlPlane];

    const agent = await enrollRealAgent(t, a);
    agent.patchConfig({ shell: { program: plainBashShell() } });
    agent.start();
    await waitAgentState(a, agent.instanceId, 'connected');
    t.ok(a.ctx.hub?.isConnected(agent.agentId), 'A holds the agent');
    t.notOk(b.ctx.hub?.isConnected(agent.agentId), 'B does not');

    const added = await b.api<RotationAnswer>('POST', '/api/admin/signing-keys');
    t.equal(added.status, 201);
    t.match(added.body, { agents_updated: 1, agents_failed: 0 }, "B's rotation reached the agent on A");
    const pinned = (agent.config().signing_keys as { key_id: string }[]).map((k) => k.key_id);
    t.ok(pinned.includes(added.body.key_id ?? ''), 'the agent pinned the next key');

    const promoted = await b.api<RotationAnswer>('POST', '/api/admin/signing-keys/promote');
    t.equal(promoted.status, 200);
    t.match(promoted.body, { active: added.body.key_id, agents_updated: 1, agents_failed: 0 });
    await a.api('GET', '/api/admin/signing-keys'); // A re-reads the ring (its timer would within 5 s)
    t.equal(a.ctx.keyRing?.active().keyId, added.body.key_id, 'A signs with the promoted key');

    for (const [name, cp] of [
      ['A', a],
      ['B', b],
    ] as const) {
      const outcome = await commandBusOf(cp.ctx).send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 });
      t.equal(outcome.status, 'succeeded', `a command signed with the new key through ${name} is accepted`);
    }
  });
}

/**
 * A key rotation made through one control plane reaches agents another one holds: two
 * control planes on one PostgreSQL database (one signing key ring, one secret-box key),
 * a real agent connected to A, the rotation asked of B. B sends `keys.rotate` to the
 * agent through the bus (routed to A over NOTIFY), so the agent pins the next key before
 * it signs anything, and commands signed with the promoted key are accepted through either.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandBusOf } from '../../control-plane/src/hub/plugin.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';

interface RotationAnswer {
  key_id?: string;
  active?: string;
  agents_updated: number;
  agents_failed: number;
}

if (fileNeeds(postgresMissing())) {
  t.test('a rotation through B reaches the agent A holds', async (t) => {
    const shared = mkdtempSync(join(tmpdir(), 'vmk-cluster-keys-'));
    t.teardown(() => rmSync(shared, { recursive: true, force: true }));
    const secretKeyFile = join(shared, 'secret-box.key');
    writeFileSync(secretKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    const pgdb = await createTestDatabase();
    t.teardown(() => pgdb.drop());
    const agentHub = { nodeHeartbeatMs: 300, nodeStaleAfterMs: 10_000 };
    const a = await startTestControlPlane({ config: { databaseUrl: pgdb.url, secretKeyFile, nodeId: 'rot-a', agentHub } });
    t.teardown(() => a.close());
    const bDir = mkdtempSync(join(shared, 'b-'));
    copyFileSync(join(a.dataDir, 'admin.key'), join(bDir, 'admin.key'));
    const b = await startTestControlPlane({ dataDir: bDir, config: { databaseUrl: pgdb.url, secretKeyFile, nodeId: 'rot-b', agentHub } });
    t.teardown(() => b.close());

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

/**
 * Two control planes on one PostgreSQL database, both in this process: the REST
 * routes of B send to an agent held by A. A fake agent (test/hub/fake-agent.ts)
 * holds the connection, so the test decides what it answers and a real host is not
 * hardened.
 */
import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import { PROTOCOL_VERSION, encodePublicKey } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { getAgentById, insertEnrolledAgents } from '../../control-plane/src/db/agents.ts';
import { FakeAgent } from '../hub/fake-agent.ts';
import { uniqueInstanceName } from '../helpers/control-plane.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { startTestCluster } from '../helpers/cluster.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { postgresMissing } from '../helpers/postgres.ts';

if (fileNeeds(postgresMissing())) {
  t.test("B's harden route reaches an agent held by A; its result comes back to B", async (t) => {
    const { nodes } = await startTestCluster(t, { nodeIds: ['svc-a', 'svc-b'] });
    const [a, b] = nodes as [TestControlPlane, TestControlPlane];

    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const [agentId] = await insertEnrolledAgents(
      a.ctx.db,
      a.workspaceId,
      [{ instanceName: uniqueInstanceName('svc'), publicKey: encodePublicKey(publicKey) }],
      a.ctx.keyRing?.published().map((k) => k.key_id) ?? [],
    );
    if (!agentId) throw new Error('no agent inserted');
    const instanceId = (await getAgentById(a.ctx.db, agentId))?.instanceId ?? '';
    const { agent, welcome } = await FakeAgent.connect(`${a.url.replace('http', 'ws')}/agent/v1/connect`, agentId, privateKey);
    t.teardown(() => agent.close());
    t.ok(welcome, 'the fake agent is connected to A');
    t.equal((await getAgentById(b.ctx.db, agentId))?.nodeId, 'svc-a', 'the agents row names A');

    const started = await b.api<{ status: string; command_id: string }>('POST', `/api/instances/${instanceId}/harden`, { body: { wait_ms: 0 } });
    t.equal(started.status, 202, `B took the harden: ${JSON.stringify(started.body)}`);
    const cmd = (await agent.next('command', 60_000)) as MessageOf<'command'>;
    t.equal(cmd.envelope.id, started.body.command_id, 'the command B stored reached the agent on A');
    t.equal(cmd.envelope.type, 'harden');
    agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: cmd.envelope.id });
    agent.send({ protocol: PROTOCOL_VERSION, type: 'progress', command_id: cmd.envelope.id, seq: 0, step: 'kamal_user', state: 'started' });
    agent.send({
      protocol: PROTOCOL_VERSION,
      type: 'result',
      command_id: cmd.envelope.id,
      status: 'failed',
      error: { key: 'command_failed', message: 'the test says no' },
      finished_at: Date.now(),
    });
    const ack = (await agent.next('result_ack', 60_000)) as MessageOf<'result_ack'>;
    t.equal(ack.command_id, cmd.envelope.id, 'A stored the result and acknowledged it');
    // B's run ends from the stored result, which A told B about over NOTIFY (long-poll: no sleeps).
    const steps = new Set<string>();
    let state = 'running';
    while (state === 'running') {
      const r = await b.api<{ state: string; progress: { step: string }[] }>('GET', `/api/commands/${started.body.command_id}?wait_ms=10000`);
      t.equal(r.status, 200);
      state = r.body.state;
      for (const p of r.body.progress) steps.add(p.step);
    }
    t.ok(steps.has('kamal_user'), 'the progress frame came to B through A');
    t.equal(state, 'failed', "B's harden run ended with the agent's answer");
  });
}

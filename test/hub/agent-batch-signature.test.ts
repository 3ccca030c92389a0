import t from 'tap';
import type { Test } from 'tap';
import { PROTOCOL_VERSION, commandSigningBytes, prepareCommand, signCommandBatch } from '@vmkit/protocol';
import type { CommandBatch } from '@vmkit/protocol';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import type { AgentProcess } from '../agent/agent-process.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { busOf, enrollRealAgent, storedResult, waitAgentState } from '../helpers/real-agent.ts';

// Real control plane and vmkit-agent processes: generous on a shared, loaded machine.
t.setTimeout(300_000);

const executions = (proc: AgentProcess, id: string) => proc.lines(new RegExp(`^info executing command .*"command_id":"${id}"`)).length;



async function connectedAgent(t: Test) {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp, { name: 'batch-sig' });
  const proc = agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected');
  return { cp, agent, proc };
}

t.test('a real agent names batch-signature, and runs the commands of a batch', async (t) => {
  const { cp, agent, proc } = await connectedAgent(t);
  t.equal(cp.ctx.hub?.supports(agent.agentId, 'batch-signature'), true, 'the agent named the feature in its upgrade request');
  // Three commands in one turn: one batch signature over a tree of three.
  const outcomes = await Promise.all([0, 1, 2].map(() => busOf(cp).send(agent.agentId, 'ping', {}, { timeoutMs: 60_000 })));
  t.ok(outcomes.every((o) => o.status === 'succeeded'), 'all three succeeded');
  const stored = await Promise.all(outcomes.map((o) => busOf(cp).get(o.commandId)));
  t.same(stored.map((c) => c?.batch?.size), [3, 3, 3], 'they were sent as one batch of three');
  t.equal(new Set(stored.map((c) => c?.signature)).size, 1, 'under one signature');
  t.same(outcomes.map((o) => executions(proc, o.commandId)), [1, 1, 1], 'each ran once');
});

t.test('a batch-signed command with a tampered audit path is refused bad_signature and does not run; its sibling runs', async (t) => {
  const { cp, agent, proc } = await connectedAgent(t);
  const ring = cp.ctx.keyRing;
  const hub = cp.ctx.hub;
  if (!ring || !hub) throw new Error('no hub');
  const key = ring.active();
  const prepared = [0, 1].map(() => prepareCommand(key, { agentId: agent.agentId, type: 'ping', params: {} }));
  const { signature, batches } = signCommandBatch(key.privateKey, prepared.map((p) => commandSigningBytes(p.canonical)));
  const [good, bad] = batches as [CommandBatch, CommandBatch];
  const hash = Buffer.from(bad.proof[0] ?? '', 'base64url');
  hash[0] = (hash[0] as number) ^ 1;
  const tampered: CommandBatch = { ...bad, proof: [hash.toString('base64url')] };
  const store = openHubStore(cp.ctx.db);
  const [goodCmd, badCmd] = prepared.map((p) => p.envelope) as [(typeof prepared)[0]['envelope'], (typeof prepared)[0]['envelope']];
  for (const [envelope, batch] of [[badCmd, tampered], [goodCmd, good]] as const) {
    await store.insert({ id: envelope.id, agentId: agent.agentId, type: envelope.type, envelope, signature, batch, state: 'sent', createdAt: Date.now(), expiresAt: envelope.expires_at });
    t.equal(hub.deliver(agent.agentId, { protocol: PROTOCOL_VERSION, type: 'command', envelope, signature, batch }), true, `delivered ${envelope.id}`);
  }
  const refused = await storedResult(cp, badCmd.id);
  t.equal(refused.result?.status, 'refused', 'the tampered one is refused');
  t.equal(refused.result?.error?.key, 'bad_signature', 'as bad_signature');
  t.equal(executions(proc, badCmd.id), 0, 'and never ran');
  t.equal(proc.lines(new RegExp(`^warn command refused .*"command_id":"${badCmd.id}".*"reason":"bad_signature"`)).length, 1, 'the refusal is logged');
  const ran = await storedResult(cp, goodCmd.id);
  t.equal(ran.result?.status, 'succeeded', 'its sibling with the genuine path runs');
  t.equal(executions(proc, goodCmd.id), 1);
});

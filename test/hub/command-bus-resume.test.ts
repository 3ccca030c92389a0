// CommandBus.resume: a restarted control plane awaits a command its dead predecessor
// stored, on the production (SQLite) store.
import t from 'tap';
import type { Test } from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { PROTOCOL_VERSION, encodePublicKey, signCommand } from '@vmkit/protocol';
import { createAgent } from '../../control-plane/src/db/agents.ts';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import type { AgentLink, CommandReply } from '../../control-plane/src/hub/agent-hub.ts';
import type { CommandState } from '../../control-plane/src/hub/store.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

/** The registry key a rejected wait carries (CommandBusError.key), or 'resolved'. */
const keyOf = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (err: unknown) => String((err as { key?: unknown }).key),
  );

async function setup(t: Test) {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: 'vm', provider: 'manual' });
  const agent = await createAgent(cp.ctx.db, {
    workspaceId: cp.workspaceId,
    instanceId: inst.id,
    publicKey: encodePublicKey(generateKeyPairSync('ed25519').publicKey),
  });
  const store = openHubStore(cp.ctx.db);
  const acks: string[] = [];
  // The agent is "connected" to this bus only as far as acknowledgements go.
  const link: AgentLink = {
    isConnected: () => false,
    deliver: () => false,
    acknowledgeResult: (_id, commandId) => {
      acks.push(commandId);
      return false;
    },
  };
  const keys = cp.ctx.keyRing;
  if (!keys) throw new Error('the test control plane runs no hub');
  const bus = new InProcessCommandBus({ store, link, keys, sweepIntervalMs: 60_000 });
  t.teardown(() => bus.close());
  /** A command as the killed process left it. */
  const leftover = async (state: CommandState, lifetimeMs = 60_000) => {
    const signed = signCommand(cp.ctx.signingKey, { agentId: agent.id, type: 'ping', params: {}, now: Date.now(), lifetimeMs });
    await store.insert({ id: signed.envelope.id, agentId: agent.id, type: 'ping', envelope: signed.envelope, signature: signed.signature, state, createdAt: Date.now(), expiresAt: signed.envelope.expires_at });
    return signed.envelope.id;
  };
  const result = (commandId: string): CommandReply => ({
    protocol: PROTOCOL_VERSION,
    type: 'result',
    command_id: commandId,
    status: 'succeeded',
    output: { pong: true },
    finished_at: Date.now(),
  });
  return { store, bus, agentId: agent.id, acks, leftover, result };
}

t.test('a result the agent re-sends after the restart settles the resumed wait', async (t) => {
  const { bus, agentId, acks, leftover, result } = await setup(t);
  const id = await leftover('running');
  const waiting = bus.resume(id, { timeoutMs: 30_000 });
  bus.agentMessage(agentId, result(id));
  const outcome = await waiting;
  t.same(outcome.output, { pong: true });
  t.equal((await bus.get(id))?.state, 'succeeded');
  t.same(acks, [id], 'the result is acknowledged so the agent can let go of it');
});

t.test('a result stored before the restart settles the resumed wait at once', async (t) => {
  const { store, bus, agentId, leftover } = await setup(t);
  const id = await leftover('running');
  await store.recordResult(id, agentId, { status: 'succeeded', output: { pong: true }, finished_at: Date.now() }, Date.now());
  t.same((await bus.resume(id, { timeoutMs: 30_000 })).output, { pong: true });
});

t.test('a command that ended without a result rejects the resumed wait with a timeout', async (t) => {
  const { bus, leftover } = await setup(t);
  const id = await leftover('timed_out');
  t.equal(await keyOf(bus.resume(id, { timeoutMs: 30_000 })), 'command_timed_out');
});

t.test('an unknown command, or one already awaited, is refused', async (t) => {
  const { bus, leftover } = await setup(t);
  t.equal(await keyOf(bus.resume('cmd_01jx0000000000000000000000')), 'command_not_found');
  const id = await leftover('sent');
  const first = bus.resume(id, { timeoutMs: 30_000 });
  t.equal(await keyOf(bus.resume(id)), 'conflict');
  await bus.close();
  await t.rejects(first, { name: 'CommandAbortedError' }, 'closing the bus ends the wait (the command stays stored)');
});

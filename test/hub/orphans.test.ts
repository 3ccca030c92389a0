import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { encodePublicKey, signCommand } from '@vmkit/protocol';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import { createAgent } from '../../control-plane/src/db/agents.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { getCommand } from '../../control-plane/src/db/commands.ts';
import type { CommandState, StoredCommand } from '../../control-plane/src/hub/store.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { startHub, until } from './hub-setup.ts';

/** A stored command as a previous control-plane process left it. */
function leftover(fx: { ring: { active(): Parameters<typeof signCommand>[0] } }, agentId: string, state: CommandState, createdAt: number): Omit<StoredCommand, 'result' | 'updatedAt'> {
  const signed = signCommand(fx.ring.active(), { agentId, type: 'ping', params: {}, now: createdAt, lifetimeMs: 1000 });
  return { id: signed.envelope.id, agentId, type: 'ping', envelope: signed.envelope, signature: signed.signature, state, createdAt, expiresAt: signed.envelope.expires_at };
}

t.test('commands left in flight by a previous process time out once expired; later ones are left to their waiters', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  const old = Date.now() - 60_000;
  const stale = ['sent', 'acked', 'running'].map((s) => leftover(fx, agentId, s as CommandState, old));
  for (const c of stale) await fx.store.insert(c);
  const done = leftover(fx, agentId, 'succeeded', old);
  await fx.store.insert(done);
  const bus = new InProcessCommandBus({ store: fx.store, link: fx.hub, keys: fx.ring, sweepIntervalMs: 50, orphanGraceMs: 0 });
  t.teardown(() => bus.close());
  // Created after this bus started: its waiter (in this process) decides, not the sweep.
  const recent = leftover(fx, agentId, 'running', Date.now() + 5);
  await fx.store.insert({ ...recent, expiresAt: Date.now() - 1 });
  await until(async () => (await Promise.all(stale.map((c) => fx.store.commands.get(c.id)))).every((c) => c?.state === 'timed_out'), 3_000, 'stale commands timed out');
  t.pass('sent, acked and running leftovers are timed_out');
  t.equal((await fx.store.commands.get(done.id))?.state, 'succeeded', 'finished commands are untouched');
  t.equal((await fx.store.commands.get(recent.id))?.state, 'running', 'a command of this process is left to its waiter');
});

t.test('on the real database the orphan sweep is one guarded UPDATE and a late result still lands', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: 'vm', provider: 'manual' });
  const agent = await createAgent(cp.ctx.db, {
    workspaceId: cp.workspaceId,
    instanceId: inst.id,
    publicKey: encodePublicKey(generateKeyPairSync('ed25519').publicKey),
  });
  const store = openHubStore(cp.ctx.db);
  const ring = { active: () => cp.ctx.signingKey };
  const old = Date.now() - 60_000;
  const running = leftover({ ring }, agent.id, 'running', old);
  const fresh = leftover({ ring }, agent.id, 'running', Date.now());
  await store.insert(running);
  await store.insert(fresh);
  const now = Date.now();
  t.same(await store.timeOutOrphans(now - 1000, now, now), [running.id], 'only the command created before the cut-off');
  t.equal((await getCommand(cp.ctx.db, running.id))?.state, 'timed_out');
  t.equal((await getCommand(cp.ctx.db, fresh.id))?.state, 'running');
  const outcome = await store.recordResult(running.id, agent.id, { status: 'succeeded', output: { pong: true }, finished_at: now }, now);
  t.equal(outcome, 'stored', 'a result the agent re-sends after reconnecting is still recorded');
  t.equal((await getCommand(cp.ctx.db, running.id))?.state, 'succeeded');
});

/**
 * What a node re-reads after its LISTEN connection was lost (several control planes
 * on PostgreSQL, hub/command-bus.ts `resync`): notifications sent while it was away
 * are gone, the tables are not. A second bus over the same database stands in for the
 * other node; neither tells the other anything, so only the re-read can deliver.
 */
import t from 'tap';
import { PROTOCOL_VERSION } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import { FakeAgent } from './fake-agent.ts';
import { startHub, until } from './hub-setup.ts';

t.test('missed notifications: queued commands of held agents go out, stored results settle waiters', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  t.teardown(() => agent.close());
  // The other node: same tables, no connection to this hub's agents.
  const other = new InProcessCommandBus({ store: fx.store, link: { isConnected: () => false, deliver: () => false, acknowledgeResult: () => false }, keys: fx.ring });
  t.teardown(() => other.close());

  let commandId = '';
  const pending = other.send(agentId, 'ping', {}, { timeoutMs: 60_000, onCommandId: (id) => void (commandId = id) });
  await until(() => commandId !== '', 30_000, 'command id');
  t.equal((await fx.store.commands.get(commandId))?.state, 'queued', 'stored, and nobody told the holder');

  await fx.bus.resync(fx.hub.connectedAgentIds());
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  t.equal(cmd.envelope.id, commandId, 'the holder delivered it from the table');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  await until(async () => (await fx.store.commands.get(commandId))?.state === 'succeeded', 30_000, 'result stored');

  let settled = false;
  void pending.then(() => (settled = true), () => (settled = true));
  await new Promise<void>((resolve) => setImmediate(resolve));
  t.notOk(settled, 'the waiter on the other node is not told by anyone');
  await other.resync([]);
  t.same((await pending).output, { pong: true }, 'its re-read settles it from the stored row');

  await fx.bus.resync(fx.hub.connectedAgentIds());
  t.equal((await fx.store.commands.get(commandId))?.state, 'succeeded', 'a second re-read changes nothing');
});

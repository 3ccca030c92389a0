import t from 'tap';
import { PROTOCOL_VERSION, ReplayCache, pinKeys, verifyCommand } from '@vmkit/protocol';
import type { MessageOf, ServerMessage } from '@vmkit/protocol';
import { AgentCommandError, AgentNotConnectedError, CommandAbortedError, CommandTimeoutError } from '../../control-plane/src/hub/errors.ts';
import { KeyRotation } from '../../control-plane/src/hub/key-rotation.ts';
import { FakeAgent } from './fake-agent.ts';
import { startHub, until } from './hub-setup.ts';
import type { HubFixture } from './hub-setup.ts';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import type { AgentIdentity, CommandState } from '../../control-plane/src/hub/store.ts';

const verifyFor = (agentId: string, keys: { key_id: string; public_key: string }[], cmd: MessageOf<'command'>) =>
  verifyCommand(cmd.envelope, cmd.signature, { pinnedKeys: pinKeys(keys), selfAgentId: agentId, now: Date.now(), seen: new ReplayCache() });

t.test('ping through the CommandBus: signed, acked, progress streamed, result returned and acknowledged', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, agent, welcome } = await fx.connectAgent();
  const progress: string[] = [];
  let commandId = '';
  const pending = fx.bus.send(agentId, 'ping', {}, {
    onProgress: (p) => progress.push(`${p.step}:${p.state}`),
    onCommandId: (id) => {
      commandId = id;
    },
  });
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  const verdict = verifyFor(agentId, welcome?.signing_keys ?? [], cmd);
  t.ok(verdict.ok, 'the command verifies under the key given in welcome');
  t.equal(cmd.envelope.id, commandId);
  t.equal((await fx.store.commands.get(commandId))?.state, 'sent');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: commandId });
  await until(async () => (await fx.store.commands.get(commandId))?.state === 'acked', 30_000, 'acked');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'progress', command_id: commandId, seq: 0, step: 'pong', state: 'started' });
  await until(async () => (await fx.store.commands.get(commandId))?.state === 'running', 30_000, 'running');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  const outcome = await pending;
  t.same(outcome.output, { pong: true });
  t.same(progress, ['pong:started']);
  const ack = (await agent.next('result_ack')) as MessageOf<'result_ack'>;
  t.equal(ack.command_id, commandId);
  t.equal((await fx.store.commands.get(commandId))?.state, 'succeeded');
  await agent.close();
});

/** The states the bus moves commands to, in order, as it asks the store. */
function recordTransitions(store: HubFixture['store']): CommandState[] {
  const seen: CommandState[] = [];
  const transition = store.transition.bind(store);
  store.transition = (commandId, from, to, at, agentId) => {
    seen.push(to);
    return transition(commandId, from, to, at, agentId);
  };
  return seen;
}

t.test('a command for an agent held here is stored as sent and goes out with no second write', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent();
  const moves = recordTransitions(fx.store);
  const pending = fx.bus.send(agentId, 'ping', {});
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  t.equal((await fx.store.commands.get(String(cmd.envelope.id)))?.state, 'sent', 'on file as sent before the agent could answer');
  t.same(moves, [], 'no queued → sent write');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: cmd.envelope.id, status: 'succeeded', output: {}, finished_at: Date.now() });
  t.same((await pending).output, {});
  await agent.close();
});

t.test('an ack that arrives with its result is not written: the result sets the final state', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent();
  const moves = recordTransitions(fx.store);
  const pending = fx.bus.send(agentId, 'ping', {});
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  agent.sendTogether(
    { protocol: PROTOCOL_VERSION, type: 'ack', command_id: id },
    { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() },
  );
  t.same((await pending).output, { pong: true });
  await agent.next('result_ack');
  t.equal((await fx.store.commands.get(id))?.state, 'succeeded');
  t.same(moves, [], 'no acked write');
  // An ack alone is still written.
  const second = fx.bus.send(agentId, 'ping', {});
  const cmd2 = (await agent.next('command')) as MessageOf<'command'>;
  agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: cmd2.envelope.id });
  await until(async () => (await fx.store.commands.get(String(cmd2.envelope.id)))?.state === 'acked', 30_000, 'acked');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: cmd2.envelope.id, status: 'succeeded', finished_at: Date.now() });
  await second;
  t.same(moves, ['acked']);
  await agent.close();
});

t.test('an ack dropped for its result is written after all when the result cannot be stored', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent();
  const pending = fx.bus.send(agentId, 'ping', {}, { timeoutMs: 60_000 });
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  const recordResult = fx.store.recordResult.bind(fx.store);
  fx.store.recordResult = () => Promise.reject(new Error('disk full'));
  agent.sendTogether(
    { protocol: PROTOCOL_VERSION, type: 'ack', command_id: id },
    { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', finished_at: Date.now() },
  );
  await until(async () => (await fx.store.commands.get(id))?.state === 'acked', 30_000, 'acked');
  t.equal(agent.received.filter((m) => m.type === 'result_ack').length, 0, 'no result_ack for a result that was not stored');
  // The agent's journal sends the result again (at its next connect); this time it is stored.
  fx.store.recordResult = recordResult;
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', finished_at: Date.now() });
  t.same((await pending).output, {});
  await agent.close();
});

t.test('another agent’s result does not stop an agent’s ack from being written', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const a = await fx.connectAgent();
  const b = await fx.connectAgent();
  const pending = fx.bus.send(a.agentId, 'ping', {}, { timeoutMs: 60_000 });
  const cmd = (await a.agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  a.agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: id });
  b.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', finished_at: Date.now() });
  await b.agent.next('result_ack');
  await until(async () => (await fx.store.commands.get(id))?.state === 'acked', 30_000, 'acked');
  a.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', finished_at: Date.now() });
  t.same((await pending).output, {});
  await a.agent.close();
  await b.agent.close();
});

t.test('an agent gone by the time its command is stored: the command goes back to queued and expires', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  // Connected when send() looks, gone when the insert committed.
  let connected = true;
  const link = {
    isConnected: () => connected,
    deliver: () => {
      connected = false;
      return false;
    },
    acknowledgeResult: () => false,
  };
  const bus = new InProcessCommandBus({ store: fx.store, link, keys: fx.ring, sweepIntervalMs: 60_000 });
  t.teardown(() => bus.close());
  const err = await bus.send(agentId, 'ping', {}, { timeoutMs: 300 }).catch((e: unknown) => e);
  t.type(err, CommandTimeoutError);
  t.equal((err as CommandTimeoutError).state, 'expired', 'it never reached the agent');
  t.equal((await fx.store.commands.get((err as CommandTimeoutError).commandId ?? ''))?.state, 'expired');
});

t.test('an agent back while its command goes back to queued gets it once, at once', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  const delivered: string[] = [];
  let gone = true;
  const link = {
    isConnected: () => true,
    deliver: (_agentId: string, m: ServerMessage) => {
      if (gone) {
        // Gone for this frame, back at once: its connect re-sends what it finds queued or sent.
        gone = false;
        bus.agentConnected({ id: agentId } as AgentIdentity);
        return false;
      }
      if (m.type === 'command') delivered.push(String(m.envelope.id));
      return true;
    },
    acknowledgeResult: () => true,
  };
  const bus: InProcessCommandBus = new InProcessCommandBus({ store: fx.store, link, keys: fx.ring, sweepIntervalMs: 60_000 });
  t.teardown(() => bus.close());
  const pending = bus.send(agentId, 'ping', {}, { timeoutMs: 60_000 });
  await until(() => delivered.length > 0, 30_000, 'delivered');
  const id = delivered[0] ?? '';
  await until(async () => (await fx.store.commands.get(id))?.state === 'sent', 30_000, 'sent');
  bus.agentMessage(agentId, { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: {}, finished_at: Date.now() });
  t.same((await pending).output, {});
  t.same(delivered, [id], 'delivered once, as sent after it was queued again');
});

t.test('a command for a disconnected agent waits in the queue and goes out when it connects', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  let commandId = '';
  const pending = fx.bus.send(agentId, 'facts', {}, { onCommandId: (id) => {
      commandId = id;
    } });
  await until(() => commandId !== '', 30_000, 'command id');
  t.equal((await fx.store.commands.get(commandId))?.state, 'queued');
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  t.equal(cmd.envelope.id, commandId);
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'succeeded', output: { os: 'x' }, finished_at: Date.now() });
  t.same((await pending).output, { os: 'x' });
  await agent.close();
});

t.test('a close while a send still awaits its own steps rejects that send, with no unhandled rejection', async (t) => {
  // A control plane stopped mid-rollout: the bus rejected the waiter while send() still
  // awaited onCommandId, and the process ended on the unhandled rejection.
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => void process.off('unhandledRejection', onUnhandled));
  let release = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  let entered = () => {};
  const inHook = new Promise<void>((resolve) => (entered = resolve));
  const pending = fx.bus.send(agentId, 'ping', {}, {
    onCommandId: async () => {
      entered();
      await gate;
    },
  });
  await inHook;
  await fx.bus.close();
  // One turn of the event loop: Node reports a rejection nobody handles after the microtasks of this one.
  await new Promise((resolve) => setImmediate(resolve));
  release();
  await t.rejects(pending, CommandAbortedError);
  t.same(unhandled, [], 'no unhandled rejection');
});

t.test('requireConnected fails at once with a local not-connected error', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  await t.rejects(fx.bus.send(agentId, 'ping', {}, { requireConnected: true }), AgentNotConnectedError);
  t.equal(await fx.store.commands.size(), 0, 'nothing stored');
});

t.test('no agent within the timeout: queued command expires, delivered one times out', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const queued = fx.bus.send(agentId, 'ping', {}, { timeoutMs: 200 });
  const err1 = await queued.catch((e: unknown) => e);
  t.type(err1, CommandTimeoutError);
  t.equal((err1 as CommandTimeoutError).state, 'expired');
  t.equal((err1 as CommandTimeoutError).key, 'command_timed_out');
  t.equal((await fx.store.commands.get((err1 as CommandTimeoutError).commandId ?? ''))?.state, 'expired');

  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  // Queued commands go out as the agent connects, before anything sent afterwards:
  // had the expired one been delivered, it would arrive before this new command.
  const sent = fx.bus.send(agentId, 'ping', {}, { timeoutMs: 200 });
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  t.not(cmd.envelope.id, (err1 as CommandTimeoutError).commandId, 'an expired command is never delivered');
  t.equal(agent.received.filter((m) => m.type === 'command').length, 0, 'nothing else was delivered');
  const err2 = await sent.catch((e: unknown) => e);
  t.type(err2, CommandTimeoutError);
  t.equal((err2 as CommandTimeoutError).state, 'timed_out');
  // A late result is still stored once and acknowledged.
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: cmd.envelope.id, status: 'succeeded', output: {}, finished_at: Date.now() });
  await agent.next('result_ack');
  t.equal((await fx.store.commands.get(String(cmd.envelope.id)))?.state, 'succeeded');
  await agent.close();
});

t.test('a refused command surfaces as agent_refused with the reason', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent();
  const pending = fx.bus.send(agentId, 'ping', {});
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  agent.send({
    protocol: PROTOCOL_VERSION,
    type: 'result',
    command_id: cmd.envelope.id,
    status: 'refused',
    error: { key: 'bad_signature', message: 'signature does not verify' },
    finished_at: Date.now(),
  });
  const err = await pending.catch((e: unknown) => e);
  t.type(err, AgentCommandError);
  t.equal((err as AgentCommandError).key, 'agent_refused');
  t.equal((err as AgentCommandError).reason, 'bad_signature');
  t.equal((await fx.store.commands.get(String(cmd.envelope.id)))?.state, 'failed');
  await agent.close();
});

t.test('a failed command surfaces as command_failed', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent();
  const pending = fx.bus.send(agentId, 'harden', { deploy_keys: [], dry_run: true });
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  agent.send({
    protocol: PROTOCOL_VERSION,
    type: 'result',
    command_id: cmd.envelope.id,
    status: 'failed',
    error: { key: 'lockout_risk', message: 'nobody could log in' },
    output: { steps: [] },
    finished_at: Date.now(),
  });
  const err = (await pending.catch((e: unknown) => e)) as AgentCommandError;
  t.equal(err.key, 'command_failed');
  t.equal(err.reason, 'lockout_risk');
  t.same(err.output, { steps: [] });
  await agent.close();
});

/** The hub's text frames to this agent from now on, in the order they arrived: type, and a command's id. */
function frameLog(agent: FakeAgent): string[] {
  const log: string[] = [];
  agent.ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) return;
    const m = JSON.parse(data.toString()) as { type: string; envelope?: { id: string } };
    log.push(m.type === 'command' ? `command ${m.envelope?.id ?? ''}` : m.type);
  });
  return log;
}

t.test('a command sent while the connected state is written reaches the agent after its welcome, once', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  // The connected-state write is held, as a slow database would hold it.
  const writing = Promise.withResolvers<void>();
  const held = Promise.withResolvers<void>();
  const markConnected = fx.store.markConnected.bind(fx.store);
  fx.store.markConnected = async (...args) => {
    writing.resolve();
    await held.promise;
    return markConnected(...args);
  };
  // Resolves once the bus has handed the command to the hub (and the hub took or refused it).
  const handed = Promise.withResolvers<void>();
  const deliver = fx.hub.deliver.bind(fx.hub);
  fx.hub.deliver = (id, message) => {
    const ok = deliver(id, message);
    if (message.type === 'command') handed.resolve();
    return ok;
  };
  const agent = await FakeAgent.dialAndHello(fx.url, agentId, key);
  const frames = frameLog(agent);
  await writing.promise;
  t.ok(fx.hub.isConnected(agentId), 'the connection holds the agent while its state is written');
  const pending = fx.bus.send(agentId, 'ping', {});
  await handed.promise;
  held.resolve();
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  t.equal(frames[0], 'welcome', 'the welcome came first');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  t.same((await pending).output, { pong: true });
  // A later command comes after anything the reconnect could still have sent.
  const later = fx.bus.send(agentId, 'ping', {});
  const next = (await agent.nextOf((m) => m.type === 'command' && m.envelope.id !== id)) as MessageOf<'command'>;
  agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: next.envelope.id, status: 'succeeded', output: {}, finished_at: Date.now() });
  await later;
  t.same(frames.filter((f) => f.startsWith('command')), [`command ${id}`, `command ${String(next.envelope.id)}`], 'each command went out once');
  await agent.close();
});

t.test('a command sent as the agent connects goes out once: the connect’s re-send does not repeat it', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  // The connect's read of commands to re-send waits until a new command has gone out.
  const held = Promise.withResolvers<void>();
  const read = Promise.withResolvers<void>();
  let reads = 0;
  const deliverable = fx.store.deliverable.bind(fx.store);
  fx.store.deliverable = async (...args) => {
    reads++;
    await held.promise;
    const rows = await deliverable(...args);
    read.resolve();
    return rows;
  };
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  const frames = frameLog(agent);
  await until(() => reads === 1, 30_000, 'the re-send read started');
  const pending = fx.bus.send(agentId, 'ping', {});
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  t.equal((await fx.store.commands.get(id))?.state, 'sent', 'on file as sent when the re-send reads');
  held.resolve();
  await read.promise;
  const later = fx.bus.send(agentId, 'ping', {});
  const next = (await agent.nextOf((m) => m.type === 'command' && m.envelope.id !== id)) as MessageOf<'command'>;
  t.same(frames.filter((f) => f.startsWith('command')), [`command ${id}`, `command ${String(next.envelope.id)}`], 'nothing went out twice');
  for (const c of [id, String(next.envelope.id)]) {
    agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: c, status: 'succeeded', output: {}, finished_at: Date.now() });
  }
  await pending;
  await later;
  await agent.close();
});

t.test('a result re-sent after a reconnect is acknowledged again but applied once', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const first = await FakeAgent.connect(fx.url, agentId, key);
  let resolved = 0;
  const pending = fx.bus.send(agentId, 'ping', {}).then((o) => {
    resolved++;
    return o;
  });
  const cmd = (await first.agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  first.agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: id });
  await until(async () => (await fx.store.commands.get(id))?.state === 'acked', 30_000, 'acked');
  // The connection drops between run and result.
  first.agent.kill();
  await until(() => !fx.hub.isConnected(agentId), 30_000, 'hub noticed');
  const second = await FakeAgent.connect(fx.url, agentId, key);
  // Re-sends go out as the agent connects: the first command to arrive after that is
  // this new one, unless the acked command was (wrongly) sent again.
  const probe = fx.bus.send(agentId, 'ping', {});
  const next = (await second.agent.next('command')) as MessageOf<'command'>;
  t.not(String(next.envelope.id), id, 'an acked command is not re-sent');
  t.equal(second.agent.received.filter((m) => m.type === 'command').length, 0, 'nothing else was delivered');
  second.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: next.envelope.id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  await probe;
  await second.agent.next('result_ack');
  const result = { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { n: 1 }, finished_at: Date.now() };
  second.agent.send(result);
  await second.agent.next('result_ack');
  second.agent.send({ ...result, output: { n: 2 } });
  await second.agent.next('result_ack');
  t.same((await pending).output, { n: 1 });
  t.equal(resolved, 1);
  t.same((await fx.store.commands.get(id))?.result?.output, { n: 1 }, 'the second copy was not applied');
  await second.agent.close();
});

t.test('a command sent but never acked is re-sent when the agent comes back', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const first = await FakeAgent.connect(fx.url, agentId, key);
  const pending = fx.bus.send(agentId, 'ping', {});
  const cmd = (await first.agent.next('command')) as MessageOf<'command'>;
  first.agent.kill();
  await until(() => !fx.hub.isConnected(agentId), 30_000, 'hub noticed');
  const second = await FakeAgent.connect(fx.url, agentId, key);
  const again = (await second.agent.next('command')) as MessageOf<'command'>;
  t.same(again.envelope, cmd.envelope, 'the same signed envelope');
  second.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: again.envelope.id, status: 'succeeded', finished_at: Date.now() });
  t.same((await pending).output, {});
  await second.agent.close();
});

t.test('a result for another agent’s command is not applied', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const a = await fx.connectAgent();
  const b = await fx.connectAgent();
  const pending = fx.bus.send(a.agentId, 'ping', {}, { timeoutMs: 500 });
  const cmd = (await a.agent.next('command')) as MessageOf<'command'>;
  b.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: cmd.envelope.id, status: 'succeeded', finished_at: Date.now() });
  await b.agent.next('result_ack');
  t.equal((await fx.store.commands.get(String(cmd.envelope.id)))?.result, undefined);
  await t.rejects(pending, CommandTimeoutError);
  await a.agent.close();
  await b.agent.close();
});

t.test('an aborted wait rejects with a local error', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  const ctl = new AbortController();
  const pending = fx.bus.send(agentId, 'ping', {}, { signal: ctl.signal });
  setTimeout(() => ctl.abort(), 50);
  await t.rejects(pending, CommandAbortedError);
});

t.test('key rotation: connected agents learn the new key from a command signed by the old one; then the new key signs', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const rotation = new KeyRotation({ ring: fx.ring, bus: fx.bus, hub: fx.hub, store: fx.store });
  fx.hub.addListener(rotation);
  const { agentId, agent, welcome } = await fx.connectAgent();
  let pinned = [...(welcome?.signing_keys ?? [])];
  const oldKeyId = fx.ring.active().keyId;
  // Answer every command like an agent would, tracking pinned keys.
  const seen: MessageOf<'command'>[] = [];
  const loop = (async () => {
    while (agent.ws.readyState === agent.ws.OPEN) {
      const cmd = (await agent.next('command', 200).catch(() => undefined)) as MessageOf<'command'> | undefined;
      if (!cmd) continue;
      seen.push(cmd);
      const v = verifyFor(agentId, pinned, cmd);
      if (v.ok && v.command.type === 'keys.rotate') {
        const { add, retire } = v.command.params;
        pinned = [...pinned.filter((k) => !retire.includes(k.key_id)), ...add];
      }
      agent.send({
        protocol: PROTOCOL_VERSION,
        type: 'result',
        command_id: cmd.envelope.id,
        ...(v.ok ? { status: 'succeeded' } : { status: 'refused', error: { key: v.reason, message: v.detail } }),
        finished_at: Date.now(),
      });
    }
  })();
  const added = await rotation.addKey();
  t.equal(added.updated, 1);
  t.equal(seen[0]?.envelope.key_id, oldKeyId, 'keys.rotate add is signed by the old key');
  t.ok(pinned.some((k) => k.key_id === added.key_id), 'agent pinned the new key');
  const promoted = await rotation.promote();
  t.equal(promoted.retired, oldKeyId);
  t.equal(promoted.updated, 1);
  t.notOk(pinned.some((k) => k.key_id === oldKeyId), 'agent dropped the retired key');
  await fx.bus.send(agentId, 'ping', {});
  t.equal(seen.at(-1)?.envelope.key_id, added.key_id, 'commands are now signed by the new key');
  t.same((await fx.store.agents.get(agentId))?.pinnedKeyIds, [added.key_id]);
  await agent.close();
  await loop;
});

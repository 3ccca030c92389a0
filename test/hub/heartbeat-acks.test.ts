import t from 'tap';
import { MAX_HEARTBEAT_ACKS, PROTOCOL_VERSION, newId, parseAgentMessage, parseServerMessage } from '@vmkit/protocol';
import type { MessageOf, ServerMessage } from '@vmkit/protocol';
import { FakeAgent } from './fake-agent.ts';
import { startHub } from './hub-setup.ts';

/**
 * Result acks on heartbeats: an agent that names `heartbeat-acks` in its features header
 * gets no `result_ack` frame per result; the hub's next heartbeat to it carries them
 * (`result_acks`), at the latest about one heartbeat interval later, at once when 64 are
 * owed, and before the hub closes. Agents without the feature get `result_ack` frames.
 */

const FEATURES = { features: 'queued,heartbeat-acks' };
/** No hub ping or heartbeat of its own within a test, unless the test asks for one. */
const QUIET = { heartbeatIntervalMs: 600_000 };

/** Answers the next command as vmkit-agent answers a ping (ack and result in one write); resolves with its id. */
async function answerNext(agent: FakeAgent): Promise<string> {
  const cmd = (await agent.next('command')) as MessageOf<'command'>;
  const id = String(cmd.envelope.id);
  agent.sendTogether(
    { protocol: PROTOCOL_VERSION, type: 'ack', command_id: id },
    { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() },
  );
  return id;
}

const heartbeat = () => ({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
const acksOf = (m: ServerMessage) => (m.type === 'heartbeat' ? (m.result_acks ?? []) : []);

t.test('the protocol: result_acks only on the hub heartbeat, 1 to 64 command ids', async (t) => {
  const id = newId('command');
  const hub = (acks: unknown) => JSON.stringify({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: 1, result_acks: acks });
  t.ok(parseServerMessage(JSON.stringify({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: 1 })).ok, 'a heartbeat without acks, as before');
  const one = parseServerMessage(hub([id]));
  t.ok(one.ok, 'a hub heartbeat with one ack');
  t.same(one.ok && one.message.type === 'heartbeat' ? one.message.result_acks : undefined, [id]);
  t.ok(parseServerMessage(hub(Array.from({ length: MAX_HEARTBEAT_ACKS }, () => id))).ok, `${MAX_HEARTBEAT_ACKS} acks`);
  for (const [why, acks] of [
    ['empty', []],
    ['one too many', Array.from({ length: MAX_HEARTBEAT_ACKS + 1 }, () => id)],
    ['not a command id', [newId('agent')]],
    ['not a list', id],
  ] as const) {
    t.notOk(parseServerMessage(hub(acks)).ok, `refused: ${why}`);
  }
  t.notOk(parseAgentMessage(hub([id])).ok, 'an agent may not send acks on its heartbeat');
});

t.test('an agent with the feature gets its acks on the reply to its heartbeat, not a result_ack each', async (t) => {
  const fx = await startHub(QUIET);
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent(FEATURES);
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const outcome = fx.bus.send(agentId, 'ping', {});
    ids.push(await answerNext(agent));
    t.equal((await outcome).status, 'succeeded', `command ${i + 1} succeeded`);
  }
  agent.send(heartbeat());
  const reply = await agent.next('heartbeat');
  t.same(acksOf(reply), ids, 'the heartbeat reply acknowledges the three results, in order');
  t.equal(agent.received.filter((m) => m.type === 'result_ack').length, 0, 'no result_ack frame was sent');
  agent.send(heartbeat());
  const again = await agent.next('heartbeat');
  t.equal(again.type === 'heartbeat' ? again.result_acks : 'x', undefined, 'nothing owed: a plain heartbeat');
});

t.test('an agent without the feature gets a result_ack frame per result, and plain heartbeats', async (t) => {
  const fx = await startHub(QUIET);
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent({ features: 'queued' });
  const outcome = fx.bus.send(agentId, 'ping', {});
  const id = await answerNext(agent);
  t.equal((await outcome).status, 'succeeded');
  const ack = (await agent.next('result_ack')) as MessageOf<'result_ack'>;
  t.equal(ack.command_id, id, 'the result is acknowledged by its own frame');
  agent.send(heartbeat());
  const reply = await agent.next('heartbeat');
  t.notOk('result_acks' in reply, 'its heartbeats carry no acks');
});

t.test(`${MAX_HEARTBEAT_ACKS} acks owed go out at once, on a heartbeat of the hub's own`, async (t) => {
  const fx = await startHub(QUIET);
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent(FEATURES);
  const ids: string[] = [];
  const outcomes: Promise<unknown>[] = [];
  for (let i = 0; i < MAX_HEARTBEAT_ACKS + 1; i++) {
    outcomes.push(fx.bus.send(agentId, 'ping', {}));
    ids.push(await answerNext(agent));
  }
  await Promise.all(outcomes);
  const first = await agent.next('heartbeat');
  t.same(acksOf(first), ids.slice(0, MAX_HEARTBEAT_ACKS), `the first ${MAX_HEARTBEAT_ACKS} without waiting for the agent's heartbeat`);
  agent.send(heartbeat());
  t.same(acksOf(await agent.next('heartbeat')), ids.slice(MAX_HEARTBEAT_ACKS), 'the last one on the next');
});

t.test('an agent that sends no heartbeat still gets its acks, on the hub’s ping round', async (t) => {
  const fx = await startHub({ heartbeatIntervalMs: 200, deadAfterMs: 600_000 });
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent(FEATURES);
  const outcome = fx.bus.send(agentId, 'ping', {});
  const id = await answerNext(agent);
  await outcome;
  const hb = await agent.nextOf((m) => acksOf(m).length > 0, 10_000, 'heartbeat with acks');
  t.same(acksOf(hb), [id], 'a heartbeat of the hub’s own carries the ack');
  t.equal(agent.received.filter((m) => m.type === 'result_ack').length, 0, 'no result_ack frame');
});

t.test('acks owed are sent before the hub closes', async (t) => {
  const fx = await startHub(QUIET);
  t.teardown(() => fx.close());
  const { agentId, agent } = await fx.connectAgent(FEATURES);
  const outcome = fx.bus.send(agentId, 'ping', {});
  const id = await answerNext(agent);
  await outcome;
  const closing = fx.hub.close();
  t.same(acksOf(await agent.next('heartbeat')), [id], 'the ack comes first');
  const err = (await agent.next('error')) as MessageOf<'error'>;
  t.equal(err.key, 'shutting_down', 'then the shutdown');
  await closing;
});

t.test('a result re-sent on a new connection (its ack was lost with the old one) is acknowledged again', async (t) => {
  const fx = await startHub(QUIET);
  t.teardown(() => fx.close());
  const { agentId, key, agent } = await fx.connectAgent(FEATURES);
  const outcome = fx.bus.send(agentId, 'ping', {});
  const id = await answerNext(agent);
  t.equal((await outcome).status, 'succeeded');
  // Gone before any heartbeat carried the ack: the agent still journals the result.
  agent.kill();
  await agent.closed;
  const back = await FakeAgent.connect(fx.url, agentId, key, FEATURES);
  t.ok(back.welcome, 'back');
  back.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  // The hub stores (here: finds) the result before it owes the ack; heartbeats until one carries it.
  let acked: string[] = [];
  for (let beats = 1; acked.length === 0; beats++) {
    if (beats > 200) throw new Error('no heartbeat carried the ack');
    back.agent.send(heartbeat());
    acked = acksOf(await back.agent.next('heartbeat'));
  }
  t.same(acked, [id], 'the duplicate is acknowledged, so the agent can let it go');
  t.equal((await fx.bus.get(id))?.state, 'succeeded', 'stored once, as it was');
  back.agent.kill();
});

import t from 'tap';
import { WebSocket } from 'ws';
import { parseAgentFeatures } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { HUB_CLOSE } from '../../control-plane/src/hub/agent-hub.ts';
import { TEST_RECONNECT } from '../agent/agent-process.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { enrollRealAgent, waitAgentState } from '../helpers/real-agent.ts';
import { FakeAgent } from './fake-agent.ts';
import { startHub, until } from './hub-setup.ts';

/**
 * The handshake line: a verified agent over the handshake bound that says (upgrade
 * header `x-vmkit-agent-features: queued`) it understands `queued` is held on its
 * connection and welcomed in its turn, instead of being refused `overloaded` and dialling,
 * being challenged and verified again. Tokens refill every 100 s in the tests that look
 * at the line itself, so nothing leaves it while they look, however slow the machine.
 */

const SLOW = { handshakesPerSecond: 0.01, handshakeBurst: 1, handshakeQueueMs: 600_000 };

t.test('the features header: known names only, junk and repeats ignored', async (t) => {
  t.same([...parseAgentFeatures('queued')], ['queued']);
  t.same([...parseAgentFeatures(' queued , shiny-new-thing')], ['queued'], 'an unknown name is ignored');
  t.same([...parseAgentFeatures('queuedx')], [], 'no prefix match');
  t.same([...parseAgentFeatures(undefined)], []);
  t.same([...parseAgentFeatures(['queued', 'queued'])], [], 'a repeated header counts as none');
  t.same([...parseAgentFeatures(`queued,${'x'.repeat(300)}`)], [], 'an oversized header counts as none');
});

t.test('over the bound, agents that understand `queued` are held in line and told their place', async (t) => {
  const fx = await startHub(SLOW);
  t.teardown(() => fx.close());
  const [first, ...rest] = await Promise.all([1, 2, 3, 4].map(() => fx.addAgent()));
  if (!first) throw new Error('no agents');
  const welcomed = await FakeAgent.connect(fx.url, first.agentId, first.key, {});
  t.ok(welcomed.welcome, 'the one token welcomes the first agent');
  const lined: FakeAgent[] = [];
  for (const a of rest) {
    const agent = await FakeAgent.dialAndHello(fx.url, a.agentId, a.key, { features: 'queued' });
    lined.push(agent);
    const queued = (await agent.next('queued')) as MessageOf<'queued'>;
    t.equal(queued.position, lined.length, `agent ${lined.length + 1} is number ${lined.length} in line`);
    t.ok(queued.welcome_within_ms > (lined.length - 1) * 100_000 - 1_000, `welcome promised within ${queued.welcome_within_ms} ms`);
    t.ok(queued.welcome_within_ms <= 600_000);
  }
  const stats = fx.hub.stats();
  t.equal(stats.queued, 3, 'three held');
  t.equal(stats.handshakesQueued, 3);
  t.equal(stats.refusedOverloaded, 0, 'nobody refused');
  t.equal(stats.handshaking, 0, 'held agents no longer count against the unauthenticated cap');
  t.equal(stats.connected, 1);
  for (const agent of lined) t.equal(agent.ws.readyState, WebSocket.OPEN, 'still open while in line');
  for (const a of rest) t.equal((await fx.store.agents.get(a.agentId))?.state, 'disconnected', 'not recorded connected before its welcome');

  // An agent without the header whose turn is that far off is refused, with a slot behind the line.
  const legacy = await fx.addAgent();
  const refused = await FakeAgent.connect(fx.url, legacy.agentId, legacy.key);
  t.equal(refused.error?.key, 'overloaded');
  t.ok((refused.error?.retry_after_ms ?? 0) >= 3 * 100_000 - 1_000, `its retry slot (${refused.error?.retry_after_ms} ms) is behind the three in line`);
  t.equal((await refused.agent.closed).code, HUB_CLOSE.overloaded);

  // A frame from an agent in line, before its welcome, is a protocol error.
  const [noisy] = lined;
  noisy?.send({ protocol: 1, type: 'heartbeat', sent_at: Date.now() });
  t.equal(((await noisy?.next('error')) as MessageOf<'error'>).key, 'unexpected_message');
  t.equal((await noisy?.closed)?.code, HUB_CLOSE.policy);
  await until(() => fx.hub.stats().queued === 2, 30_000, 'the noisy agent out of line');
  for (const agent of lined) agent.kill();
  welcomed.agent.kill();
});

t.test('a closed connection gives up its place; an agent that dials again keeps it', async (t) => {
  const fx = await startHub(SLOW);
  t.teardown(() => fx.close());
  const [first, b, c, d] = await Promise.all([1, 2, 3, 4].map(() => fx.addAgent()));
  if (!first || !b || !c || !d) throw new Error('no agents');
  const welcomed = await FakeAgent.connect(fx.url, first.agentId, first.key);
  t.ok(welcomed.welcome);
  const inLine = async (a: typeof b) => {
    const agent = await FakeAgent.dialAndHello(fx.url, a.agentId, a.key, { features: 'queued' });
    return { agent, queued: (await agent.next('queued')) as MessageOf<'queued'> };
  };
  const lineB = await inLine(b);
  const lineC = await inLine(c);
  t.same([lineB.queued.position, lineC.queued.position], [1, 2]);

  // C dials again while in line (its old socket looked dead to it): the new connection takes C's place.
  const againC = await inLine(c);
  t.equal(againC.queued.position, 2, 'same place as before');
  t.equal(((await lineC.agent.next('error')) as MessageOf<'error'>).key, 'connection_replaced');
  t.equal((await lineC.agent.closed).code, HUB_CLOSE.replaced);
  t.equal(fx.hub.stats().queued, 2, 'one place per agent');

  // B leaves the line: the next agent to come in is number 2, behind C only.
  lineB.agent.kill();
  await until(() => fx.hub.stats().queued === 1, 30_000, 'B out of line');
  const lineD = await inLine(d);
  t.equal(lineD.queued.position, 2, 'B’s place is gone');
  t.equal(fx.hub.stats().refusedOverloaded, 0);
  for (const x of [againC.agent, lineD.agent, welcomed.agent]) x.kill();
});

t.test('the line drains first come, first served, as tokens refill', async (t) => {
  // 4 tokens a second, one at a time: the line empties in about a second.
  const fx = await startHub({ handshakesPerSecond: 4, handshakeBurst: 1, handshakeQueueMs: 60_000 });
  t.teardown(() => fx.close());
  const enrolled = await Promise.all([1, 2, 3, 4, 5, 6].map(() => fx.addAgent()));
  const order: string[] = [];
  const agents: FakeAgent[] = [];
  for (const a of enrolled) {
    const before = fx.hub.stats();
    const seenBefore = before.handshakesQueued + before.handshakesCompleted;
    const agent = await FakeAgent.dialAndHello(fx.url, a.agentId, a.key, { features: 'queued' });
    agents.push(agent);
    void agent.next('welcome', 60_000).then(() => order.push(a.agentId));
    // The next hello goes only once the hub has lined or welcomed this one.
    await until(() => {
      const s = fx.hub.stats();
      return s.handshakesQueued + s.handshakesCompleted > seenBefore;
    }, 30_000, 'the hello handled');
  }
  await until(() => order.length === enrolled.length, 60_000, 'every agent welcomed');
  t.same(order, enrolled.map((a) => a.agentId), 'welcomed in the order they were verified');
  const stats = fx.hub.stats();
  t.equal(stats.refusedOverloaded, 0, 'nobody refused');
  t.equal(stats.queued, 0, 'the line is empty');
  t.equal(stats.connected, 6);
  for (const a of enrolled) t.equal((await fx.store.agents.get(a.agentId))?.state, 'connected');
  for (const agent of agents) agent.kill();
});

t.test('an agent whose turn is near is held without a word, whatever it understands', async (t) => {
  // Silent holds up to 250 s and a token every 100 s: the second and third agents (no header) are held, the fourth is not.
  const fx = await startHub({ ...SLOW, handshakeSilentHoldMs: 250_000 });
  t.teardown(() => fx.close());
  const [first, ...rest] = await Promise.all([1, 2, 3, 4].map(() => fx.addAgent()));
  if (!first) throw new Error('no agents');
  const welcomed = await FakeAgent.connect(fx.url, first.agentId, first.key);
  t.ok(welcomed.welcome);
  const held: FakeAgent[] = [];
  for (const a of rest.slice(0, 2)) {
    held.push(await FakeAgent.dialAndHello(fx.url, a.agentId, a.key));
    await until(() => fx.hub.stats().queued === held.length, 30_000, 'held');
  }
  const last = rest[2];
  if (!last) throw new Error('no agent');
  const refused = await FakeAgent.connect(fx.url, last.agentId, last.key);
  t.equal(refused.error?.key, 'overloaded', 'a turn past the silent hold is refused to an agent without the header');
  for (const agent of held) {
    t.same(agent.received.map((m) => m.type), [], 'nothing sent after the challenge (which the hello answered): no queued, no error');
    t.equal(agent.ws.readyState, WebSocket.OPEN);
  }
  for (const agent of [...held, welcomed.agent, refused.agent]) agent.kill();
});

t.test('handshakeQueueMs 0: no line, every agent over the bound is refused', async (t) => {
  const fx = await startHub({ ...SLOW, handshakeQueueMs: 0 });
  t.teardown(() => fx.close());
  const [first, second] = await Promise.all([1, 2].map(() => fx.addAgent()));
  if (!first || !second) throw new Error('no agents');
  const welcomed = await FakeAgent.connect(fx.url, first.agentId, first.key);
  t.ok(welcomed.welcome);
  const agent = await FakeAgent.dialAndHello(fx.url, second.agentId, second.key, { features: 'queued' });
  t.equal(((await agent.next('error')) as MessageOf<'error'>).key, 'overloaded');
  t.equal(fx.hub.stats().handshakesQueued, 0);
  for (const x of [agent, welcomed.agent]) x.kill();
});

t.test('a hub that shuts down tells the agents in line to come back later', async (t) => {
  const fx = await startHub(SLOW);
  let closed = false;
  t.teardown(() => (closed ? undefined : fx.close()));
  const [first, second] = await Promise.all([1, 2].map(() => fx.addAgent()));
  if (!first || !second) throw new Error('no agents');
  const welcomed = await FakeAgent.connect(fx.url, first.agentId, first.key);
  const lined = await FakeAgent.dialAndHello(fx.url, second.agentId, second.key, { features: 'queued' });
  await lined.next('queued');
  const closing = fx.close();
  closed = true;
  const err = (await lined.next('error')) as MessageOf<'error'>;
  t.equal(err.key, 'shutting_down');
  t.ok((err.retry_after_ms ?? 0) >= 1_000, 'with a time to come back');
  t.equal((await lined.closed).code, HUB_CLOSE.shutdown);
  await closing;
  welcomed.agent.kill();
});

t.test('a real vmkit-agent waits in line past its own handshake timeout and connects on its first dial', async (t) => {
  // One token every 10 s: the second agent's turn is seconds away, its handshake timeout 1.5 s.
  const cp = await startTestControlPlane({ config: { agentHub: { handshakesPerSecond: 0.1, handshakeQueueMs: 60_000 } } });
  t.teardown(() => cp.close());
  const first = await enrollRealAgent(t, cp, { name: uniqueInstanceName('line-first') });
  const second = await enrollRealAgent(t, cp, { name: uniqueInstanceName('line-second'), reconnect: { ...TEST_RECONNECT, handshake_timeout_ms: 1_500 } });
  first.start();
  await waitAgentState(cp, first.instanceId, 'connected');
  const proc = second.start();
  const waiting = await proc.waitForLog(/waiting in line for the hub/);
  t.match(waiting, /"position":1/, 'told it is next');
  t.ok(Number(/"welcome_within_ms":(\d+)/.exec(waiting)?.[1]) > 1_500, 'its turn is further off than its own handshake timeout');
  await proc.waitForLog(/^info connected/);
  t.same(proc.lines(/handshake timed out|reconnecting/), [], 'never timed out nor dialled again');
  await waitAgentState(cp, second.instanceId, 'connected');
  const stats = cp.ctx.hub?.stats();
  t.equal(stats?.handshakesQueued, 1, 'held in line once');
  t.equal(stats?.refusals.overloaded, 0, 'never refused');
});

t.test('an agent revoked while in line is refused at its turn, and one enrolled again is put out of line at once', async (t) => {
  // A token every 4 s: the second agent's turn is seconds after it is told its place.
  const fx = await startHub({ handshakesPerSecond: 0.25, handshakeBurst: 1, handshakeQueueMs: 60_000 });
  t.teardown(() => fx.close());
  const [first, second, third] = await Promise.all([1, 2, 3].map(() => fx.addAgent()));
  if (!first || !second || !third) throw new Error('no agents');
  const welcomed = await FakeAgent.connect(fx.url, first.agentId, first.key);
  t.ok(welcomed.welcome);
  const lined = await FakeAgent.dialAndHello(fx.url, second.agentId, second.key, { features: 'queued' });
  await lined.next('queued');
  // Revoked in the database only (as another process would): the hub finds out when it writes the connect.
  await fx.revokeAgent(second.agentId);
  const err = (await lined.next('error', 60_000)) as MessageOf<'error'>;
  t.equal(err.key, 'unauthorized');
  t.match(err.message, /revoked or enrolled again/);
  t.equal((await lined.closed).code, HUB_CLOSE.unauthorized);
  t.equal((await fx.store.agents.get(second.agentId))?.state, 'revoked', 'the row was not written connected');
  t.notOk(fx.hub.isConnected(second.agentId));

  // drop() (a re-enrolment with a new key on this process) takes an agent out of line at once.
  const next = await FakeAgent.dialAndHello(fx.url, third.agentId, third.key, { features: 'queued' });
  await next.next('queued');
  fx.hub.drop(third.agentId, 'this agent was enrolled again with a new key');
  t.equal(((await next.next('error')) as MessageOf<'error'>).key, 'unauthorized');
  t.equal((await next.closed).code, HUB_CLOSE.unauthorized);
  t.equal(fx.hub.stats().queued, 0);
  t.equal(fx.hub.stats().refusals.revoked, 2);
  welcomed.agent.kill();
});

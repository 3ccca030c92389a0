import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocket } from 'ws';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, newId, signHello } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { HUB_CLOSE } from '../../control-plane/src/hub/agent-hub.ts';
import { FakeAgent } from './fake-agent.ts';
import { startHub, until } from './hub-setup.ts';

/** The refusal reasons counted so far (the metrics' `reason` label), zeros left out. */
const refusals = (fx: { hub: { stats(): { refusals: Record<string, number> } } }) =>
  Object.fromEntries(Object.entries(fx.hub.stats().refusals).filter(([, n]) => n > 0));

t.test('an enrolled agent completes the handshake and is marked connected', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const { agent, welcome } = await FakeAgent.connect(fx.url, agentId, key, { hostname: 'vm-1' });
  t.ok(welcome, 'welcome received');
  t.equal(welcome?.agent_id, agentId);
  t.same(welcome?.signing_keys, fx.ring.published(), 'welcome carries the current signing keys');
  t.equal(welcome?.heartbeat_interval_ms, fx.hub.heartbeatIntervalMs);
  const row = await fx.store.agents.get(agentId);
  t.equal(row?.state, 'connected');
  t.equal(row?.hostname, 'vm-1');
  t.equal(row?.agentVersion, '0.1.0-test');
  t.ok(row?.connectedAt);
  t.ok(fx.hub.isConnected(agentId));
  await agent.close();
  await until(async () => (await fx.store.agents.get(agentId))?.state === 'disconnected', 30_000, 'disconnected');
  t.notOk(fx.hub.isConnected(agentId));
});

t.test('a hello signed by another key is refused with a reason', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId } = await fx.addAgent();
  const wrongKey = generateKeyPairSync('ed25519').privateKey;
  const { agent, error, welcome } = await FakeAgent.connect(fx.url, agentId, wrongKey);
  t.notOk(welcome);
  t.equal(error?.key, 'unauthorized');
  t.match(error?.message, /signature/);
  const closed = await agent.closed;
  t.equal(closed.code, HUB_CLOSE.unauthorized);
  t.equal((await fx.store.agents.get(agentId))?.state, 'disconnected');
  t.same(refusals(fx), { bad_signature: 1 }, 'counted by reason');
});

t.test('an unknown agent is refused', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { error, agent } = await FakeAgent.connect(fx.url, newId('agent'), generateKeyPairSync('ed25519').privateKey);
  t.equal(error?.key, 'unauthorized');
  t.match(error?.message, /unknown agent/);
  t.equal((await agent.closed).code, HUB_CLOSE.unauthorized);
  t.same(refusals(fx), { unknown_agent: 1 });
});

t.test('a revoked agent is refused', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  await fx.revokeAgent(agentId);
  const { error, agent } = await FakeAgent.connect(fx.url, agentId, key);
  t.equal(error?.key, 'unauthorized');
  t.match(error?.message, /revoked/);
  t.equal((await agent.closed).code, HUB_CLOSE.unauthorized);
  t.same(refusals(fx), { revoked: 1 });
});

t.test('a hello answering another challenge is refused', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const agent = await FakeAgent.open(fx.url);
  await agent.next('challenge');
  const otherNonce = 'A'.repeat(43);
  agent.send({
    protocol: PROTOCOL_VERSION,
    type: 'hello',
    agent_id: agentId,
    nonce: otherNonce,
    signature: signHello(key, agentId, otherNonce),
    agent_version: '1',
    hostname: 'h',
    os: 'o',
  });
  const err = (await agent.next('error')) as MessageOf<'error'>;
  t.equal(err.key, 'unauthorized');
  t.equal((await agent.closed).code, HUB_CLOSE.unauthorized);
  t.same(refusals(fx), { bad_nonce: 1 });
});

t.test('a second connection of the same agent replaces the first', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const first = await FakeAgent.connect(fx.url, agentId, key);
  const second = await FakeAgent.connect(fx.url, agentId, key);
  t.ok(second.welcome);
  const closed = await first.agent.closed;
  t.equal(closed.code, HUB_CLOSE.replaced);
  t.equal(closed.reason, 'replaced');
  // A heartbeat round trip on the new connection, sent after the old one closed, lets
  // the hub handle that close before the answer comes back.
  second.agent.send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
  await second.agent.next('heartbeat');
  t.equal((await fx.store.agents.get(agentId))?.state, 'connected', 'the old close does not mark the agent disconnected');
  t.equal(fx.hub.stats().connected, 1);
  t.equal(second.agent.ws.readyState, WebSocket.OPEN);
  await second.agent.close();
});

t.test('an agent that stops answering is marked disconnected, one answering pings is kept', async (t) => {
  // Both sides run in this (possibly loaded) process: deadAfterMs stays far above any stall.
  const fx = await startHub({ heartbeatIntervalMs: 250, deadAfterMs: 3_000 });
  t.teardown(() => fx.close());
  const live = await fx.addAgent();
  const answering = await FakeAgent.connect(fx.url, live.agentId, live.key);
  const { agentId, key } = await fx.addAgent();
  // autoPong off and no heartbeats: as silent as a partitioned VM.
  const { agent } = await FakeAgent.connect(fx.url, agentId, key, { autoPong: false });
  await until(async () => (await fx.store.agents.get(agentId))?.state === 'disconnected', 30_000, 'disconnected');
  await agent.closed;
  t.equal(fx.hub.stats().deadDropped, 1, 'dropped for its silence');
  // Connected before the silent one, it went through the same silence window answering pings.
  t.equal((await fx.store.agents.get(live.agentId))?.state, 'connected', 'the answering agent stays connected');
  t.ok(fx.hub.isConnected(live.agentId));
  await answering.agent.close();
});

t.test('pongs and heartbeats keep an agent alive; last_seen is written in batches, not per pong', async (t) => {
  // The periodic flush is pushed out of the way; the test flushes by hand.
  const fx = await startHub({ heartbeatIntervalMs: 100, deadAfterMs: 30_000, lastSeenFlushMs: 3_600_000 });
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  const firstSeen = (await fx.store.agents.get(agentId))?.lastSeen ?? 0;
  const writesBefore = fx.store.lastSeenWrites;
  let pings = 0;
  agent.ws.on('ping', () => pings++);
  await until(() => pings >= 10, 30_000, '10 pings answered');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
  const echo = await agent.next('heartbeat');
  t.equal(echo.type, 'heartbeat', 'the hub answers an app heartbeat');
  // Frames on one socket arrive in order: the hub has handled the pongs sent before it.
  t.equal(fx.store.lastSeenWrites, writesBefore, 'no write per pong or heartbeat');
  await fx.hub.flushLastSeen();
  t.equal(fx.store.lastSeenWrites, writesBefore + 1, 'one write for the whole batch');
  const rec = await fx.store.agents.get(agentId);
  t.ok((rec?.lastSeen ?? 0) > firstSeen, 'last_seen moved');
  t.equal(rec?.state, 'connected');
  await agent.close();
});

t.test('an agent that heartbeats is not pinged as well; one that only answers pings is', async (t) => {
  const fx = await startHub({ heartbeatIntervalMs: 200, deadAfterMs: 60_000 });
  t.teardown(() => fx.close());
  const quiet = await fx.addAgent();
  const talker = await fx.addAgent();
  const { agent: q } = await FakeAgent.connect(fx.url, quiet.agentId, quiet.key);
  const { agent: h } = await FakeAgent.connect(fx.url, talker.agentId, talker.key);
  let quietPings = 0;
  let talkerPings = 0;
  q.ws.on('ping', () => quietPings++);
  h.ws.on('ping', () => talkerPings++);
  // The talker heartbeats ten times an interval (each after the hub's answer) until the quiet one was pinged ten times.
  let beats = 0;
  while (quietPings < 10) {
    h.send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
    await h.next('heartbeat');
    beats++;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // A stall of this process longer than an interval between two heartbeats earns the talker a ping; a few may happen on a loaded machine.
  t.ok(talkerPings < quietPings / 2, `the heartbeating agent got ${talkerPings} pings over ${beats} heartbeats, the quiet one ${quietPings}`);
  const stats = fx.hub.stats();
  t.ok(stats.pingsSkipped >= 5, `pings left out: ${stats.pingsSkipped}`);
  t.ok(stats.pingsSent >= quietPings, `pings sent: ${stats.pingsSent}`);
  t.ok(fx.hub.isConnected(quiet.agentId) && fx.hub.isConnected(talker.agentId), 'both stay connected');
  await q.close();
  await h.close();
});

t.test('an agent whose connection could not be recorded is sent away to retry, not kept unroutable', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const markConnected = fx.store.markConnected.bind(fx.store);
  let failures = 1;
  fx.store.markConnected = async (id, info) => {
    if (failures-- > 0) throw new Error('the database is unreachable');
    return markConnected(id, info);
  };
  const refused = await FakeAgent.connect(fx.url, agentId, key);
  if (refused.welcome) {
    refused.agent.kill();
    t.fail('welcomed although its connection was not recorded');
    return;
  }
  t.equal(refused.error?.key, 'internal');
  t.ok((refused.error?.retry_after_ms ?? 0) >= 1_000, `told when to retry (${refused.error?.retry_after_ms} ms)`);
  t.equal((await refused.agent.closed).code, HUB_CLOSE.internal);
  t.notOk(fx.hub.isConnected(agentId), 'not held');
  t.equal(fx.hub.stats().refusals.internal, 1, 'counted as a refusal');
  t.not((await fx.store.agents.get(agentId))?.state, 'connected');
  const again = await FakeAgent.connect(fx.url, agentId, key);
  t.ok(again.welcome, 'the next dial gets in');
  t.equal((await fx.store.agents.get(agentId))?.state, 'connected');
  t.equal(fx.hub.stats().handshakesCompleted, 1);
  await again.agent.close();
});

t.test('the 101 response and the challenge leave the hub in one socket write', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  // The hub behind a server of this test's own, whose sockets count the writes that reach them.
  let writes = 0;
  const server = createServer();
  server.on('upgrade', (req, socket: Socket, head: Buffer) => {
    const counted = socket as Socket & { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
    const write = counted._write.bind(counted);
    const writev = counted._writev.bind(counted);
    counted._write = (...a) => {
      writes++;
      write(...a);
    };
    counted._writev = (...a) => {
      writes++;
      writev(...a);
    };
    fx.hub.handleUpgrade(req, socket, head);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const agent = await FakeAgent.open(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/agent/v1/connect`);
  const challenge = (await agent.next('challenge')) as MessageOf<'challenge'>;
  t.match(challenge.nonce, /./, 'the challenge arrived');
  t.equal(writes, 1, 'one write for the response and the first frame');
  agent.kill();
});

t.test('verified handshakes over the bound are answered overloaded with retry_after_ms', async (t) => {
  // Two tokens, refilled every 100 s: no refill between the five handshakes, however slow the machine.
  const fx = await startHub({ handshakesPerSecond: 0.01, handshakeBurst: 2 });
  t.teardown(() => fx.close());
  const enrolled = await Promise.all([1, 2, 3, 4, 5].map(() => fx.addAgent()));
  const answers = await Promise.all(enrolled.map((a) => FakeAgent.connect(fx.url, a.agentId, a.key)));
  const refused = answers.filter((a) => a.error !== undefined);
  t.equal(answers.filter((a) => a.welcome).length, 2, 'two of five welcomed');
  t.equal(refused.length, 3, 'three of five refused');
  for (const { error } of refused) {
    t.equal(error?.key, 'overloaded');
    t.ok((error?.retry_after_ms ?? 0) >= 250, `retry_after_ms given (${error?.retry_after_ms})`);
  }
  for (const { agent } of refused) t.equal((await agent.closed).code, HUB_CLOSE.overloaded);
  t.equal(fx.hub.stats().refusedOverloaded, 3);
  t.same(refusals(fx), { overloaded: 3 });
  for (const { agent } of answers) agent.kill();
});

t.test('malformed and unknown frames are answered, then the connection is closed with a reason', async (t) => {
  const fx = await startHub({ maxInvalidFrames: 3 });
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  agent.sendRaw('{not json');
  t.equal(((await agent.next('error')) as MessageOf<'error'>).key, 'malformed_json');
  agent.send({ protocol: PROTOCOL_VERSION, type: 'launch_missiles' });
  t.equal(((await agent.next('error')) as MessageOf<'error'>).key, 'unknown_type');
  t.equal(agent.ws.readyState, WebSocket.OPEN, 'still open after two bad frames');
  // Binary frames are shell channel frames: three junk bytes do not decode as one.
  agent.sendRaw(Buffer.from([0xff, 0xfe, 0x00]));
  const closed = await agent.closed;
  t.equal(closed.code, HUB_CLOSE.policy);
  t.equal(closed.reason, 'schema_violation');
  // The hub still serves others.
  const again = await FakeAgent.connect(fx.url, agentId, key);
  t.ok(again.welcome);
  await again.agent.close();
  t.same(refusals(fx), {}, 'bad frames on an open connection are not handshake refusals');
});

t.test('frames still in flight when the hub closes for abuse are not handled', async (t) => {
  const fx = await startHub({ maxInvalidFrames: 3 });
  t.teardown(() => fx.close());
  const { agentId, key } = await fx.addAgent();
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  const before = fx.hub.stats().invalidFrames;
  for (let i = 0; i < 8; i++) agent.sendRaw('{bad');
  const closed = await agent.closed;
  t.equal(closed.code, HUB_CLOSE.policy);
  t.equal(fx.hub.stats().invalidFrames - before, 3, 'only the frames up to the limit were handled');
});

t.test('a frame before hello or an oversized frame closes the socket without harming the hub', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const early = await FakeAgent.open(fx.url);
  early.send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: 1 });
  t.equal((await early.closed).code, HUB_CLOSE.policy);
  t.same(refusals(fx), { protocol: 1 });

  const { agentId, key } = await fx.addAgent();
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  agent.sendRaw('x'.repeat(MAX_FRAME_BYTES + 1));
  t.equal((await agent.closed).code, 1009, 'ws closes with 1009 message too big');
  await until(async () => (await fx.store.agents.get(agentId))?.state === 'disconnected', 30_000, 'disconnected');
  const again = await FakeAgent.connect(fx.url, agentId, key);
  t.ok(again.welcome, 'the hub survived');
  await again.agent.close();
});

t.test('a client that never says hello is dropped after the handshake timeout', async (t) => {
  const fx = await startHub({ handshakeTimeoutMs: 200 });
  t.teardown(() => fx.close());
  const agent = await FakeAgent.open(fx.url);
  const err = (await agent.next('error')) as MessageOf<'error'>;
  t.equal(err.key, 'handshake_timeout');
  t.equal((await agent.closed).code, HUB_CLOSE.handshakeTimeout);
  t.same(refusals(fx), { handshake_timeout: 1 });
});

t.test('other upgrade paths get a 404', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  await t.rejects(FakeAgent.open(fx.url.replace('/agent/v1/connect', '/nope')), /HTTP 404/);
});

t.test('closing the hub marks every agent disconnected and closes sockets with 1001', async (t) => {
  const fx = await startHub();
  const a = await fx.addAgent();
  const b = await fx.addAgent();
  const ca = await FakeAgent.connect(fx.url, a.agentId, a.key);
  const cb = await FakeAgent.connect(fx.url, b.agentId, b.key);
  await fx.close();
  const told = (await ca.agent.next('error')) as MessageOf<'error'>;
  t.equal(told.key, 'shutting_down');
  t.ok((told.retry_after_ms ?? 0) >= 1_000, `agents are told when to come back (${told.retry_after_ms} ms)`);
  t.equal((await ca.agent.closed).code, HUB_CLOSE.shutdown);
  t.equal((await cb.agent.closed).code, HUB_CLOSE.shutdown);
  t.equal((await fx.store.agents.get(a.agentId))?.state, 'disconnected');
  t.equal((await fx.store.agents.get(b.agentId))?.state, 'disconnected');
});

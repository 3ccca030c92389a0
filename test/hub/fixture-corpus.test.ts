import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { WebSocket } from 'ws';
import { PROTOCOL_VERSION, encodePublicKey, parseAgentMessage, parseMessage } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { HUB_CLOSE } from '../../control-plane/src/hub/agent-hub.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { fixtureFrame, messageFixtures } from '../helpers/fixtures.ts';
import type { MessageFixture } from '../helpers/fixtures.ts';
import { FakeAgent } from './fake-agent.ts';

/**
 * The shared message corpus (test/fixtures/messages) against the real control plane:
 * an enrolled agent that completed the real handshake sends every frame an agent must
 * not send, and every agent message type, over /agent/v1/connect.
 *
 * What the hub does (AgentHub, maxInvalidFrames 5 in the app):
 * - a frame parseAgentMessage refuses is answered `error {key: <parse error kind>,
 *   message: <the parser's message>}` and the connection is kept, up to 4 per
 *   connection; the 5th is answered `error {key: <kind>, message: "too many invalid
 *   frames; last: ..."}` and the socket is closed 1008 with the kind as the reason;
 * - server-only types (command, challenge, welcome, result_ack) are `unknown_type` on
 *   the hub's side, whatever the corpus says about them on the other side;
 * - a second hello on an authenticated connection is `unexpected_message` (counts as invalid);
 * - heartbeat is answered with a heartbeat; ack and progress for an unknown command are
 *   logged and dropped; a result for an unknown command is acknowledged (`result_ack`)
 *   and dropped, nothing stored; an agent `error` is logged, nothing answered.
 */

const MAX_INVALID_FRAMES = 5;
const CMD_ID = 'cmd_01jx4n8rz3q5m7k2p0d6w9b1e0';

interface Enrolled {
  instanceId: string;
  agentId: string;
  key: KeyObject;
}

async function enroll(cp: TestControlPlane, name: string): Promise<Enrolled> {
  const inst = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name } });
  if (inst.status !== 201) throw new Error(`POST /api/instances: ${inst.status}`);
  const tok = await cp.api<{ token: string }>('POST', `/api/instances/${inst.body.id}/enrollment-token`);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const e = await cp.api<{ agent_id: string }>('POST', '/api/agents/enroll', {
    key: null,
    body: { token: tok.body.token, public_key: encodePublicKey(publicKey), hostname: name, os: 'test', agent_version: 'test' },
  });
  if (e.status !== 201) throw new Error(`enroll: ${e.status} ${JSON.stringify(e.body)}`);
  return { instanceId: inst.body.id, agentId: e.body.agent_id, key: privateKey };
}

const connectUrl = (cp: TestControlPlane) => `${cp.url.replace('http:', 'ws:')}/agent/v1/connect`;

async function connect(cp: TestControlPlane, a: Enrolled): Promise<FakeAgent> {
  const { agent, welcome, error } = await FakeAgent.connect(connectUrl(cp), a.agentId, a.key);
  if (!welcome) throw new Error(`handshake refused: ${JSON.stringify(error)}`);
  return agent;
}

/** A connected agent that answers every command as the real agent answers a ping. */
async function bystander(cp: TestControlPlane, a: Enrolled): Promise<FakeAgent> {
  const agent = await connect(cp, a);
  agent.ws.on('message', (data: Buffer) => {
    const parsed = parseMessage(data);
    if (!parsed.ok || parsed.message.type !== 'command') return;
    const id = parsed.message.envelope.id;
    if (typeof id !== 'string') return;
    agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: id });
    agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
  });
  return agent;
}

async function healthy(cp: TestControlPlane): Promise<number> {
  return (await cp.api('GET', '/healthz', { key: null })).status;
}

async function agentState(cp: TestControlPlane, instanceId: string): Promise<string | undefined> {
  return (await cp.api<{ agent: { state: string } | null }>('GET', `/api/instances/${instanceId}`)).body.agent?.state;
}

/** Frames an agent must never send: the invalid corpus and the server-only valid fixtures. */
function forbiddenFrames(): MessageFixture[] {
  const serverOnly = messageFixtures('valid').filter((fx) => fx.direction === 'server' && !parseAgentMessage(fixtureFrame(fx)).ok);
  return [...messageFixtures('invalid'), ...serverOnly];
}

t.test('the corpus covers what this file relies on', async (t) => {
  const serverOnly = messageFixtures('valid')
    .filter((fx) => fx.direction === 'server' && !parseAgentMessage(fixtureFrame(fx)).ok)
    .map((fx) => fx.name);
  t.same(serverOnly, ['challenge.json', 'command-agent-update.json', 'command-ping-batch.json', 'command-ping.json', 'result_ack.json', 'welcome.json'], 'the four server-only types (three commands)');
  t.ok(messageFixtures('invalid').length >= 20, 'the invalid corpus is not empty');
});

t.test('every frame an agent must not send is answered with an error naming it, the 5th on a connection closes it 1008, and the control plane keeps serving', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const abuser = await enroll(cp, 'abuser');
  const other = await enroll(cp, 'bystander');
  const still = await bystander(cp, other);

  const frames = forbiddenFrames();
  let conn = await connect(cp, abuser);
  let onThisConnection = 0;
  let connections = 1;
  for (const [i, fx] of frames.entries()) {
    const frame = fixtureFrame(fx);
    const verdict = parseAgentMessage(frame);
    if (verdict.ok) throw new Error(`${fx.name} parses on the hub's side`);
    const kind = verdict.error.kind;
    if (fx.expect.ok) t.equal(kind, 'unknown_type', `${fx.name}: a server-only type is unknown to the hub`);
    else if (fx.direction === 'server') t.equal(kind, 'unknown_type', `${fx.name}: a server-direction frame is unknown_type on the hub (the agent's parser says ${fx.expect.kind})`);
    else t.equal(kind, fx.expect.kind, `${fx.name}: the hub's parser agrees with the corpus`);

    conn.sendRaw(frame);
    onThisConnection++;
    const err = (await conn.next('error')) as MessageOf<'error'>;
    t.equal(err.key, kind, `${fx.name}: error key ${kind}`);
    t.notOk(err.command_id, `${fx.name}: no command id`);
    if (onThisConnection < MAX_INVALID_FRAMES) {
      t.equal(err.message, verdict.error.message, `${fx.name}: the message is the parser's explanation`);
      t.equal(conn.ws.readyState, WebSocket.OPEN, `${fx.name}: connection kept (${onThisConnection} bad frames)`);
    } else {
      t.equal(err.message, `too many invalid frames; last: ${verdict.error.message}`, `${fx.name}: the last straw says so`);
      const closed = await conn.closed;
      t.same(closed, { code: HUB_CLOSE.policy, reason: kind }, `${fx.name}: closed 1008 with reason ${kind}`);
    }
    const last = i === frames.length - 1;
    if (onThisConnection === MAX_INVALID_FRAMES - 1 || last) {
      // Still a working connection: a heartbeat is answered.
      if (conn.ws.readyState === WebSocket.OPEN) {
        conn.send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
        t.equal((await conn.next('heartbeat')).type, 'heartbeat', `after ${onThisConnection} bad frames the connection still answers heartbeats`);
      }
    }
    if (onThisConnection === MAX_INVALID_FRAMES) {
      t.equal(await healthy(cp), 200, 'GET /healthz still 200');
      t.equal(still.ws.readyState, WebSocket.OPEN, 'the other agent stays connected');
      t.ok(cp.ctx.hub?.isConnected(other.agentId), 'the hub still holds the other agent');
      if (!last) {
        conn = await connect(cp, abuser);
        connections++;
        onThisConnection = 0;
      }
    }
  }
  t.same(conn.received, [], 'no frame left unexplained on the last connection');
  t.ok(connections >= Math.floor(frames.length / MAX_INVALID_FRAMES), `${frames.length} frames over ${connections} connections`);
  t.equal(cp.ctx.hub?.stats().invalidFrames, frames.length, 'every frame counted as invalid');

  // The control plane keeps serving both agents.
  t.equal(await healthy(cp), 200, 'GET /healthz 200 after the whole corpus');
  const bus = cp.ctx.commandBus;
  if (!bus) throw new Error('no command bus');
  const pong = await bus.send(other.agentId, 'ping', {}, { timeoutMs: 5_000 });
  t.equal(pong.status, 'succeeded', 'the other agent still receives a ping through the command bus');
  t.same(pong.output, { pong: true }, 'with its answer');
  t.equal(still.ws.readyState, WebSocket.OPEN, 'and is still connected');
  if (conn.ws.readyState !== WebSocket.OPEN) conn = await connect(cp, abuser);
  t.equal(await agentState(cp, abuser.instanceId), 'connected', 'the abuser itself may connect again');
  await conn.close();
  await still.close();
});

t.test('each agent message type from the corpus gets its documented treatment on one connection', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const a = await enroll(cp, 'valid-frames');
  const conn = await connect(cp, a);
  const valid = new Map(messageFixtures('valid').map((fx) => [fx.name, fx]));
  const frame = (name: string) => {
    const fx = valid.get(name);
    if (!fx) throw new Error(`fixture ${name} missing`);
    if (!parseAgentMessage(fixtureFrame(fx)).ok) throw new Error(`${name} is not an agent message`);
    return fixtureFrame(fx);
  };
  /** Sends a heartbeat and returns every frame received up to its answer. */
  const settle = async () => {
    conn.send({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() });
    await conn.next('heartbeat');
    return conn.received.splice(0);
  };

  conn.sendRaw(frame('heartbeat.json'));
  const beat = (await conn.next('heartbeat')) as MessageOf<'heartbeat'>;
  t.ok(beat.sent_at > 1764000015000, 'heartbeat answered with the hub’s own time');

  // The bus handles one agent's replies asynchronously but in arrival order: once the
  // result sent after them is acknowledged, any answer to ack or progress would be here.
  conn.sendRaw(frame('ack.json'));
  conn.sendRaw(frame('progress.json'));
  for (const name of ['result-succeeded.json', 'result-refused.json']) {
    conn.sendRaw(frame(name));
    const ack = (await conn.next('result_ack')) as MessageOf<'result_ack'>;
    t.equal(ack.command_id, CMD_ID, `${name}: acknowledged so the agent can forget it`);
    t.same(await settle(), [], name === 'result-succeeded.json' ? 'ack and progress for an unknown command are dropped without an answer; the result gets nothing else' : `${name}: nothing else`);
  }
  t.equal(await cp.ctx.commandBus?.get(CMD_ID), undefined, 'a result for a command the hub never sent is not stored');

  // The hub handles an agent's error report at once, before the probe's heartbeat.
  conn.sendRaw(frame('error-backoff.json'));
  t.same(await settle(), [], 'an agent error report is logged, not answered');

  conn.sendRaw(frame('hello.json'));
  const err = (await conn.next('error')) as MessageOf<'error'>;
  t.same({ key: err.key, message: err.message }, { key: 'unexpected_message', message: 'this connection is already authenticated' }, 'a second hello is refused');
  t.equal(cp.ctx.hub?.stats().invalidFrames, 1, 'and counted as one invalid frame');

  t.equal(conn.ws.readyState, WebSocket.OPEN, 'the connection survives all of it');
  t.equal(await agentState(cp, a.instanceId), 'connected', 'the API shows the agent connected');
  t.equal(await healthy(cp), 200, 'GET /healthz 200');
  await conn.close();
});

t.test('a corpus frame sent before hello ends the handshake with 1008 and the kind as the key', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const a = await enroll(cp, 'early');
  const cases: [string, string, string, string][] = [];
  for (const fx of [...messageFixtures('invalid'), ...messageFixtures('valid')]) {
    const frame = fixtureFrame(fx);
    const verdict = parseAgentMessage(frame);
    if (!verdict.ok) cases.push([fx.name, frame, verdict.error.kind, `handshake expected a hello: ${verdict.error.message}`]);
    else if (verdict.message.type !== 'hello') cases.push([fx.name, frame, 'handshake_required', `expected hello, got ${verdict.message.type}`]);
  }
  t.ok(cases.length >= 30, `${cases.length} early frames`);
  // Each on its own socket, a few at a time (a real handshake each: challenge first).
  for (let i = 0; i < cases.length; i += 8) {
    await Promise.all(
      cases.slice(i, i + 8).map(async ([name, frame, key, message]) => {
        const conn = await FakeAgent.open(connectUrl(cp));
        await conn.next('challenge');
        conn.sendRaw(frame);
        const err = (await conn.next('error')) as MessageOf<'error'>;
        t.same({ key: err.key, message: err.message }, { key, message }, `${name}: error ${key}`);
        t.same(await conn.closed, { code: HUB_CLOSE.policy, reason: key }, `${name}: closed 1008 (${key})`);
      }),
    );
  }
  t.equal(cp.ctx.hub?.stats().handshaking, 0, 'no half-open handshake left behind');
  t.equal(await healthy(cp), 200, 'GET /healthz 200');
  const conn = await connect(cp, a);
  t.pass('a proper handshake still works');
  await conn.close();
});

import t from 'tap';
import type { Test } from 'tap';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { parseServerMessage } from '@vmkit/protocol';
import { FakeHub } from '../helpers/fake-hub.ts';
import { fixtureFrame, fixtureKey, messageFixtures } from '../helpers/fixtures.ts';
import type { MessageFixture } from '../helpers/fixtures.ts';
import { enrolledAgent } from './agent-process.ts';
import type { AgentProcess, EnrolledAgent } from './agent-process.ts';

/**
 * The shared message corpus (test/fixtures/messages) against a real vmkit-agent
 * process, sent by the agent engineer's fake hub after a real handshake.
 *
 * What the agent does (vmkit-agent/src/connection.ts, dispatcher.ts):
 * - once welcomed, a frame parseServerMessage refuses (every invalid fixture, and the
 *   agent-only types hello/ack/progress/result, which are `unknown_type` on its side)
 *   is logged `warn frame refused {"kind",...}` and answered `error {key:
 *   "invalid_request", message: "frame refused (<kind>): <parser message>"}`; the
 *   connection is kept, however many arrive;
 * - before the welcome, the same frame in place of the challenge makes it close 1002
 *   `handshake frame refused: <kind>` and dial again by itself;
 * - the stored signed ping (command-ping.json) is verified over its canonical bytes and
 *   refused with a `result {status: "refused", error.key: "wrong_agent"}` by any other
 *   agent, `expired` by the agent it names; never acked, never run.
 */

const FIXTURE_AGENT = 'agt_01jx4n8rz3q5m7k2p0d6w9b1e1';
const FIXTURE_CMD = 'cmd_01jx4n8rz3q5m7k2p0d6w9b1e0';

function fixture(name: string): MessageFixture {
  const fx = messageFixtures('valid').find((f) => f.name === name);
  if (!fx) throw new Error(`fixture ${name} missing`);
  return fx;
}

/** Frames a hub must never send: the invalid corpus and the agent-only valid fixtures. */
function forbiddenFrames(): MessageFixture[] {
  const agentOnly = messageFixtures('valid').filter((fx) => fx.direction === 'agent');
  return [...messageFixtures('invalid'), ...agentOnly];
}

/** The kind the agent's own parser gives, checked against what the corpus says. */
function expectedKind(t: Test, fx: MessageFixture): { kind: string; message: string } {
  const verdict = parseServerMessage(fixtureFrame(fx));
  if (verdict.ok) throw new Error(`${fx.name} parses on the agent's side`);
  if (fx.expect.ok || fx.direction === 'agent') t.equal(verdict.error.kind, 'unknown_type', `${fx.name}: an agent-only type is unknown to the agent`);
  else t.equal(verdict.error.kind, fx.expect.kind, `${fx.name}: the agent's parser agrees with the corpus (${fx.expect.kind})`);
  return verdict.error;
}

const executions = (proc: AgentProcess) => proc.lines(/^info executing command/).length;

async function connectedAgent(t: Test, setup?: (hub: FakeHub, agent: EnrolledAgent) => void) {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  agent.patchConfig({ log_level: 'debug' });
  setup?.(hub, agent);
  const proc = agent.start();
  const conn = await hub.waitForConnection();
  return { hub, agent, proc, conn };
}

t.test('every frame a hub must not send is logged, answered invalid_request, and the agent stays connected and runs nothing', async (t) => {
  const { hub, proc, conn } = await connectedAgent(t);
  const frames = forbiddenFrames();
  t.ok(frames.length >= 28, `${frames.length} frames`);
  for (const fx of frames) {
    const { kind, message } = expectedKind(t, fx);
    const before = hub.messagesOf('error').length;
    const logged = proc.lines(/^warn frame refused /).length;
    hub.sendRaw(fixtureFrame(fx), conn);
    const answer = await hub.waitFor(() => hub.messagesOf('error')[before], `the agent's answer to ${fx.name}`, 5_000);
    t.same(
      { key: answer.key, message: answer.message, command_id: answer.command_id },
      { key: 'invalid_request', message: `frame refused (${kind}): ${message}`.slice(0, 2048), command_id: undefined },
      `${fx.name}: answered invalid_request naming ${kind}`,
    );
    const lines = proc.lines(/^warn frame refused /);
    t.equal(lines.length, logged + 1, `${fx.name}: logged once`);
    t.match(lines[logged] ?? '', `"kind":"${kind}"`, `${fx.name}: the log names ${kind}`);
  }
  // Frames a hub may send but that mean nothing here: ignored, the handshake ones with a warning.
  for (const name of ['challenge.json', 'welcome.json', 'result_ack.json', 'heartbeat.json']) hub.sendRaw(fixtureFrame(fixture(name)), conn);
  await hub.waitFor(() => proc.lines(/^debug result_ack for nothing pending/).length === 1, 'the stray result_ack handled', 5_000);
  t.same(
    proc.lines(/^warn unexpected handshake message ignored/).map((l) => /"type":"(\w+)"/.exec(l)?.[1]),
    ['challenge', 'welcome'],
    'a challenge or welcome after the handshake is ignored with a warning',
  );
  t.match(proc.lines(/^debug result_ack for nothing pending/)[0] ?? '', FIXTURE_CMD, 'a result_ack for nothing is a debug line');

  // Still the same connection, still beating.
  const beats = conn.messages.filter((m) => m.type === 'heartbeat').length;
  await hub.waitFor(() => conn.messages.filter((m) => m.type === 'heartbeat').length >= beats + 2, 'two more heartbeats', 5_000);
  t.ok(proc.alive, 'the agent process is alive');
  t.equal(hub.connections.length, 1, 'never reconnected');
  t.equal(conn.closedAt, undefined, 'the first connection is still open');
  t.equal(hub.messagesOf('error').length, frames.length, 'exactly one answer per bad frame, none for the harmless ones');
  t.equal(executions(proc), 0, 'nothing executed');
  t.same([hub.messagesOf('ack'), hub.messagesOf('progress'), hub.messagesOf('result')], [[], [], []], 'no ack, progress or result was sent');
  t.same(proc.lines(/^error /), [], 'no error-level log line');
});

t.test('the stored signed ping fixture is verified over its canonical bytes and refused wrong_agent by another agent', async (t) => {
  const { hub, agent, proc, conn } = await connectedAgent(t);
  const cp = fixtureKey('control_plane');
  t.equal(hub.signingKey.keyId, cp.keyId, 'the fake hub signs with the fixture control_plane key');
  t.same(agent.config().signing_keys, [{ key_id: cp.keyId, public_key: cp.publicKey }], 'the agent pinned exactly that key at enrollment');
  const fx = fixture('command-ping.json');
  t.equal((fx.frame as { envelope: { key_id: string } }).envelope.key_id, cp.keyId, 'the stored command names that key');
  t.not(agent.agentId, FIXTURE_AGENT, 'and this agent is not the one it is addressed to');
  hub.sendRaw(fixtureFrame(fx), conn);
  const r = await hub.waitForResult(FIXTURE_CMD);
  t.same(
    { status: r.status, error: r.error },
    { status: 'refused', error: { key: 'wrong_agent', message: `addressed to ${FIXTURE_AGENT}` } },
    'refused wrong_agent: the signature verified first (a canonicalisation mismatch would be bad_signature)',
  );
  t.equal(proc.lines(new RegExp(`^warn command refused .*"command_id":"${FIXTURE_CMD}".*"reason":"wrong_agent"`)).length, 1, 'refusal logged');

  // The same envelope with its keys in another order and other whitespace: RFC 8785
  // canonical bytes are the same, so the signature still verifies.
  const frame = fx.frame as { envelope: Record<string, unknown>; signature: string };
  const reordered = Object.fromEntries(Object.entries(frame.envelope).reverse());
  hub.sendRaw(JSON.stringify({ signature: frame.signature, envelope: reordered, type: 'command', protocol: 1 }, null, 3), conn);
  const r2 = await hub.waitForResult(FIXTURE_CMD, 2);
  t.equal(r2.error?.key, 'wrong_agent', 'key order and whitespace do not change what is signed');

  // Control: one envelope field changed after signing is bad_signature.
  hub.sendRaw(JSON.stringify({ ...frame, envelope: { ...frame.envelope, expires_at: (frame.envelope.expires_at as number) + 1 } }), conn);
  const r3 = await hub.waitForResult(FIXTURE_CMD, 3);
  t.same({ status: r3.status, key: r3.error?.key }, { status: 'refused', key: 'bad_signature' }, 'a tampered copy is bad_signature');

  t.same(hub.messagesOf('ack'), [], 'never acked');
  t.equal(executions(proc), 0, 'nothing executed');
  t.equal(hub.connections.length, 1, 'same connection throughout');
  t.ok(proc.alive, 'the agent process is alive');
});

t.test('the agent the stored ping is addressed to refuses it as expired', async (t) => {
  const { hub, proc, conn } = await connectedAgent(t, (h, agent) => {
    // Give this agent the fixture's id: the fake hub registers its key under that id too.
    const reg = h.agents.get(agent.agentId);
    if (!reg) throw new Error('agent not registered');
    h.agents.delete(agent.agentId);
    h.agents.set(FIXTURE_AGENT, { ...reg, agentId: FIXTURE_AGENT });
    agent.patchConfig({ agent_id: FIXTURE_AGENT });
  });
  t.equal(conn.agentId, FIXTURE_AGENT, 'connected as the fixture agent');
  hub.sendRaw(fixtureFrame(fixture('command-ping.json')), conn);
  const r = await hub.waitForResult(FIXTURE_CMD);
  t.equal(r.status, 'refused', 'answered with a refused result');
  t.equal(r.error?.key, 'expired', 'signature and addressee pass; only the fixed 2025 time fails');
  t.match(r.error?.message, /^expired \d+ ms ago$/, 'the message says how long ago');
  const expiresAt = 1764000300000;
  const agoMs = Number(/(\d+)/.exec(r.error?.message ?? '')?.[1]);
  t.ok(Math.abs(r.finished_at - expiresAt - agoMs) < 5_000, 'the age is measured against the envelope’s expires_at');
  t.same(hub.messagesOf('ack'), [], 'never acked');
  t.equal(executions(proc), 0, 'nothing executed');
  t.ok(proc.alive, 'the agent process is alive');
});

t.test('a corpus frame in place of the challenge makes the agent close 1002 and dial again by itself', async (t) => {
  const frames = forbiddenFrames();
  const closes: { code: number; reason: string }[] = [];
  let dials = 0;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  t.teardown(() => new Promise<void>((resolve) => {
    for (const c of wss.clients) c.terminate();
    wss.close(() => resolve());
  }));
  wss.on('connection', (ws) => {
    const fx = frames[dials++];
    ws.on('error', () => undefined);
    ws.on('close', (code, reason) => closes.push({ code, reason: reason.toString('utf8') }));
    if (fx) ws.send(fixtureFrame(fx));
  });
  const { port } = wss.address() as AddressInfo;

  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  // Fast redials, so 29 refused handshakes take a couple of seconds.
  agent.patchConfig({
    connect_url: `ws://127.0.0.1:${port}/agent/v1/connect`,
    reconnect: { base_ms: 10, cap_ms: 50, stable_ms: 1000, handshake_timeout_ms: 3000 },
  });
  const proc = agent.start();
  await hub.waitFor(() => closes.length >= frames.length || undefined, `${frames.length} closes`, 30_000);
  for (const [i, fx] of frames.entries()) {
    const { kind } = expectedKind(t, fx);
    t.same(closes[i], { code: 1002, reason: `handshake frame refused: ${kind}` }, `${fx.name}: closed 1002 (${kind})`);
  }
  await hub.waitFor(() => dials > frames.length || undefined, 'one more dial', 5_000);
  t.ok(dials > frames.length, `dialled again after the last refusal (${dials} dials)`);
  t.ok(proc.alive, 'the agent process is alive');
  t.ok(proc.lines(/^warn frame refused /).length >= frames.length, 'each refusal logged');
  t.equal(executions(proc), 0, 'nothing executed');
});

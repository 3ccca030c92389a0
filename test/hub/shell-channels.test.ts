import t from 'tap';
import type { Test } from 'tap';
import { PROTOCOL_VERSION, SHELL_INITIAL_WINDOW, SHELL_MAX_DATA_BYTES, decodeShellFrame, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { MessageOf, ShellFrame } from '@vmkit/protocol';
import { ApiError } from '../../control-plane/src/errors.ts';
import { HubShellOpener } from '../../control-plane/src/hub/shell-opener.ts';
import type { ShellChannel, ShellExit } from '../../control-plane/src/shell/channel.ts';
import { shellFrameFixtures } from '../helpers/fixtures.ts';
import { FakeAgent } from './fake-agent.ts';
import { startHub, until } from './hub-setup.ts';
import type { HubFixture } from './hub-setup.ts';

/** The hub's half of the shell: channel routing and flow control, with agents built from the protocol. */

async function rig(t: Test, maxInvalidFrames = 5) {
  const fx = await startHub({ heartbeatIntervalMs: 60_000, maxInvalidFrames });
  t.teardown(() => fx.close());
  const opener = new HubShellOpener({ hub: fx.hub, bus: fx.bus, openTimeoutMs: 10_000 });
  return { fx, opener, connect: () => connectAgent(t, fx) };
}

async function connectAgent(t: Test, fx: HubFixture) {
  const { agentId, key } = await fx.addAgent();
  const { agent } = await FakeAgent.connect(fx.url, agentId, key);
  t.teardown(() => agent.kill());
  await until(() => fx.hub.isConnected(agentId), 10_000, 'agent connected');
  return { agentId, agent };
}

type Answer = { ok: true } | { ok: false; key: string; message: string };

/** Opens a channel; the fake agent answers the signed shell.open as told. */
async function open(opener: HubShellOpener, a: { agentId: string; agent: FakeAgent }, answer: Answer = { ok: true }, command?: string) {
  const opening = opener.open({ agentId: a.agentId, cols: 80, rows: 24, term: 'xterm-256color', ...(command === undefined ? {} : { command }) });
  const cmd = (await a.agent.next('command')) as MessageOf<'command'>;
  const env = cmd.envelope as { id: string; type: string; params: { channel: number; command?: string } };
  const base = { protocol: PROTOCOL_VERSION, type: 'result' as const, command_id: env.id, finished_at: Date.now() };
  a.agent.send(
    answer.ok
      ? { ...base, status: 'succeeded', output: { channel: env.params.channel, pid: 4242, user: 'root', window: SHELL_INITIAL_WINDOW } }
      : { ...base, status: 'failed', error: { key: answer.key, message: answer.message } },
  );
  return { opening, envelope: env };
}

function collect(ch: ShellChannel, hold = false) {
  const chunks: Buffer[] = [];
  const dones: (() => void)[] = [];
  let exit: ShellExit | undefined;
  ch.onData((chunk, done) => {
    chunks.push(Buffer.from(chunk));
    if (hold) dones.push(done);
    else done();
  });
  ch.onExit((e) => (exit = e));
  return {
    chunks,
    dones,
    bytes: () => Buffer.concat(chunks),
    exit: () => exit,
    release: () => dones.splice(0).forEach((d) => d()),
  };
}

const frames = (agent: FakeAgent): ShellFrame[] => agent.binary.map((b) => decodeShellFrame(b)).flatMap((r) => (r.ok ? [r.frame] : []));
const closeFrame = (channel: number, reason: 'exit' | 'error', code: number | null, signal: string | null = null, message = '') =>
  encodeShellFrame({ kind: 'close', channel, reason, code, signal, message });

t.test('the agent is sent a signed shell.open naming the channel, and its bytes reach that channel untouched', async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  const { opening, envelope } = await open(opener, a, { ok: true }, 'uptime');
  t.equal(envelope.type, 'shell.open');
  t.equal(envelope.params.command, 'uptime');
  const ch = await opening;
  t.equal(ch.id, envelope.params.channel, 'the channel the command named');
  const got = collect(ch);
  const bytes = Buffer.from([0x68, 0x69, 0x0d, 0x0a, 0xff, 0x00, 0xe2, 0x82]);
  a.agent.sendRaw(encodeShellData(ch.id, bytes));
  a.agent.sendRaw(closeFrame(ch.id, 'exit', 0));
  await until(() => got.exit() !== undefined, 10_000, 'exit');
  t.ok(got.bytes().equals(bytes), 'the same bytes, not interpreted');
  t.same(got.exit(), { code: 0, signal: null, reason: 'exit' });
});

t.test('output and exit that race ahead of the open result are kept and delivered in order', async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  const opening = opener.open({ agentId: a.agentId, cols: 80, rows: 24, term: 'xterm', command: 'echo hi' });
  const cmd = (await a.agent.next('command')) as MessageOf<'command'>;
  const env = cmd.envelope as { id: string; params: { channel: number } };
  a.agent.sendRaw(encodeShellData(env.params.channel, Buffer.from('hi\r\n')));
  a.agent.sendRaw(closeFrame(env.params.channel, 'exit', 3));
  a.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: env.id, status: 'succeeded', output: { channel: env.params.channel, pid: 1, user: 'root', window: SHELL_INITIAL_WINDOW }, finished_at: Date.now() });
  const ch = await opening;
  const order: string[] = [];
  ch.onData((c, done) => {
    order.push(`data:${c.toString()}`);
    done();
  });
  ch.onExit((e) => order.push(`exit:${e.code ?? 'null'}`));
  t.same(order, ['data:hi\r\n', 'exit:3']);
});

t.test('frames for unknown or foreign channels, or that do not decode, are dropped and counted', async (t) => {
  const { fx, opener, connect } = await rig(t, 1_000);
  const a = await connect();
  const b = await connect();
  const chA = await (await open(opener, a)).opening;
  const gotA = collect(chA);
  const before = fx.hub.channels.stats();

  b.agent.sendRaw(encodeShellData(chA.id, Buffer.from('not yours')));
  await until(() => fx.hub.channels.stats().droppedForeign === before.droppedForeign + 1, 10_000, 'foreign frame counted');
  t.equal(gotA.chunks.length, 0, "another agent's frame never reaches the channel");

  const unknown = (chA.id % 1000) + 2_000_000_000;
  a.agent.sendRaw(encodeShellData(unknown, Buffer.from('nobody')));
  await until(() => fx.hub.channels.stats().droppedUnknown === before.droppedUnknown + 1, 10_000, 'unknown frame counted');

  // resize and eof are the hub's to send, never an agent's.
  a.agent.sendRaw(encodeShellFrame({ kind: 'resize', channel: chA.id, cols: 10, rows: 10 }));
  await until(() => fx.hub.channels.stats().droppedInvalid === before.droppedInvalid + 1, 10_000, 'wrong-direction frame counted');
  t.equal(fx.hub.stats().channelFramesDropped, 3, 'the hub stats say how many were dropped');

  // Frames that do not decode are invalid frames: answered, counted, the connection kept (below the limit).
  const invalidBefore = fx.hub.stats().invalidFrames;
  const invalid = shellFrameFixtures('invalid');
  for (const fxCase of invalid) a.agent.sendRaw(Buffer.from(fxCase.hex, 'hex'));
  await until(() => fx.hub.stats().invalidFrames === invalidBefore + invalid.length, 10_000, 'undecodable frames counted');
  const answer = (await a.agent.next('error')) as MessageOf<'error'>;
  t.equal(answer.key, 'schema_violation');
  t.match(answer.message, /binary frame refused/);
  t.ok(fx.hub.isConnected(a.agentId) && fx.hub.isConnected(b.agentId), 'neither agent is disconnected for it');
  t.equal(gotA.chunks.length, 0);
});

t.test('when an agent disconnects every channel of it ends with agent_disconnected; other agents keep theirs', async (t) => {
  const { fx, opener, connect } = await rig(t);
  const a = await connect();
  const b = await connect();
  const a1 = collect(await (await open(opener, a)).opening);
  const a2 = collect(await (await open(opener, a)).opening);
  const b1 = collect(await (await open(opener, b)).opening);
  t.equal(fx.hub.stats().channelsOpen, 3);
  a.agent.kill();
  await until(() => a1.exit() !== undefined && a2.exit() !== undefined, 10_000, 'channels of a ended');
  t.equal(a1.exit()?.reason, 'agent_disconnected');
  t.equal(a2.exit()?.reason, 'agent_disconnected');
  t.match(a1.exit()?.message, /agent disconnected/);
  t.equal(b1.exit(), undefined, "b's channel is still open");
  t.equal(fx.hub.stats().channelsOpen, 1);
});

t.test('the hub holds at most the window: an agent sending past it ends the channel with an error', async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  const ch = await (await open(opener, a)).opening;
  const got = collect(ch, true);
  const chunk = Buffer.alloc(SHELL_MAX_DATA_BYTES, 0x61);
  for (let sent = 0; sent < SHELL_INITIAL_WINDOW; sent += chunk.length) a.agent.sendRaw(encodeShellData(ch.id, chunk));
  await until(() => got.bytes().length === SHELL_INITIAL_WINDOW, 10_000, 'a window of data');
  t.equal(got.exit(), undefined, 'a full window is fine');
  a.agent.sendRaw(encodeShellData(ch.id, Buffer.from('x')));
  await until(() => got.exit() !== undefined, 10_000, 'channel ended');
  t.equal(got.exit()?.reason, 'error');
  t.match(got.exit()?.message, /past its window/);
  await a.agent.binaryFrame((b) => {
    const f = decodeShellFrame(b);
    return f.ok && f.frame.kind === 'close' && f.frame.reason === 'error';
  });
  t.equal(got.bytes().length, SHELL_INITIAL_WINDOW, 'nothing past the window was delivered');
});

t.test('done() returns credit to the agent for the bytes passed on', async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  const ch = await (await open(opener, a)).opening;
  const got = collect(ch, true);
  const chunk = Buffer.alloc(SHELL_MAX_DATA_BYTES, 0x62);
  const n = SHELL_INITIAL_WINDOW / SHELL_MAX_DATA_BYTES;
  for (let i = 0; i < n; i++) a.agent.sendRaw(encodeShellData(ch.id, chunk));
  await until(() => got.chunks.length === n, 10_000, 'all chunks');
  t.same(frames(a.agent).filter((f) => f.kind === 'credit'), [], 'no credit while the operator side holds the bytes');
  got.release();
  const credited = () =>
    frames(a.agent)
      .filter((f) => f.kind === 'credit')
      .reduce((s, f) => s + (f.kind === 'credit' ? f.bytes : 0), 0);
  // Credit is batched: granted while the agent has less than half a window left.
  await until(() => credited() >= SHELL_INITIAL_WINDOW / 2, 10_000, 'credit');
  t.ok(credited() <= SHELL_INITIAL_WINDOW, `credited ${credited()} bytes: never more than was passed on`);
  t.ok(SHELL_INITIAL_WINDOW - n * chunk.length + credited() >= SHELL_INITIAL_WINDOW / 2, 'the agent may send at least half a window again');
});

t.test('writes towards the agent stop at its window and go on (drain) when it grants credit', async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  const ch = await (await open(opener, a)).opening;
  collect(ch);
  let drained = 0;
  ch.onDrain(() => drained++);
  t.equal(ch.write(Buffer.from('ls\r')), true, 'room left');
  const big = Buffer.alloc(SHELL_INITIAL_WINDOW, 0x63);
  t.equal(ch.write(big), false, 'past the window: wait for drain');
  const dataBytes = () => frames(a.agent).reduce((s, f) => s + (f.kind === 'data' ? f.data.length : 0), 0);
  await until(() => dataBytes() === SHELL_INITIAL_WINDOW, 10_000, 'a window of data at the agent');
  t.equal(drained, 0);
  a.agent.sendRaw(encodeShellFrame({ kind: 'credit', channel: ch.id, bytes: 64 * 1024 }));
  await until(() => drained === 1, 10_000, 'drain');
  await until(() => dataBytes() === SHELL_INITIAL_WINDOW + 3, 10_000, 'the rest');
  t.equal(dataBytes(), 3 + big.length, 'every byte arrived once');
});

t.test('resize, eof and close travel to the agent; close ends with reason closed once the agent confirms', async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  const ch = await (await open(opener, a)).opening;
  const got = collect(ch);
  ch.resize(132, 43);
  ch.eof();
  ch.close('operator left');
  const closeSeen = await a.agent.binaryFrame((b) => {
    const f = decodeShellFrame(b);
    return f.ok && f.frame.kind === 'close';
  });
  const kinds = frames(a.agent).map((f) => f.kind);
  t.same(kinds, ['resize', 'eof', 'close'], 'in order');
  t.same(frames(a.agent)[0], { kind: 'resize', channel: ch.id, cols: 132, rows: 43 });
  const f = decodeShellFrame(closeSeen);
  t.equal(f.ok && f.frame.kind === 'close' ? f.frame.message : '', 'operator left');
  t.equal(ch.write(Buffer.from('x')), false, 'no writes after close');
  a.agent.sendRaw(closeFrame(ch.id, 'exit', null, 'SIGHUP'));
  await until(() => got.exit() !== undefined, 10_000, 'exit');
  t.same(got.exit(), { code: null, signal: 'SIGHUP', reason: 'closed' });
});

t.test("the agent's refusals surface under their own error keys", async (t) => {
  const { opener, connect } = await rig(t);
  const a = await connect();
  for (const key of ['shell_disabled', 'shell_user_refused', 'too_many_sessions']) {
    const { opening } = await open(opener, a, { ok: false, key, message: `refused: ${key}` });
    const err = await opening.then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof ApiError, key);
    t.equal((err as ApiError).key, key);
    t.equal((err as ApiError).message, `refused: ${key}`, "the agent's sentence");
  }
  const gone = await opener.open({ agentId: 'agt_00000000000000000000000000', cols: 80, rows: 24, term: 'xterm' }).catch((e: unknown) => e);
  t.equal((gone as ApiError).key, 'agent_not_connected');
  const bad = await opener.open({ agentId: a.agentId, cols: 80, rows: 24, term: 'xterm', env: { LD_PRELOAD: '/x.so' } }).catch((e: unknown) => e);
  t.equal((bad as ApiError).key, 'invalid_request', 'an env name outside the allowlist');
});

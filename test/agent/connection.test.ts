import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROTOCOL_VERSION, decodePublicKey, verifyHello } from '@vmkit/protocol';
import t from 'tap';
import type { Test } from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { enrolledAgent, runCli } from './agent-process.ts';

async function hubAndAgent(t: Test, reconnect?: Record<string, number>) {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub, reconnect);
  return { hub, agent };
}

t.test('the agent proves its identity with a signature the registered public key verifies', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  const proc = agent.start();
  const conn = await hub.waitForConnection();
  t.equal(conn.helloVerified, true, 'the hub verified the hello');
  const hello = conn.hello;
  if (!hello) throw new Error('no hello');
  t.equal(hello.agent_id, agent.agentId);
  t.equal(hello.nonce, conn.nonce, 'answers this connection\'s challenge');
  const pub = decodePublicKey(readFileSync(join(agent.stateDir, 'agent.pub'), 'utf8').trim());
  t.ok(verifyHello(pub, agent.agentId, conn.nonce, hello.signature), 'signature verifies under the agent key on disk');
  t.notOk(verifyHello(pub, agent.agentId, 'A'.repeat(43), hello.signature), 'and only for this nonce');
  t.equal(hello.agent_version, '0.1.0');
  await proc.waitForLog(/^info connected/);

  const st = await runCli(['status', '--config', agent.configFile]);
  t.equal(st.code, 0, st.stderr);
  t.match(st.stdout, new RegExp(`agent:\\s+${agent.agentId}`));
  t.match(st.stdout, /state:\s+connected since/);
  t.match(st.stdout, /versions:\s+agent 0\.1\.0, protocol 1, node v/);
});

t.test('heartbeats flow at the interval the hub sets', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  const proc = agent.start();
  const conn = await hub.waitForConnection();
  const interval = hub.heartbeatIntervalMs;
  t.match(await proc.waitForLog(/^info connected /), `"heartbeat_ms":${interval}`, 'the agent takes the interval from the welcome');
  const beats = await hub.waitFor(() => {
    const sent = conn.messages.flatMap((m) => (m.type === 'heartbeat' ? [m.sent_at] : []));
    return sent.length >= 6 ? sent : undefined;
  }, '6 heartbeats');
  // The agent's own send times. Timers never fire early, so load can only stretch the
  // span of 5 intervals; the slack absorbs a late first beat. A faster beat fails here.
  const span = (beats[5] ?? 0) - (beats[0] ?? 0);
  t.ok(span >= 3 * interval, `6 heartbeats span ${span} ms: not faster than every ${interval} ms`);
  const pong = new Promise<Buffer>((resolve) => conn.ws.once('pong', resolve));
  conn.ws.ping(Buffer.from('are you there'));
  t.equal((await pong).toString(), 'are you there', 'WebSocket pings are answered');
});

t.test('a hub that goes silent is dropped and redialled', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  const proc = agent.start();
  await hub.waitForConnection();
  hub.silent = true;
  const line = await proc.waitForLog(/hub silent; dropping the connection/);
  const silentMs = Number(/"silent_ms":(\d+)/.exec(line)?.[1]);
  t.ok(silentMs > 3 * hub.heartbeatIntervalMs, `dropped after ${silentMs} ms of silence, more than 3 intervals`);
  hub.silent = false;
  await hub.waitForConnection(2);
  t.equal(hub.welcomed().length, 2, 'redialled and welcomed again');
});

t.test('ping and facts answer with results', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  agent.start();
  await hub.waitForConnection();
  const ping = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(ping);
  const pr = await hub.waitForResult(ping.envelope.id);
  t.equal(pr.status, 'succeeded');
  t.equal(pr.output?.pong, true);
  t.equal(pr.output?.agent_version, '0.1.0');
  t.type(pr.output?.time, 'number');
  t.equal(hub.messagesOf('ack', ping.envelope.id).length, 1, 'acked on receipt');

  const facts = hub.sign(agent.agentId, 'facts', {});
  hub.sendCommand(facts);
  const fr = await hub.waitForResult(facts.envelope.id);
  t.equal(fr.status, 'succeeded');
  const out = fr.output as Record<string, Record<string, unknown>>;
  const { release } = await import('node:os');
  t.equal(out.kernel, release());
  const osRelease = readFileSync('/etc/os-release', 'utf8');
  t.equal(out.os_release?.id, /^ID=(.*)$/m.exec(osRelease)?.[1]?.replace(/"/g, ''));
  t.match(out.users?.root, { exists: true, uid: 0, groups: ['root'] });
  t.hasProp(out.users ?? {}, 'kamal');
  t.hasProp(out.docker ?? {}, 'socket');
  t.hasProp(out.docker ?? {}, 'binary');
  t.match(out.sshd, { present: true, version: /^OpenSSH_/ }, 'sshd -V parsed');
  const progress = hub.messagesOf('progress', facts.envelope.id);
  t.same(progress.map((p) => [p.seq, p.step, p.state]), [[0, 'collect', 'started'], [1, 'collect', 'done']], 'progress streamed in order');

  // The status file follows the result and then the hub's result_ack: wait for both.
  const lastCommand = new RegExp(`last command:\\s+${facts.envelope.id} facts succeeded at `);
  const settled = (out: string): boolean => lastCommand.test(out) && /unacked results:\s+0/.test(out);
  let st = await runCli(['status', '--config', agent.configFile]);
  for (const deadline = Date.now() + 60_000; !settled(st.stdout) && Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 100));
    st = await runCli(['status', '--config', agent.configFile]);
  }
  t.match(st.stdout, lastCommand, 'status names the last command');
  t.match(st.stdout, /unacked results:\s+0/);
});

t.test('unknown message types and malformed frames are answered and the connection survives', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  const proc = agent.start();
  const conn = await hub.waitForConnection();
  hub.sendRaw(JSON.stringify({ protocol: PROTOCOL_VERSION, type: 'shutdown_everything' }));
  hub.sendRaw('this is not json');
  hub.sendRaw(Buffer.from([0xff, 0xfe, 0x00, 0x01]));
  hub.sendRaw(JSON.stringify({ protocol: 99, type: 'command' }));
  hub.sendRaw(JSON.stringify({ protocol: PROTOCOL_VERSION, type: 'command', envelope: { id: 'nope' }, signature: 'x' }));
  const errors = await hub.waitFor(() => {
    const e = hub.messagesOf('error');
    return e.length >= 5 ? e : undefined;
  }, '5 error answers');
  t.match(errors[0]?.message, /unknown_type/);
  t.match(errors[1]?.message, /malformed_json/);
  t.match(errors[4]?.message, /command refused \(malformed\)/);
  const ping = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(ping);
  t.equal((await hub.waitForResult(ping.envelope.id)).status, 'succeeded', 'still serving commands');
  t.equal(conn.closedAt, undefined, 'same connection');
  t.ok(proc.alive);
});


import t from 'tap';
import type { Test } from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { enrolledAgent, runCli } from './agent-process.ts';

/** Connections that break, hubs that go away or push back, and the transport policy. */

async function hubAndAgent(t: Test, reconnect?: Record<string, number>) {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub, reconnect);
  return { hub, agent };
}

t.test('an oversized frame closes the connection cleanly and the agent comes back', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  const proc = agent.start();
  const conn = await hub.waitForConnection();
  hub.sendRaw('x'.repeat(1024 * 1024 + 10));
  await hub.waitFor(() => conn.closedAt, 'the connection to close');
  t.equal(conn.closeCode, 1009, 'closed with 1009 message too big');
  await hub.waitForConnection(2);
  t.ok(proc.alive, 'no crash');
});

t.test('a hub breaking the handshake is closed with a reason, and the agent keeps redialling', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  hub.greeting = 'welcome_first';
  const proc = agent.start();
  const first = await hub.waitFor(() => hub.connections[0]?.closedAt !== undefined && hub.connections[0], 'first connection closed');
  t.equal(first.closeCode, 1002, 'protocol error');
  t.equal(first.closeReason, 'expected challenge, got welcome');
  hub.greeting = 'garbage';
  const n = hub.connections.length;
  const bad = await hub.waitFor(() => hub.connections[n]?.closedAt !== undefined && hub.connections[n], 'garbage connection closed');
  t.equal(bad.closeCode, 1002);
  t.match(bad.closeReason, /handshake frame refused: schema_violation/);
  hub.greeting = 'challenge';
  await hub.waitForConnection(1, 5000);
  t.ok(proc.alive, 'no crash');
});

t.test('when the control plane goes away the agent redials with backoff and is back by itself', async (t) => {
  const backoff = { baseMs: 100, capMs: 200 };
  const { hub, agent } = await hubAndAgent(t, { base_ms: backoff.baseMs, cap_ms: backoff.capMs, stable_ms: 60_000, handshake_timeout_ms: 15_000 });
  const proc = agent.start();
  await hub.waitForConnection();
  hub.refuseUpgrades = true;
  const dialsBefore = hub.dialAttempts.length;
  const waitsBefore = proc.lines(/^info reconnecting /).length;
  hub.dropAll();
  await hub.waitFor(() => hub.dialAttempts.length >= dialsBefore + 6, '6 refused redials');
  // Every dial follows a wait the agent chose and logged (its stderr may lag the hub a little).
  const waits = await hub.waitFor(() => {
    const w = proc.lines(/^info reconnecting /).slice(waitsBefore);
    return w.length >= 6 && w.length >= hub.dialAttempts.length - dialsBefore ? w : undefined;
  }, 'a logged wait before every redial');
  // The chosen delays, not wall time: full jitter under base * 2^(attempt-1), capped
  // (the formula itself, with an injected random, is in units.test.ts).
  const chosen = waits.map((l) => JSON.parse(l.slice(l.indexOf('{'))) as { in_ms: number; attempt: number });
  const first = chosen[0]?.attempt ?? 0;
  t.same(chosen.map((c) => c.attempt), chosen.map((_c, i) => first + i), 'each refused dial is one more attempt');
  for (const c of chosen) {
    const ceiling = Math.min(backoff.capMs, backoff.baseMs * 2 ** (c.attempt - 1));
    t.ok(c.in_ms >= 0 && c.in_ms < ceiling, `attempt ${c.attempt}: waited ${c.in_ms} ms, under ${ceiling} ms`);
  }
  const st = await runCli(['status', '--config', agent.configFile]);
  t.equal(st.code, 3, 'status exits 3 while not connected');
  t.match(st.stdout, /state:\s+(waiting|connecting|handshaking)/);

  // A full restart: listener gone (the agent's dial is refused by the OS), then back on the same port.
  const refusedBefore = proc.lines(/connection error.*ECONNREFUSED/).length;
  await hub.stop();
  await hub.waitFor(() => proc.lines(/connection error.*ECONNREFUSED/).length > refusedBefore, 'a dial refused by the closed port');
  hub.refuseUpgrades = false;
  await hub.restart();
  await hub.waitForConnection(2);
  t.equal(hub.welcomed().length, 2, 'back on the restarted hub');
  t.ok(proc.alive);
});

t.test('an overloaded hub\'s retry_after_ms is honoured before dialling again', async (t) => {
  const { hub, agent } = await hubAndAgent(t, { base_ms: 20, cap_ms: 50, stable_ms: 60_000, handshake_timeout_ms: 15_000 });
  hub.overload = { retryAfterMs: 1200, remaining: 1 };
  const proc = agent.start();
  await hub.waitForConnection(1);
  t.equal(hub.connections.length, 2, 'one refused, one welcomed');
  const [first, second] = hub.connections;
  // A lower bound only: the second dial cannot come before the agent heard the error
  // (after the first opened) plus 1200 ms, and load can only make the gap longer.
  const gap = (second?.openedAt ?? 0) - (first?.openedAt ?? 0);
  t.ok(gap >= 1150, `waited ${gap} ms, at least the 1200 ms asked (cap alone is 50 ms)`);
  t.match(proc.stderr, /hub reported an error.*rate_limited.*retry_after_ms/);
});

t.test('plain ws:// to a public address refuses to start; --insecure runs with a warning', async (t) => {
  const { hub, agent } = await hubAndAgent(t);
  const url = agent.config().connect_url;
  agent.patchConfig({ connect_url: 'ws://198.51.100.9/agent/v1/connect' });
  const r = await runCli(['run', '--config', agent.configFile]);
  t.equal(r.code, 78);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /connect_url in .*: ws:\/\/ to 198\.51\.100\.9 is not allowed: use wss:\/\//);

  agent.patchConfig({ connect_url: url });
  const proc = agent.start(['--insecure']);
  await hub.waitForConnection();
  t.match(proc.stderr, /^warn INSECURE mode/m, 'warns at start');
});

import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentProcess, TEST_RECONNECT, runCli } from '../agent/agent-process.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';

/** End to end with the real vmkit-agent CLI processes against the real control plane. */

interface InstanceAnswer {
  id: string;
  agent: { id: string; state: string; connected_at: string | null; last_seen: string | null; hostname: string | null; agent_version: string | null } | null;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

async function agentState(cp: TestControlPlane, instanceId: string): Promise<string | undefined> {
  return (await cp.api<InstanceAnswer>('GET', `/api/instances/${instanceId}`)).body.agent?.state;
}

/**
 * Waits for the stored agent state. The bound only stops a broken run: it is far above
 * anything the behaviour needs, so a loaded machine cannot make it fail.
 */
async function waitState(cp: TestControlPlane, instanceId: string, want: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // A keep-alive socket to the previous process fails once after a restart: ask again.
    if ((await agentState(cp, instanceId).catch(() => undefined)) === want) return;
    if (Date.now() > deadline) throw new Error(`agent not ${want} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

async function enrollRealAgent(t: Teardown, cp: TestControlPlane) {
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'e2e' } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-hub-e2e-'));
  const procs: AgentProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  const r = await runCli(['enroll', '--url', cp.url, '--token', tok.token, '--config', configFile, '--state-dir', stateDir]);
  if (r.code !== 0) throw new Error(`enroll failed (${r.code}): ${r.stderr}`);
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  writeFileSync(configFile, JSON.stringify({ ...config, reconnect: TEST_RECONNECT }), { mode: 0o600 });
  return {
    instanceId: inst.id,
    agentId: String(config.agent_id),
    start() {
      const p = new AgentProcess(['run', '--config', configFile, '--state-dir', stateDir]);
      procs.push(p);
      return p;
    },
  };
}


t.test('a real agent enrolls, connects, answers ping and facts through the CommandBus', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 1_500 } } });
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp);
  t.equal(await agentState(cp, agent.instanceId), 'disconnected', 'enrolled, not yet connected');
  agent.start();
  await waitState(cp, agent.instanceId, 'connected');
  const shown = (await cp.api<InstanceAnswer>('GET', `/api/instances/${agent.instanceId}`)).body.agent;
  t.equal(shown?.id, agent.agentId);
  t.ok(shown?.agent_version, 'agent version recorded');
  t.ok(shown?.hostname, 'hostname recorded');
  const bus = cp.ctx.commandBus;
  if (!bus) throw new Error('no command bus');
  const pong = await bus.send(agent.agentId, 'ping', {}, { timeoutMs: 10_000 });
  t.equal(pong.status, 'succeeded');
  const facts = await bus.send(agent.agentId, 'facts', {}, { timeoutMs: 20_000 });
  t.ok(Object.keys(facts.output).length > 0, `facts answered: ${Object.keys(facts.output).join(', ')}`);
  t.equal((await bus.get(pong.commandId))?.state, 'succeeded');
});

t.test('a killed agent is marked disconnected within the bound, and comes back when restarted', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 300, deadAfterMs: 1_000 } } });
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp);
  const p = agent.start();
  await waitState(cp, agent.instanceId, 'connected');
  p.child.kill('SIGKILL');
  await waitState(cp, agent.instanceId, 'disconnected');
  t.equal(await agentState(cp, agent.instanceId), 'disconnected', 'the killed agent shows disconnected');
  agent.start();
  await waitState(cp, agent.instanceId, 'connected');
  t.equal(await agentState(cp, agent.instanceId), 'connected', 'reconnected after restart');
});

t.test('a stopped agent (SIGSTOP: socket open, silent) is dropped for its silence and marked disconnected', async (t) => {
  // deadAfterMs well above any stall of this (loaded) test process, so a running agent is never dropped.
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 4_000 } } });
  t.teardown(() => cp.close());
  const hub = cp.ctx.hub;
  if (!hub) throw new Error('no agent hub');
  const agent = await enrollRealAgent(t, cp);
  const p = agent.start();
  await waitState(cp, agent.instanceId, 'connected');
  const droppedBefore = hub.stats().deadDropped;
  p.child.kill('SIGSTOP');
  t.teardown(() => p.child.kill('SIGCONT'));
  await waitState(cp, agent.instanceId, 'disconnected');
  // The stopped process keeps its socket open: only the silence rule can have closed it.
  t.ok(hub.stats().deadDropped > droppedBefore, 'dropped by the silence rule, not by a closed socket');
  p.child.kill('SIGCONT');
  await waitState(cp, agent.instanceId, 'connected');
  t.equal(await agentState(cp, agent.instanceId), 'connected', 'the agent reconnects once it runs again');
});

t.test('after a control-plane restart the agent comes back by itself', async (t) => {
  const port = await freePort();
  const cp = await startTestControlPlane({ config: { port, agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 1_500 } } });
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp);
  agent.start();
  await waitState(cp, agent.instanceId, 'connected');
  await cp.restart();
  t.equal(cp.url, `http://127.0.0.1:${port}`, 'same address after restart');
  await waitState(cp, agent.instanceId, 'connected');
  const pong = await cp.ctx.commandBus?.send(agent.agentId, 'ping', {}, { timeoutMs: 10_000 });
  t.equal(pong?.status, 'succeeded', 'and answers commands on the new process');
});

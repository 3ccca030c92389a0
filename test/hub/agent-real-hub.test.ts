import t from 'tap';
import type { Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROTOCOL_VERSION, newId, signEnvelope } from '@vmkit/protocol';
import type { CommandEnvelope } from '@vmkit/protocol';
import type { CommandReply } from '../../control-plane/src/hub/agent-hub.ts';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import type { AgentProcess } from '../agent/agent-process.ts';
import { TEST_RECONNECT } from '../agent/agent-process.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { HeldRelay } from '../helpers/hub-relay.ts';
import { busOf, enrollRealAgent, storedResult, waitAgentState } from '../helpers/real-agent.ts';
import type { RealAgent } from '../helpers/real-agent.ts';


// Real control planes, agent processes and a 2,000-request flood: generous on a shared, loaded machine.
t.setTimeout(600_000);

/**
 * The agent's reconnect, replay refusal and result journal against the real hub: a
 * real control plane on loopback (SQLite, AgentHub, InProcessCommandBus, the key ring)
 * and real vmkit-agent processes. test/agent/{reconnect,commands}.test.ts cover the
 * same behaviour against test/helpers/fake-hub.ts, which can misbehave on purpose.
 * Broken connections are made by a TCP relay in front of the control plane.
 */

const executions = (proc: AgentProcess, id: string) => proc.lines(new RegExp(`^info executing command .*"command_id":"${id}"`)).length;

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Setup {
  cp: TestControlPlane;
  agent: RealAgent;
  relay: HeldRelay;
  proc: AgentProcess;
  /** Frames the hub received from agents, in order. */
  replies: CommandReply[];
  /** Runs `fn` (once) when the hub receives the agent's `ack` of `commandId`, before the bus hears of anything later. */
  onAck: (commandId: string, fn: () => void) => void;
}

async function connectedThroughRelay(t: Test): Promise<Setup> {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500 } } });
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp, { name: 'real-hub' });
  const relay = await HeldRelay.start(Number(new URL(cp.url).port));
  t.teardown(() => relay.close());
  relay.release();
  agent.patchConfig({ connect_url: `ws://127.0.0.1:${relay.port}/agent/v1/connect` });
  const replies: CommandReply[] = [];
  const hooks = new Map<string, () => void>();
  cp.ctx.hub?.addListener({
    agentMessage(_agentId, msg) {
      replies.push(msg);
      const hook = msg.type === 'ack' ? hooks.get(msg.command_id) : undefined;
      if (hook) {
        hooks.delete(msg.command_id);
        hook();
      }
    },
  });
  const proc = agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected');
  return { cp, agent, relay, proc, replies, onAck: (id, fn) => hooks.set(id, fn) };
}

function journalRecord(agent: RealAgent, commandId: string): { state: string; acked: boolean } | undefined {
  const file = join(agent.stateDir, 'journal', `${commandId}.json`);
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as { state: string; acked: boolean };
  } catch {
    return undefined; // being replaced right now (tmp + rename): look again
  }
}



t.test('a connection that breaks between ack and result: the agent redials, re-sends its journaled result once, the hub stores it once', async (t) => {
  const { cp, agent, relay, proc, replies, onAck } = await connectedThroughRelay(t);
  let commandId = '';
  const outcome = busOf(cp).send(agent.agentId, 'ping', {}, {
    timeoutMs: 120_000,
    onCommandId: (id) => {
      commandId = id;
      // The ack reached the hub; the network fails before the result can, and stays
      // down until the agent has journaled the result it could not deliver.
      onAck(id, () => {
        relay.hold();
        relay.cut();
      });
    },
  });
  await until('the result to be journaled, unacknowledged', () => {
    const rec = commandId === '' ? undefined : journalRecord(agent, commandId);
    return rec?.state === 'finished' && !rec.acked;
  });
  relay.release();
  const done = await outcome;
  t.equal(done.status, 'succeeded', 'the waiting caller gets the result after the reconnect');
  t.equal(done.output.pong, true);
  t.ok(relay.accepted >= 2, `the agent dialled again after the break (${relay.accepted} dials in all)`);
  await proc.waitForLog(/re-sent unacknowledged results/);
  t.pass('the agent says it re-sent the journaled result');
  t.equal(executions(proc, commandId), 1, 'the command ran once');
  const stored = await busOf(cp).get(commandId);
  t.equal(stored?.state, 'succeeded', 'stored as succeeded');
  t.equal(stored?.result?.output?.pong, true);
  await until('the journal to record the hub’s result_ack', () => journalRecord(agent, commandId)?.acked === true);
  t.pass('the journal records the ack after the re-send');
  t.equal(replies.filter((m) => m.type === 'ack' && m.command_id === commandId).length, 1, 'acked once, on the first connection');
});

t.test('an unacknowledged result is delivered by the restarted agent, which does not run the command again', async (t) => {
  const { cp, agent, relay, proc, onAck } = await connectedThroughRelay(t);
  let commandId = '';
  const outcome = busOf(cp).send(agent.agentId, 'ping', {}, {
    timeoutMs: 120_000,
    onCommandId: (id) => {
      commandId = id;
      onAck(id, () => {
        // The network fails and stays down: the agent keeps its result to itself.
        relay.hold();
        relay.cut();
      });
    },
  });
  const finished = await until('the result to be journaled, unacknowledged', () => {
    const rec = commandId === '' ? undefined : journalRecord(agent, commandId);
    return rec?.state === 'finished' && !rec.acked ? rec : undefined;
  });
  t.equal(finished.acked, false, 'journaled, not acknowledged');
  await proc.stop();
  t.equal(executions(proc, commandId), 1, 'the first process ran it');

  const proc2 = agent.start();
  relay.release();
  const done = await outcome;
  t.equal(done.status, 'succeeded', 'the restarted agent delivered the journaled result');
  t.equal(done.output.pong, true);
  await proc2.waitForLog(/re-sent unacknowledged results/);
  t.equal(executions(proc2, commandId), 0, 'the new process never ran it');
  await until('the journal to record the ack', () => journalRecord(agent, commandId)?.acked === true);
  t.pass('the journal records the ack');
});

t.test('a command the hub sends again under the same id gets the journaled result, not a second run', async (t) => {
  const { cp, agent, proc, replies } = await connectedThroughRelay(t);
  const first = await busOf(cp).send(agent.agentId, 'ping', {}, { timeoutMs: 60_000 });
  const stored = await busOf(cp).get(first.commandId);
  if (!stored) throw new Error('command not stored');
  // As the bus re-sends a command whose ack it never saw.
  const delivered = cp.ctx.hub?.deliver(agent.agentId, { protocol: PROTOCOL_VERSION, type: 'command', envelope: stored.envelope, signature: stored.signature });
  t.equal(delivered, true, 'the hub delivered the same signed command again');
  await proc.waitForLog(/duplicate command; not running it again/);
  const results = await until('the second result', () => {
    const r = replies.filter((m) => m.type === 'result' && m.command_id === first.commandId);
    return r.length >= 2 ? r : undefined;
  });
  t.same(results[1], results[0], 'the very same result, finished_at and ping time included');
  t.equal(executions(proc, first.commandId), 1, 'executed once');
  const after = await busOf(cp).get(first.commandId);
  t.same(after?.result, stored.result, 'the stored result is the first one, applied once');
});

t.test('a replayed nonce under a new id is refused by the agent, the hub stores the refusal, and nothing runs', async (t) => {
  const { cp, agent, proc } = await connectedThroughRelay(t);
  const first = await busOf(cp).send(agent.agentId, 'ping', {}, { timeoutMs: 60_000 });
  const original = (await busOf(cp).get(first.commandId))?.envelope;
  if (!original) throw new Error('command not stored');
  const ring = cp.ctx.keyRing;
  if (!ring) throw new Error('no key ring');
  // The same envelope (nonce included) under a fresh id, validly signed by the control plane's key.
  const replay: CommandEnvelope = { ...original, id: newId('command') };
  const signature = signEnvelope(ring.active().privateKey, replay);
  const store = openHubStore(cp.ctx.db);
  await store.insert({ id: replay.id, agentId: agent.agentId, type: replay.type, envelope: replay, signature, state: 'sent', createdAt: Date.now(), expiresAt: replay.expires_at });
  t.equal(cp.ctx.hub?.deliver(agent.agentId, { protocol: PROTOCOL_VERSION, type: 'command', envelope: replay, signature }), true);
  const stored = await storedResult(cp, replay.id);
  t.equal(stored.result?.status, 'refused', 'refused');
  t.equal(stored.result?.error?.key, 'replayed', 'because the nonce was used before');
  t.equal(stored.state, 'failed', 'the hub stored it as failed');
  t.equal(executions(proc, replay.id), 0, 'nothing ran');
  t.equal(proc.lines(new RegExp(`^warn command refused .*"command_id":"${replay.id}".*"reason":"replayed"`)).length, 1, 'the refusal is logged');

  // A fresh command still runs: the refusal did not disturb the agent.
  const next = await busOf(cp).send(agent.agentId, 'ping', {}, { timeoutMs: 60_000 });
  t.equal(next.status, 'succeeded', 'a fresh command still runs');
});

t.test('an overloaded real hub: the agent plans its next dial no sooner than the retry_after_ms it was given', async (t) => {
  // One verified handshake per 100 s: the first agent takes it, the next one is refused.
  const cp = await startTestControlPlane({ config: { agentHub: { handshakesPerSecond: 0.01 } } });
  t.teardown(() => cp.close());
  const taker = await enrollRealAgent(t, cp, { name: 'taker' });
  taker.start();
  await waitAgentState(cp, taker.instanceId, 'connected');
  const agent = await enrollRealAgent(t, cp, { name: 'refused', reconnect: { ...TEST_RECONNECT, base_ms: 20, cap_ms: 50 } });
  const proc = agent.start();
  await proc.waitForLog(/hub reported an error .*"key":"overloaded"/, 60_000);
  const [refusal, planned] = await until('the redial planned after the refusal', () => {
    const lines = proc.stderr.split('\n');
    const at = lines.findIndex((l) => /hub reported an error .*"key":"overloaded"/.test(l));
    const next = lines.slice(at + 1).find((l) => /^info reconnecting /.test(l));
    return next === undefined ? undefined : ([lines[at] ?? '', next] as const);
  });
  const retryAfter = Number(/"retry_after_ms":(\d+)/.exec(refusal)?.[1]);
  const inMs = Number(/"in_ms":(\d+)/.exec(planned)?.[1]);
  t.ok(retryAfter > 1_000, `the hub asked for ${retryAfter} ms, far beyond the agent's own 50 ms cap`);
  t.ok(inMs >= retryAfter - 1_000, `the agent planned its redial ${inMs} ms later, honouring the ${retryAfter} ms asked (less the moment spent closing)`);
  t.equal(cp.ctx.hub?.stats().refusedOverloaded, 1, 'one refusal, one slot');
  t.equal(cp.ctx.hub?.isConnected(agent.agentId), false, 'and it has not come back early');
});

t.test('vmkit-agent takes its result acks from the hub’s heartbeat (`heartbeat-acks`): none come until one is sent', async (t) => {
  // No heartbeat either way for ten minutes: an ack can only come with the hub's own heartbeat.
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 600_000 } } });
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp, { name: 'heartbeat-acks' });
  agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected');
  const first = await busOf(cp).send(agent.agentId, 'ping', {}, { timeoutMs: 60_000 });
  const second = await busOf(cp).send(agent.agentId, 'ping', {}, { timeoutMs: 60_000 });
  t.equal(first.status, 'succeeded');
  t.equal(second.status, 'succeeded');
  const before = await until('both results journaled', () => {
    const recs = [journalRecord(agent, first.commandId), journalRecord(agent, second.commandId)];
    return recs.every((r) => r?.state === 'finished') ? recs : undefined;
  });
  t.same(before.map((r) => r?.acked), [false, false], 'stored by the hub, and no result_ack frame let the journal go');
  // Closing the hub sends the acks it owes on a heartbeat before it says shutting_down.
  await cp.ctx.hub?.close();
  await until('the journal to take both acks from the heartbeat', () =>
    journalRecord(agent, first.commandId)?.acked === true && journalRecord(agent, second.commandId)?.acked === true,
  );
  t.pass('both results acknowledged by the one heartbeat');
});

import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newId, signEnvelope } from '@vmkit/protocol';
import t from 'tap';
import type { Test } from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { fixtureKey } from '../helpers/fixtures.ts';
import { enrolledAgent } from './agent-process.ts';
import type { AgentProcess } from './agent-process.ts';

async function connected(t: Test) {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  const proc = agent.start();
  await hub.waitForConnection();
  return { hub, agent, proc };
}

const executions = (proc: AgentProcess, id: string) => proc.lines(new RegExp(`^info executing command .*"command_id":"${id}"`)).length;

t.test('forged, tampered, replayed, expired and misaddressed commands are refused with their reason and nothing runs', async (t) => {
  const { hub, agent, proc } = await connected(t);
  const attacker = fixtureKey('attacker');
  const cp = hub.signingKey;

  // Signed by a key the agent never pinned.
  const unpinned = hub.sign(agent.agentId, 'ping', {}, {}, attacker);
  // Signed by the attacker while claiming the pinned key's id.
  const claimed = hub.sign(agent.agentId, 'ping', {}, {}, attacker);
  const claimedEnvelope = { ...claimed.envelope, key_id: cp.keyId };
  // A valid command whose params were changed after signing.
  const good = hub.sign(agent.agentId, 'keys.rotate', { add: [], retire: [] });
  const tampered = { envelope: { ...good.envelope, params: { add: [], retire: [cp.keyId] } }, signature: good.signature };
  // Expired long ago (beyond the 30 s skew allowance).
  const expired = hub.sign(agent.agentId, 'ping', {}, { now: Date.now() - 10 * 60_000, lifetimeMs: 60_000 });
  // Addressed to another agent.
  const other = hub.sign(newId('agent'), 'ping', {});
  // From the future.
  const future = hub.sign(agent.agentId, 'ping', {}, { now: Date.now() + 5 * 60_000 });

  const cases: [string, { envelope: unknown; signature: string }, string][] = [
    ['unpinned key', unpinned, 'unknown_key'],
    ['pinned key id, wrong signer', { envelope: claimedEnvelope, signature: signEnvelope(attacker.privateKey, claimedEnvelope) }, 'bad_signature'],
    ['tampered params', tampered, 'bad_signature'],
    ['expired', expired, 'expired'],
    ['other agent', other, 'wrong_agent'],
    ['not yet valid', future, 'not_yet_valid'],
  ];
  for (const [name, cmd, reason] of cases) {
    hub.sendCommand(cmd);
    const id = (cmd.envelope as { id: string }).id;
    const r = await hub.waitForResult(id);
    t.equal(r.status, 'refused', `${name}: refused`);
    t.equal(r.error?.key, reason, `${name}: reason ${reason}`);
    t.equal(hub.messagesOf('ack', id).length, 0, `${name}: not acked`);
    t.equal(executions(proc, id), 0, `${name}: nothing ran`);
    t.ok(proc.lines(new RegExp(`^warn command refused .*"command_id":"${id}".*"reason":"${reason}"`)).length === 1, `${name}: refusal logged`);
  }

  // Replayed: a valid command reusing an accepted command's nonce under a new id.
  const first = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(first);
  t.equal((await hub.waitForResult(first.envelope.id)).status, 'succeeded');
  const replayEnvelope = { ...first.envelope, id: newId('command') };
  hub.sendCommand({ envelope: replayEnvelope, signature: signEnvelope(cp.privateKey, replayEnvelope) });
  const rr = await hub.waitForResult(replayEnvelope.id);
  t.equal(rr.status, 'refused');
  t.equal(rr.error?.key, 'replayed');
  t.equal(executions(proc, replayEnvelope.id), 0, 'replay: nothing ran');
  t.same(agent.config().signing_keys, [{ key_id: cp.keyId, public_key: cp.publicKey }], 'the tampered rotation changed nothing');
});

t.test('a duplicate command id gets the journaled result and does not run twice', async (t) => {
  const { hub, agent, proc } = await connected(t);
  hub.ackResults = false;
  const cmd = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(cmd);
  const first = await hub.waitForResult(cmd.envelope.id);
  hub.sendCommand(cmd);
  const second = await hub.waitForResult(cmd.envelope.id, 2);
  t.same(second, first, 'the very same result, finished_at and ping time included');
  t.equal(executions(proc, cmd.envelope.id), 1, 'executed once');
  t.match(proc.stderr, /duplicate command; not running it again/);

  // Acked results stay journaled until the command expires: still no second run.
  hub.ackResults = true;
  hub.sendCommand(cmd);
  await hub.waitForResult(cmd.envelope.id, 3);
  hub.sendCommand(cmd);
  const fourth = await hub.waitForResult(cmd.envelope.id, 4);
  t.same(fourth, first);
  t.equal(executions(proc, cmd.envelope.id), 1, 'still executed once');
});

t.test('a result survives a dropped connection: re-sent after reconnect exactly once, then acknowledged', async (t) => {
  const { hub, agent, proc } = await connected(t);
  const cmd = hub.sign(agent.agentId, 'facts', {});
  hub.dropOnResult.add(cmd.envelope.id);
  hub.sendCommand(cmd);
  const first = await hub.waitForResult(cmd.envelope.id);
  const conn2 = await hub.waitForConnection(2);
  const again = await hub.waitForResult(cmd.envelope.id, 2);
  t.same(again, first, 'the journaled result, unchanged');
  t.ok(conn2.messages.some((m) => m.type === 'result' && m.command_id === cmd.envelope.id), 'sent on the new connection');
  await hub.waitFor(() => proc.lines(/re-sent unacknowledged results/).length === 1 || undefined, 're-send logged');

  // The ack landed (the journal records it): another reconnect sends nothing again.
  const acked = (): boolean | undefined => {
    try {
      return (JSON.parse(readFileSync(join(agent.stateDir, 'journal', `${cmd.envelope.id}.json`), 'utf8')) as { acked: boolean }).acked || undefined;
    } catch {
      return undefined; // not written yet
    }
  };
  t.equal(await hub.waitFor(acked, 'the ack in the journal'), true, 'journal records the ack');
  hub.dropAll();
  const conn3 = await hub.waitForConnection(3);
  // Unacked results are re-sent right after the welcome, before any command is handled:
  // once a ping sent on the new connection is answered, a re-send would have arrived.
  const ping = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(ping, conn3);
  await hub.waitForResult(ping.envelope.id);
  t.equal(hub.messagesOf('result', cmd.envelope.id).length, 2, 'exactly once after the drop, none after the ack');
  t.equal(executions(proc, cmd.envelope.id), 1, 'ran once');
  const journal = readdirSync(join(agent.stateDir, 'journal')).filter((f) => f.endsWith('.json'));
  t.ok(journal.length >= 1);
});

t.test('an unacknowledged result is delivered by the restarted agent, and the command is not run again', async (t) => {
  const { hub, agent, proc } = await connected(t);
  hub.ackResults = false;
  const cmd = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(cmd);
  const first = await hub.waitForResult(cmd.envelope.id);
  await proc.stop();
  hub.ackResults = true;
  const proc2 = agent.start();
  await hub.waitForConnection(2);
  const again = await hub.waitForResult(cmd.envelope.id, 2);
  t.same(again, first, 'unacknowledged result re-sent by the new process');
  // The replay cache and journal are on disk: the restarted agent does not run it again.
  hub.sendCommand(cmd);
  const third = await hub.waitForResult(cmd.envelope.id, 3);
  t.same(third, first);
  t.equal(executions(proc2, cmd.envelope.id), 0, 'the new process never ran it');
});

t.test('keys.rotate adds a key, then retires the old one; the agent follows', async (t) => {
  const { hub, agent } = await connected(t);
  const cp = hub.signingKey;
  const next = fixtureKey('control_plane_next');
  const rotateRefused = async (params: { add: { key_id: string; public_key: string }[]; retire: string[] }, key = cp) => {
    const c = hub.sign(agent.agentId, 'keys.rotate', params, {}, key);
    hub.sendCommand(c);
    return hub.waitForResult(c.envelope.id);
  };

  const self = await rotateRefused({ add: [], retire: [cp.keyId] });
  t.equal(self.status, 'failed', 'the signing key cannot retire itself without a successor');
  t.equal(self.error?.key, 'key_rotation_refused');

  // Commands signed by the next key are refused before it is pinned.
  const early = hub.sign(agent.agentId, 'ping', {}, {}, next);
  hub.sendCommand(early);
  t.equal((await hub.waitForResult(early.envelope.id)).error?.key, 'unknown_key');

  const add = await rotateRefused({ add: [{ key_id: next.keyId, public_key: next.publicKey }], retire: [] });
  t.equal(add.status, 'succeeded');
  t.same(add.output?.pinned, [cp.keyId, next.keyId]);
  const pinned = (agent.config().signing_keys as { key_id: string }[]).map((k) => k.key_id);
  t.same(pinned, [cp.keyId, next.keyId], 'config file updated');

  const byNext = hub.sign(agent.agentId, 'ping', {}, {}, next);
  hub.sendCommand(byNext);
  t.equal((await hub.waitForResult(byNext.envelope.id)).status, 'succeeded', 'accepts the new key');

  const retire = await rotateRefused({ add: [], retire: [cp.keyId] }, next);
  t.equal(retire.status, 'succeeded');
  t.same(retire.output?.retired, [cp.keyId]);

  const last = await rotateRefused({ add: [], retire: [next.keyId] }, next);
  t.equal(last.status, 'failed', 'the last key is never retired');

  const byOld = hub.sign(agent.agentId, 'ping', {});
  hub.sendCommand(byOld);
  t.equal((await hub.waitForResult(byOld.envelope.id)).error?.key, 'unknown_key', 'the retired key is refused');
  t.same((agent.config().signing_keys as { key_id: string }[]).map((k) => k.key_id), [next.keyId]);
});

t.test('shell.open to an agent whose config disables the shell fails cleanly with shell_disabled', async (t) => {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  agent.patchConfig({ shell: { enabled: false } });
  agent.start();
  await hub.waitForConnection();
  const cmd = hub.sign(agent.agentId, 'shell.open', { channel: 1, session_id: newId('shellSession'), cols: 80, rows: 24, term: 'xterm' });
  hub.sendCommand(cmd);
  const r = await hub.waitForResult(cmd.envelope.id);
  t.equal(r.status, 'failed');
  t.equal(r.error?.key, 'shell_disabled');
});

t.test('a command cut short by an agent restart is reported failed, not lost', async (t) => {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  const id = newId('command');
  mkdirSync(join(agent.stateDir, 'journal'), { recursive: true, mode: 0o700 });
  const now = Date.now();
  writeFileSync(
    join(agent.stateDir, 'journal', `${id}.json`),
    JSON.stringify({ version: 1, command_id: id, type: 'harden', state: 'running', acked: false, received_at: now, forget_after: now + 60_000 }),
    { mode: 0o600 },
  );
  agent.start();
  const r = await hub.waitForResult(id);
  t.equal(r.status, 'failed');
  t.equal(r.error?.key, 'command_interrupted');
});

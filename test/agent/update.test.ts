import t from 'tap';
import { agentArtifact, artifactSkipReason, releasesDir } from '../helpers/agent-artifact.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { installAgent, installedAgentSkipReason } from '../helpers/installed-agent.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { waitAgentState } from '../helpers/real-agent.ts';

/**
 * Signed self-update end to end, on this machine: three real builds of the agent
 * (0.1.0 installed by install-agent.sh, 0.1.1, and 0.1.2 built with the test fault
 * never-connect), a real control plane serving them, POST /api/instances/{id}/agent-update,
 * and the install script's restart loop standing in for systemd's Restart=always (what
 * a VM without systemd runs; the agent exits with 75 and `current` is started again).
 */

const skip = prerequisite(artifactSkipReason) || prerequisite(installedAgentSkipReason);

interface Command {
  id: string;
  type: string;
  state: string;
  result: Record<string, unknown> | null;
  error_key: string | null;
  error_message: string | null;
}

t.test('agent.update: to a version that connects, a refused downgrade, a version that never connects', { skip }, async (t) => {
  t.setTimeout(600_000);
  const base = await agentArtifact({ version: '0.1.0' });
  const next = await agentArtifact({ version: '0.1.1' });
  const broken = await agentArtifact({ version: '0.1.2', fault: 'never-connect' });
  const cp = await startTestControlPlane({ config: { agentReleasesDir: releasesDir(t, [base, next, broken]), agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 5_000 } } });
  t.teardown(() => cp.close());
  // A short confirmation window for the never-connecting release (the default is 120 s).
  const agent = await installAgent(t, cp, {
    version: '0.1.0',
    name: uniqueInstanceName('update'),
    agentConfig: { update: { confirm_within_ms: 8_000 }, reconnect: { base_ms: 100, cap_ms: 1_000 } },
  });
  const inst = { id: agent.instanceId };
  const log = () => agent.log();
  const current = () => agent.current();
  const agentVersion = async () => (await cp.api<{ agent: { agent_version: string; state: string } }>('GET', `/api/instances/${inst.id}`)).body.agent;
  t.equal((await agentVersion()).agent_version, '0.1.0');

  const update = (body: Record<string, unknown>) =>
    cp.api<{ command_id: string; version: string; sha256: string; error?: string; message?: string }>('POST', `/api/instances/${inst.id}/agent-update`, { body });
  /** Polls the instance's commands until this one has an outcome (the update's lasts a restart and more). */
  const outcome = async (commandId: string): Promise<Command> => {
    const deadline = Date.now() + 180_000;
    for (;;) {
      const cmds = await cp.api<{ items: Command[] }>('GET', `/api/instances/${inst.id}/commands`).catch(() => undefined);
      const c = cmds?.body.items.find((x) => x.id === commandId);
      if (c && ['succeeded', 'failed', 'expired', 'timed_out'].includes(c.state)) return c;
      if (Date.now() > deadline) throw new Error(`command ${commandId} has no outcome; agent log:\n${log().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  const audit = async (action: string) =>
    (await cp.api<{ items: { action: string; target_ids: Record<string, string> | null; error_key: string | null }[] }>('GET', `/api/audit?action=${action}`)).body.items;

  await t.test('an update to a version that connects switches current and is confirmed', async (t) => {
    const res = await update({ version: '0.1.1' });
    t.equal(res.status, 202, JSON.stringify(res.body));
    t.equal(res.body.sha256, next.manifest.sha256, 'the release as served');
    const c = await outcome(res.body.command_id);
    t.equal(c.state, 'succeeded', `${c.error_key ?? ''} ${c.error_message ?? ''}`);
    t.same(c.result, { version: '0.1.1', previous_version: '0.1.0', changed: true, starts: 1, pruned: [] });
    t.equal(current(), 'versions/0.1.1', 'current points at the new version');
    t.same(agent.versions(), ['0.1.0', '0.1.1'], 'the previous version stays for a rollback');
    t.notOk(agent.updatePending(), 'the pending-update marker is gone');
    await waitAgentState(cp, inst.id, 'connected');
    t.equal((await agentVersion()).agent_version, '0.1.1', 'the hub sees the new version');
    t.match(log(), /"reason":"agent.update cmd_/, 'the old version exited to be restarted');
    const rows = await audit('agent.update.succeeded');
    t.equal(rows.length, 1);
    t.same(rows[0]?.target_ids, { id: inst.id, command_id: res.body.command_id, version: '0.1.1' });
  });

  await t.test('a downgrade is refused unless the command allows it; nothing changes', async (t) => {
    const res = await update({ version: '0.1.0' });
    t.equal(res.status, 202);
    const c = await outcome(res.body.command_id);
    t.equal(c.state, 'failed');
    t.equal(c.error_key, 'update_refused');
    t.match(c.error_message, /0\.1\.0 is older than the running 0\.1\.1; a downgrade needs allow_downgrade: true/);
    t.equal(current(), 'versions/0.1.1');
    t.equal((await agentVersion()).agent_version, '0.1.1');
    const rows = await audit('agent.update.failed');
    t.equal(rows[0]?.error_key, 'update_refused');
  });

  await t.test('a version that never connects is rolled back after the window and reported', async (t) => {
    const res = await update({ version: '0.1.2' });
    t.equal(res.status, 202);
    const c = await outcome(res.body.command_id);
    t.equal(c.state, 'failed');
    t.equal(c.error_key, 'update_rolled_back');
    t.match(c.error_message, /vmkit-agent 0\.1\.2 was rolled back to 0\.1\.1: it did not connect within 8000 ms/);
    t.same(c.result, { version: '0.1.1', attempted_version: '0.1.2', rolled_back: true });
    t.equal(current(), 'versions/0.1.1', 'current points back at the previous version');
    t.notOk(agent.updatePending(), 'the marker is gone once the rollback was reported');
    await waitAgentState(cp, inst.id, 'connected');
    t.equal((await agentVersion()).agent_version, '0.1.1');
    t.match(log(), /running a new version on probation/, '0.1.2 did start');
    t.match(log(), /update rolled back/, 'and rolled itself back');
    const rows = await audit('agent.update.rolled_back');
    t.equal(rows.length, 1);
    t.equal(rows[0]?.error_key, 'update_rolled_back');
  });

  await t.test('with allow_downgrade the older version is installed', async (t) => {
    const res = await update({ version: '0.1.0', allow_downgrade: true });
    const c = await outcome(res.body.command_id);
    t.equal(c.state, 'succeeded', `${c.error_key ?? ''} ${c.error_message ?? ''}`);
    t.equal(current(), 'versions/0.1.0');
    await waitAgentState(cp, inst.id, 'connected');
    t.equal((await agentVersion()).agent_version, '0.1.0');
  });
});

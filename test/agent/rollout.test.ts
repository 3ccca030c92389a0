import t from 'tap';
import { agentArtifact, artifactSkipReason, releasesDir } from '../helpers/agent-artifact.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { eventually, freePort } from '../helpers/cp-process.ts';
import { installAgent, installedAgentSkipReason } from '../helpers/installed-agent.ts';
import type { InstalledAgent } from '../helpers/installed-agent.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { waitAgentState } from '../helpers/real-agent.ts';
import { rolloutEnd, rolloutWhere } from '../helpers/rollouts.ts';
import type { Rollout } from '../helpers/rollouts.ts';

/**
 * Fleet rollouts end to end: single-executable builds of the agent (0.1.0 installed by
 * install-agent.sh on three "VMs" here, 0.1.1 and 0.1.3 that connect, 0.1.2 built with
 * the test fault never-connect), a real control plane serving them, and
 * POST /api/agents/updates. Each agent runs under the install script's restart loop,
 * which starts `current` again when the agent exits to switch versions.
 */

/** Polls a local file condition (the agent's marker and links); a bound for a stuck agent, not a speed check. */
async function until(what: string, probe: () => boolean, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const skip = prerequisite(artifactSkipReason) || prerequisite(installedAgentSkipReason);

t.test('fleet rollouts over installed agents', { skip }, async (t) => {
  t.setTimeout(1_200_000);
  const base = await agentArtifact({ version: '0.1.0' });
  const next = await agentArtifact({ version: '0.1.1' });
  const broken = await agentArtifact({ version: '0.1.2', fault: 'never-connect' });
  const later = await agentArtifact({ version: '0.1.3' });
  // A fixed port: the restart below comes back where the agents dial.
  const cp = await startTestControlPlane({
    config: { port: await freePort(), agentReleasesDir: releasesDir(t, [base, next, broken, later]), agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 5_000 } },
  });
  t.teardown(() => cp.close());

  // A shorter confirmation window for the never-connecting release (the default is 120 s),
  // still long enough for a new version to connect across a control-plane restart.
  const agentConfig = { update: { confirm_within_ms: 20_000 }, reconnect: { base_ms: 100, cap_ms: 1_000 } };
  const fleet: InstalledAgent[] = [];
  for (let i = 0; i < 3; i++) fleet.push(await installAgent(t, cp, { version: '0.1.0', agentConfig }));
  const ids = fleet.map((a) => a.instanceId);
  const at = (i: number): InstalledAgent => fleet[i] as InstalledAgent;

  const post = (body: unknown) => cp.api<Rollout & { error?: string; message?: string }>('POST', '/api/agents/updates', { body });
  const version = async (id: string) => (await cp.api<{ agent: { agent_version: string } }>('GET', `/api/instances/${id}`)).body.agent.agent_version;
  const audit = async (action: string, rolloutId: string) =>
    (await cp.api<{ items: { target_ids: Record<string, string> | null; error_key: string | null }[] }>('GET', `/api/audit?action=${action}&limit=100`)).body.items.filter(
      (r) => r.target_ids?.rollout_id === rolloutId,
    );
  const logs = () => fleet.map((a) => `--- ${a.name}\n${a.log().slice(-2000)}`).join('\n');

  await t.test('a rollout to a version that connects switches every agent', async (t) => {
    const res = await post({ version: '0.1.1', instance_ids: ids, batch_size: 2, max_failures: 1 });
    t.equal(res.status, 202, JSON.stringify(res.body));
    t.same(res.body.agents.map((a) => a.batch), [0, 0, 1]);
    const done = await rolloutEnd(cp, res.body.id).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${logs()}`);
    });
    t.equal(done.status, 'succeeded', JSON.stringify(done.agents));
    t.same(
      done.agents.map((a) => [a.instance_id, a.state, a.from_version, a.to_version, a.error_key]),
      ids.map((id) => [id, 'succeeded', '0.1.0', '0.1.1', null]),
    );
    for (const a of fleet) {
      t.equal(a.current(), 'versions/0.1.1', `${a.name}: current switched`);
      t.same(a.versions(), ['0.1.0', '0.1.1'], `${a.name}: the previous version stays for a rollback`);
      // The agent sends its result first and removes the marker once the result is journaled: the rollout can end a moment before.
      t.ok(await eventually(`${a.name}'s update marker removed`, () => (a.updatePending() ? undefined : true)), `${a.name}: the marker is gone`);
      t.equal(await version(a.instanceId), '0.1.1', `${a.name}: connected on 0.1.1`);
    }
    // The second batch started only once the first had its outcomes.
    const [a0, a1, a2] = done.agents;
    t.ok(Date.parse(a2?.started_at ?? '') >= Math.max(Date.parse(a0?.finished_at ?? ''), Date.parse(a1?.finished_at ?? '')), 'batch 1 after batch 0');
    const rows = await audit('agent.update.succeeded', done.id);
    t.same(rows.map((r) => r.target_ids?.id).sort(), [...ids].sort(), 'one agent.update.succeeded row per agent');
    t.equal((await audit('agent.rollout.succeeded', done.id)).length, 1);
  });

  await t.test('max_failures 1 and a version that never connects: rolled back, reported, the rest skipped', async (t) => {
    const res = await post({ version: '0.1.2', instance_ids: ids, batch_size: 1, max_failures: 1 });
    t.equal(res.status, 202, JSON.stringify(res.body));
    const done = await rolloutEnd(cp, res.body.id).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${logs()}`);
    });
    t.equal(done.status, 'stopped');
    t.equal(done.error_key, 'rollout_stopped');
    const [first, ...rest] = done.agents;
    t.equal(first?.state, 'rolled_back');
    t.equal(first?.error_key, 'update_rolled_back');
    t.match(first?.error_message, /vmkit-agent 0\.1\.2 was rolled back to 0\.1\.1: it did not connect within 20000 ms/);
    t.equal(first?.from_version, '0.1.1');
    t.equal(first?.to_version, '0.1.1', 'it runs the previous version again');
    t.same(
      rest.map((a) => [a.state, a.command_id, a.error_key]),
      [
        ['skipped', null, 'rollout_stopped'],
        ['skipped', null, 'rollout_stopped'],
      ],
    );
    t.equal(at(0).current(), 'versions/0.1.1', 'the failed agent is back on 0.1.1');
    t.match(at(0).log(), /running a new version on probation/, '0.1.2 did start');
    t.match(at(0).log(), /update rolled back/);
    await waitAgentState(cp, ids[0] ?? '', 'connected');
    t.equal(await version(ids[0] ?? ''), '0.1.1');
    for (const a of fleet.slice(1)) {
      t.equal(a.current(), 'versions/0.1.1', `${a.name} untouched`);
      t.notOk(a.versions().includes('0.1.2'), `${a.name} never downloaded 0.1.2`);
    }
    const rolledBack = await audit('agent.update.rolled_back', done.id);
    t.same(rolledBack.map((r) => [r.target_ids?.id, r.error_key]), [[ids[0], 'update_rolled_back']]);
    t.same((await audit('agent.update.skipped', done.id)).map((r) => r.target_ids?.id).sort(), ids.slice(1).sort());
    t.equal((await audit('agent.rollout.stopped', done.id)).length, 1);
  });

  await t.test('a control-plane restart mid-rollout: the update under way is confirmed, the next batch follows', async (t) => {
    const res = await post({ version: '0.1.3', instance_ids: ids.slice(0, 2), batch_size: 1, max_failures: 1 });
    t.equal(res.status, 202, JSON.stringify(res.body));
    const sent = await rolloutWhere(cp, res.body.id, (r) => r.agents[0]?.command_id !== null);
    // Restart once the agent has the release (a download cut by the restart is a failure of its own):
    // the marker is written after the checks, right before the switch.
    await until(`${at(0).name} staged 0.1.3`, () => at(0).updatePending() || at(0).current() === 'versions/0.1.3');
    await cp.restart();
    const done = await rolloutEnd(cp, res.body.id).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${logs()}`);
    });
    t.equal(done.status, 'succeeded', JSON.stringify(done.agents));
    t.same(
      done.agents.map((a) => [a.state, a.from_version, a.to_version]),
      [
        ['succeeded', '0.1.1', '0.1.3'],
        ['succeeded', '0.1.1', '0.1.3'],
      ],
    );
    t.equal(done.agents[0]?.command_id, sent.agents[0]?.command_id, 'the first agent was sent one command, before the restart');
    t.equal(at(0).current(), 'versions/0.1.3');
    t.equal(at(1).current(), 'versions/0.1.3');
    t.equal(at(2).current(), 'versions/0.1.1', 'the agent outside the rollout is untouched');
    t.equal((await audit('agent.rollout.resumed', done.id)).length, 1);
    t.same((await audit('agent.update.succeeded', done.id)).map((r) => r.target_ids?.id).sort(), ids.slice(0, 2).sort(), 'one result row per agent');
    t.same(await audit('agent.update.failed', done.id), [], 'the restart is not a failure');
  });
});

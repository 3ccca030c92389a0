/**
 * The rollout tables (agent_rollouts, agent_rollout_targets) and agents.platform, once
 * per dialect: one running rollout per workspace even when two start together, targets
 * in batches, JSON and boolean columns, counts, skipping, and the command lookup a
 * resumed rollout uses.
 */
import t from 'tap';
import { newId } from '@vmkit/protocol';
import {
  countTargetsByState,
  createRunningRollout,
  findRunningRollout,
  findUpdateCommandSince,
  getRollout,
  getRolloutById,
  listRolloutTargets,
  listRollouts,
  listRunningRollouts,
  skipPendingTargets,
  updateRollout,
  updateTarget,
} from '../../control-plane/src/db/agent-rollouts.ts';
import type { NewRollout } from '../../control-plane/src/db/agent-rollouts.ts';
import { createAgent, getAgentById } from '../../control-plane/src/db/agents.ts';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

for (const { dialect, skip } of testDialects()) {
  t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
    const db = await openTestDatabase(t, dialect);
    const ws = await createWorkspace(db, 'rollouts');
    const other = await createWorkspace(db, 'other');
    const fleet: { instanceId: string; agentId: string; platform: string; fromVersion: string }[] = [];
    for (let i = 0; i < 5; i++) {
      const inst = await createInstance(db, { workspaceId: ws.id, name: `vm-${i}`, provider: 'manual' });
      const agent = await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: `pk-${i}` });
      fleet.push({ instanceId: inst.id, agentId: agent.id, platform: 'linux-x64', fromVersion: '0.1.0' });
    }
    const ask = (over: Partial<NewRollout> = {}): NewRollout => ({
      workspaceId: ws.id,
      keyId: null,
      version: '0.1.1',
      allowDowngrade: true,
      selection: { instance_ids: fleet.map((f) => f.instanceId) },
      batchSize: 2,
      maxFailures: 1,
      targets: fleet,
      ...over,
    });

    t.test('agents.platform is written by the hub at connect', async (t) => {
      const store = openHubStore(db);
      const [a] = fleet;
      await store.markConnected(a?.agentId ?? '', { connectedAt: 5, publicKey: 'pk-0', agentVersion: '0.1.0', hostname: 'h', os: 'o', platform: 'linux-x64' });
      t.match(await getAgentById(db, a?.agentId ?? ''), { state: 'connected', platform: 'linux-x64', agentVersion: '0.1.0' });
      await store.markConnected(a?.agentId ?? '', { connectedAt: 6, publicKey: 'pk-0', agentVersion: '0.0.1', hostname: 'h', os: 'o', platform: null });
      t.equal((await getAgentById(db, a?.agentId ?? ''))?.platform, null, 'an agent that does not tell it has none');
    });

    t.test('one running rollout per workspace, even when two start together', async (t) => {
      const [x, y] = await Promise.all([createRunningRollout(db, ask(), 10), createRunningRollout(db, ask({ version: '0.1.2' }), 10)]);
      t.equal([x, y].filter((r) => r.created).length, 1, 'one created');
      t.equal(x.rollout.id, y.rollout.id, 'both answer the running one');
      const id = x.rollout.id;
      t.match(await getRollout(db, ws.id, id), { status: 'running', allowDowngrade: true, selection: { instance_ids: fleet.map((f) => f.instanceId) }, batchSize: 2 });
      t.equal(await getRollout(db, other.id, id), undefined, 'not visible to another workspace');
      t.equal((await findRunningRollout(db, ws.id))?.id, id);
      const theirs = await createRunningRollout(db, ask({ workspaceId: other.id, targets: [], selection: { percent: 10 } }), 11);
      t.ok(theirs.created, 'another workspace runs its own');
      t.same((await listRunningRollouts(db)).map((r) => r.id).sort(), [id, theirs.rollout.id].sort());

      const targets = await listRolloutTargets(db, id);
      t.same(
        targets.map((r) => [r.seq, r.batch, r.state, r.fromVersion]),
        [0, 1, 2, 3, 4].map((i) => [i, Math.floor(i / 2), 'pending', '0.1.0']),
      );
      const [first, second] = targets;
      await updateTarget(db, first?.id ?? '', { state: 'rolled_back', commandId: 'cmd_x', errorKey: 'update_rolled_back', startedAt: 20, finishedAt: 30 });
      await updateTarget(db, second?.id ?? '', { state: 'succeeded', toVersion: '0.1.1', finishedAt: 31 });
      const skipped = await skipPendingTargets(db, id, { errorKey: 'rollout_stopped', errorMessage: 'stopped' }, 40);
      t.same(skipped.map((r) => r.seq).sort(), [2, 3, 4], 'the pending ones, returned');
      t.same(Object.fromEntries(await countTargetsByState(db, [id, theirs.rollout.id])), { [id]: { rolled_back: 1, succeeded: 1, skipped: 3 } });
      t.same(await countTargetsByState(db, []), new Map());

      await updateRollout(db, id, { status: 'stopped', errorKey: 'rollout_stopped', finishedAt: 41 }, 41);
      t.match(await getRolloutById(db, id), { status: 'stopped', updatedAt: 41, finishedAt: 41 });
      t.equal(await findRunningRollout(db, ws.id), undefined);
      const again = await createRunningRollout(db, ask(), 50);
      t.ok(again.created, 'a new one once the first ended');
      t.same((await listRollouts(db, ws.id)).map((r) => r.id), [again.rollout.id, id], 'newest first');
    });

    t.test('the agent.update a restarted rollout looks for', async (t) => {
      const store = openHubStore(db);
      const [, b] = fleet;
      const agentId = b?.agentId ?? '';
      const cmd = (type: 'agent.update' | 'ping', createdAt: number) => ({
        id: newId('command'),
        agentId,
        type,
        envelope: {} as never,
        signature: 'sig',
        state: 'queued' as const,
        createdAt,
        expiresAt: createdAt + 60_000,
      });
      const old = cmd('agent.update', 100);
      const ping = cmd('ping', 300);
      const update = cmd('agent.update', 200);
      for (const c of [old, ping, update]) await store.insert(c);
      t.equal((await findUpdateCommandSince(db, agentId, 150))?.id, update.id, 'the update sent since, not a ping');
      t.equal(await findUpdateCommandSince(db, agentId, 250), undefined, 'none since');
    });
  });
}

/**
 * Leases on deploys and agent rollouts (db/leases.ts), once per dialect: the creator holds
 * the lease; nobody claims it while it is renewed; after it runs out another node claims
 * it with a new generation; the old holder's fenced writes are then refused and change
 * nothing; a released lease is claimable at once; two nodes claiming together never take
 * the same row (SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL).
 */
import t from 'tap';
import { createRunningRollout, fencedFinishRollout, fencedTargetWrite, getRolloutById, listRolloutTargets } from '../../control-plane/src/db/agent-rollouts.ts';
import { createAgent } from '../../control-plane/src/db/agents.ts';
import { createRunningDeploy, fencedDeployWrite, getDeployById, listDeploySteps, updateDeploy } from '../../control-plane/src/db/deploys.ts';
import { createEnvironment } from '../../control-plane/src/db/environments.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { LeaseLost, claimLeases, leaseOf, releaseLeases, renewLeases } from '../../control-plane/src/db/leases.ts';
import type { Lease } from '../../control-plane/src/db/leases.ts';
import { createRepo } from '../../control-plane/src/db/repos.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { ConfigError, loadConfig } from '../../control-plane/src/config.ts';
import type { AppContext } from '../../control-plane/src/app.ts';
import { LeaseKeeper } from '../../control-plane/src/services/leases.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

const LEASE_MS = 30_000;
const T0 = 1_900_000_000_000;
const terms = (nodeId: string, now: number) => ({ nodeId, now, durationMs: LEASE_MS });

t.test('lease duration and check interval: flags, then the environment, then 30 s / 10 s', async (t) => {
  t.same(loadConfig([], {}).leases, { durationMs: 30_000, checkMs: 10_000 });
  t.same(loadConfig([], { VMKIT_LEASE_MS: '1500', VMKIT_LEASE_CHECK_MS: '250' }).leases, { durationMs: 1500, checkMs: 250 });
  t.same(loadConfig(['--lease-ms', '9000'], { VMKIT_LEASE_MS: '1500' }).leases, { durationMs: 9000, checkMs: 3000 }, 'a shorter lease alone brings the check down to a third');
  const err = t.throws(() => loadConfig(['--lease-ms', '1000', '--lease-check-ms', '600'], {}));
  t.type(err, ConfigError);
  t.match((err as Error).message, /at most half the lease duration/);
  t.throws(() => loadConfig(['--lease-ms', 'soon'], {}), /lease duration must be a whole number/);
});

for (const { dialect, skip } of testDialects()) {
  t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
    const db = await openTestDatabase(t, dialect);
    const ws = await createWorkspace(db, 'leases');
    const { repo } = await createRepo(db, ws.id, 'acme', 'shop');
    let envs = 0;
    const newDeploy = async (lease?: { nodeId: string; now: number }) => {
      const { environment } = await createEnvironment(db, ws.id, repo.id, `env-${envs++}`);
      const { deploy } = await createRunningDeploy(db, {
        workspaceId: ws.id,
        repoId: repo.id,
        environmentId: environment.id,
        currentStep: 'provisioning',
        ...(lease ? { lease: terms(lease.nodeId, lease.now) } : {}),
      });
      return deploy;
    };

    t.test('deploy: held by its creator, renewed, stolen after expiry, the old holder fenced out', async (t) => {
      const d = await newDeploy({ nodeId: 'node-a', now: T0 });
      t.match(await leaseOf(db, 'deploys', d.id), { owner: 'node-a', expiresAt: T0 + LEASE_MS, generation: 1 }, 'the creator holds generation 1');
      const a: Lease = { id: d.id, nodeId: 'node-a', generation: 1 };

      t.same(await claimLeases(db, 'deploys', terms('node-b', T0 + LEASE_MS - 1)), [], 'nobody claims a lease that still holds');
      t.same([...(await renewLeases(db, 'deploys', terms('node-a', T0 + 20_000), [d.id]))], [d.id], 'the holder renews');
      t.equal((await leaseOf(db, 'deploys', d.id))?.expiresAt, T0 + 20_000 + LEASE_MS, 'the renewal moved the expiry');
      t.same(await claimLeases(db, 'deploys', terms('node-b', T0 + LEASE_MS + 1)), [], 'the renewed lease holds past the first expiry');
      t.same([...(await renewLeases(db, 'deploys', terms('node-b', T0 + 21_000), [d.id]))], [], 'another node cannot renew a lease it does not hold');

      await fencedDeployWrite(db, a, { currentStep: 'waiting_for_agent' }, T0 + 21_000, { seq: 1, values: { name: 'waiting_for_agent', state: 'running', attempts: 1 } });
      t.match(await getDeployById(db, d.id), { currentStep: 'waiting_for_agent', updatedAt: T0 + 21_000 }, 'the holder writes');

      // The holder stalls: no renewal, the lease runs out and node-b claims it.
      const stolenAt = T0 + 20_000 + LEASE_MS + 1;
      const claimed = await claimLeases(db, 'deploys', terms('node-b', stolenAt));
      t.same(claimed, [{ id: d.id, nodeId: 'node-b', generation: 2, previousOwner: 'node-a' }], 'node-b claims it with generation 2, naming the holder before');
      t.same(await claimLeases(db, 'deploys', terms('node-c', stolenAt + 1)), [], 'a third node finds nothing to claim');

      await t.rejects(
        fencedDeployWrite(db, a, { currentStep: 'hardening' }, stolenAt + 5, { seq: 2, values: { name: 'hardening', state: 'running', attempts: 1 } }),
        LeaseLost,
        "the old holder's next step is refused",
      );
      t.match(await getDeployById(db, d.id), { currentStep: 'waiting_for_agent', updatedAt: T0 + 21_000 }, 'the refused write changed nothing on the deploy');
      t.notOk((await listDeploySteps(db, d.id)).some((s) => s.name === 'hardening'), 'nor wrote its step');
      t.same([...(await renewLeases(db, 'deploys', terms('node-a', stolenAt + 6), [d.id]))], [], 'the old holder learns it lost the lease at its next renewal');

      const b: Lease = { id: d.id, nodeId: 'node-b', generation: 2 };
      await fencedDeployWrite(db, b, { currentStep: 'hardening' }, stolenAt + 7, { seq: 2, values: { name: 'hardening', state: 'running', attempts: 1 } });
      t.equal((await getDeployById(db, d.id))?.currentStep, 'hardening', 'the new holder goes on');

      t.equal(await releaseLeases(db, 'deploys', 'node-a', [d.id]), 0, 'a node cannot release a lease it does not hold');
      t.equal(await releaseLeases(db, 'deploys', 'node-b', [d.id]), 1, 'the holder releases at a clean stop');
      t.match(await leaseOf(db, 'deploys', d.id), { owner: null, expiresAt: null, generation: 2 });
      t.same(
        await claimLeases(db, 'deploys', terms('node-c', stolenAt + 8)),
        [{ id: d.id, nodeId: 'node-c', generation: 3, previousOwner: null }],
        'a released lease is claimed at once, long before it would have run out',
      );
      await updateDeploy(db, d.id, { status: 'succeeded' });
      t.same(await claimLeases(db, 'deploys', terms('node-a', stolenAt + 10 * LEASE_MS)), [], 'an ended deploy is never claimed');
      t.same([...(await renewLeases(db, 'deploys', terms('node-c', stolenAt + 9), [d.id]))], [], 'nor renewed');
    });

    t.test('a node restarted under the same id takes back what it held; what it drives is never claimed again', async (t) => {
      const d = await newDeploy({ nodeId: 'node-r', now: T0 });
      t.same(await claimLeases(db, 'deploys', terms('node-r', T0 + 1), { exclude: [d.id] }), [], 'excluded: this process drives it');
      t.same(
        (await claimLeases(db, 'deploys', terms('node-r', T0 + 1))).map((c) => [c.id, c.generation, c.previousOwner]),
        [[d.id, 2, 'node-r']],
        'not excluded (a restart): its own unexpired lease is taken back, with a new generation',
      );
      const other = await newDeploy({ nodeId: 'node-x', now: T0 });
      t.same(await claimLeases(db, 'deploys', terms('node-r', T0 + 2), { exclude: [d.id] }), [], "another node's live lease is left alone");
      t.same(
        (await claimLeases(db, 'deploys', terms('node-r', T0 + 2), { exclude: [d.id], all: true })).map((c) => c.id),
        [other.id],
        'all (SQLite, the only process, at start) takes every running deploy',
      );
      await updateDeploy(db, d.id, { status: 'failed' });
      await updateDeploy(db, other.id, { status: 'failed' });
    });

    t.test('two nodes claiming together never take the same deploy', async (t) => {
      const made = [];
      for (let i = 0; i < 8; i++) made.push((await newDeploy({ nodeId: 'node-dead', now: T0 })).id);
      const at = T0 + LEASE_MS + 1;
      const [p, q] = await Promise.all([claimLeases(db, 'deploys', terms('node-p', at)), claimLeases(db, 'deploys', terms('node-q', at))]);
      const ids = [...p, ...q].map((c) => c.id).sort();
      t.same(ids, [...made].sort(), 'every expired deploy is claimed, each by exactly one node');
      for (const id of made) t.equal((await leaseOf(db, 'deploys', id))?.generation, 2, 'claimed once');
      for (const id of made) await updateDeploy(db, id, { status: 'failed' });
    });

    t.test('the keeper tells a driver its lease is lost only when another node took it, not when the deploy ended here', async (t) => {
      const now = Date.now();
      const ended = await newDeploy({ nodeId: 'keeper-a', now });
      const taken = await newDeploy({ nodeId: 'keeper-a', now });
      const lost: string[] = [];
      const adopted: string[] = [];
      // The keeper reads only db, nodeId, config.leases and logger from the context.
      const ctx = { db, nodeId: 'keeper-a', config: { leases: { durationMs: LEASE_MS, checkMs: 10_000 } }, logger: { error: () => undefined } } as unknown as AppContext;
      const keeper = new LeaseKeeper(ctx, 'deploys', { adopt: async (c) => void adopted.push(c.id), lost: (id) => void lost.push(id) });
      t.teardown(() => keeper.stop());
      keeper.hold({ id: ended.id, nodeId: 'keeper-a', generation: 1 });
      keeper.hold({ id: taken.id, nodeId: 'keeper-a', generation: 1 });
      await updateDeploy(db, ended.id, { status: 'succeeded' }, now + 1);
      await releaseLeases(db, 'deploys', 'keeper-a', [taken.id]);
      const [claimed] = await claimLeases(db, 'deploys', terms('keeper-b', now + 2));
      t.equal(claimed?.id, taken.id, 'keeper-b holds the second deploy now');

      await keeper.tick();
      t.same(lost, [taken.id], 'only the deploy another node took is lost');
      t.notOk(keeper.holds(ended.id), 'the ended one is let go');
      t.notOk(keeper.holds(taken.id));
      t.notOk(adopted.includes(taken.id), 'and the taken one is not claimed back');
    });

    t.test('rollout: fenced target and finish writes', async (t) => {
      const fleet = [];
      for (let i = 0; i < 3; i++) {
        const inst = await createInstance(db, { workspaceId: ws.id, name: `lease-vm-${i}`, provider: 'manual' });
        const agent = await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: `lease-pk-${i}` });
        fleet.push({ instanceId: inst.id, agentId: agent.id, platform: 'linux-x64', fromVersion: '0.1.0' });
      }
      const { rollout } = await createRunningRollout(
        db,
        { workspaceId: ws.id, keyId: null, version: '0.1.1', allowDowngrade: false, selection: { percent: 100 }, batchSize: 1, maxFailures: 1, targets: fleet, lease: terms('node-a', T0) },
        T0,
      );
      t.match(rollout, { leaseOwner: 'node-a', leaseExpiresAt: T0 + LEASE_MS, leaseGeneration: 1 });
      const a: Lease = { id: rollout.id, nodeId: 'node-a', generation: 1 };
      const [first, second] = await listRolloutTargets(db, rollout.id);
      await fencedTargetWrite(db, a, first?.id ?? '', { state: 'updating', startedAt: T0 + 1 }, T0 + 1);
      t.equal((await getRolloutById(db, rollout.id))?.updatedAt, T0 + 1, "a target's change moves the rollout's updated_at with it");
      // A batch's targets are written concurrently: two writes may share a millisecond or commit out of order.
      await fencedTargetWrite(db, a, second?.id ?? '', { startedAt: T0 + 1 }, T0 + 1);
      t.equal((await getRolloutById(db, rollout.id))?.updatedAt, T0 + 2, 'a second write in the same millisecond still moves it past the first');
      await fencedTargetWrite(db, a, second?.id ?? '', { startedAt: T0 + 1 }, T0);
      t.equal((await getRolloutById(db, rollout.id))?.updatedAt, T0 + 3, 'a write stamped earlier never moves it back');

      const [claimed] = await claimLeases(db, 'agentRollouts', terms('node-b', T0 + LEASE_MS + 1));
      t.match(claimed, { id: rollout.id, nodeId: 'node-b', generation: 2, previousOwner: 'node-a' }, 'node-b claims the rollout after expiry');
      await t.rejects(fencedTargetWrite(db, a, second?.id ?? '', { state: 'updating', startedAt: T0 + 2 }, T0 + 2), LeaseLost, 'the old holder cannot start the next update');
      t.equal((await listRolloutTargets(db, rollout.id))[1]?.state, 'pending', 'the refused write changed nothing');
      await t.rejects(fencedFinishRollout(db, a, { status: 'succeeded', finishedAt: T0 + 3 }, T0 + 3), LeaseLost, 'nor end the rollout');
      t.equal((await getRolloutById(db, rollout.id))?.status, 'running');

      const b: Lease = { id: rollout.id, nodeId: 'node-b', generation: 2 };
      const skipped = await fencedFinishRollout(db, b, { status: 'stopped', errorKey: 'rollout_stopped', errorMessage: 'stop', finishedAt: T0 + 4 }, T0 + 4, {
        errorKey: 'rollout_stopped',
        errorMessage: 'stop',
      });
      t.same(skipped.map((s) => s.seq).sort(), [1, 2], 'the holder stops it, the pending targets skipped in the same transaction');
      t.match(await getRolloutById(db, rollout.id), { status: 'stopped', updatedAt: T0 + 4 });
      t.same(await claimLeases(db, 'agentRollouts', terms('node-c', T0 + 10 * LEASE_MS)), [], 'an ended rollout is never claimed');
    });
  });
}

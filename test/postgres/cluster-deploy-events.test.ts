/**
 * Two control planes on one PostgreSQL database, both in this process: a deploy driven
 * by A (its lease, its DeployRecord writing each step and waking long-polls, as the
 * runner does) wakes a long-poll that landed on B, through NOTIFY vmkit_deploy_events
 * on B's LISTEN connection; B's LISTEN connection cut, a change after it listens again
 * still reaches B's waiter, and one missed while it was away is read at the resync.
 *
 * Each poll asks wait_ms=60000 with after=<updated_at>; the test waits until B holds the
 * poll (B's waiter count), only then changes the deploy on A, and asserts the answer
 * carries that change: a poll left unwoken would answer the old state after 60 s.
 * The resync's poll waits longer than the client does (see there).
 */
import pg from 'pg';
import t from 'tap';
import type { Test } from 'tap';
import { createDeploy, getDeployById } from '../../control-plane/src/db/deploys.ts';
import type { DeployRow } from '../../control-plane/src/db/deploys.ts';
import { createEnvironment } from '../../control-plane/src/db/environments.ts';
import { leaseOf } from '../../control-plane/src/db/leases.ts';
import { rawExec, sql } from '../../control-plane/src/db/raw.ts';
import { createRepo } from '../../control-plane/src/db/repos.ts';
import { DeployRecord } from '../../control-plane/src/services/deploy/record.ts';
import { deployServiceOf } from '../../control-plane/src/services/deploy/service.ts';
import { cutListen, startTestCluster } from '../helpers/cluster.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';
import type { DeployBody } from '../helpers/deploy-rig.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';

t.setTimeout(300_000);

const DRIVER = 'dev-a-driver';

interface Rig {
  a: TestControlPlane;
  b: TestControlPlane;
  admin: pg.Client;
  /** A's record of a running deploy, leased (its runner's writes go through one such). */
  record: DeployRecord;
  row: DeployRow;
}

async function rig(t: Test): Promise<Rig> {
  const { nodes, databaseUrl } = await startTestCluster(t, { nodeIds: ['dev-a', 'dev-b'] });
  const [a, b] = nodes as [TestControlPlane, TestControlPlane];
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  t.teardown(() => admin.end());
  const db = a.ctx.db;
  const { repo } = await createRepo(db, a.workspaceId, 'acme', 'shop');
  const { environment } = await createEnvironment(db, a.workspaceId, repo.id, 'staging');
  // Driven by a record of A's (A's DeployEvents, so A's relay), under a lease of an hour
  // held in the name of a driver of its own: A's lease keeper would claim a row leased to
  // its own node id that it does not drive, and then drive it itself; nobody claims this one.
  const row = await createDeploy(db, {
    workspaceId: a.workspaceId,
    repoId: repo.id,
    environmentId: environment.id,
    status: 'running',
    sha: 'c'.repeat(40),
    currentStep: 'hardening',
    lease: { nodeId: DRIVER, now: Date.now(), durationMs: 3_600_000 },
  });
  const record = await DeployRecord.load({ db, events: deployServiceOf(a.ctx).events, now: () => Date.now() }, row, {
    id: row.id,
    nodeId: DRIVER,
    generation: row.leaseGeneration,
  });
  return { a, b, admin, record, row };
}

/** Starts a long-poll on `cp` after `updatedAt` and resolves once `cp` holds it waiting. */
async function pollHeld(cp: TestControlPlane, id: string, updatedAt: string, waitMs = 60_000): Promise<{ answer: Promise<DeployBody> }> {
  const before = deployServiceOf(cp.ctx).events.waiting(id);
  const poll = cp.api<DeployBody>('GET', `/api/deploys/${id}?wait_ms=${waitMs}&after=${encodeURIComponent(updatedAt)}`).then((r) => {
    if (r.status !== 200) throw new Error(`GET /api/deploys/${id}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  });
  poll.catch(() => undefined); // awaited by the caller; a failure before that is reported there
  await eventually('the long-poll to wait', () => (deployServiceOf(cp.ctx).events.waiting(id) > before ? true : undefined));
  return { answer: poll };
}

async function current(cp: TestControlPlane, id: string): Promise<DeployBody> {
  const r = await cp.api<DeployBody>('GET', `/api/deploys/${id}`);
  if (r.status !== 200) throw new Error(`GET /api/deploys/${id}: ${r.status}`);
  return r.body;
}


if (fileNeeds(postgresMissing())) {
  t.test('a deploy changed on A wakes a long-poll held on B', async (t) => {
    const { a, b, record, row } = await rig(t);
    t.ok(deployServiceOf(a.ctx).clusterEvents, 'A relays deploy changes');
    t.ok(deployServiceOf(b.ctx).clusterEvents, 'B hears them');
    const seen = await current(b, row.id);
    t.equal(seen.current_step, 'hardening');

    const heardBefore = b.ctx.clusterNode?.notifyStats().received ?? 0;
    const poll = await pollHeld(b, row.id, seen.updated_at);
    await record.stepStarted('dns');
    const woken = await poll.answer;
    t.equal(woken.current_step, 'dns', 'B answered with the step A started after the poll began');
    t.match(woken.steps.find((s) => s.name === 'dns'), { state: 'running', attempts: 1 });
    t.ok(Date.parse(woken.updated_at) > Date.parse(seen.updated_at), 'a newer updated_at');
    t.ok((b.ctx.clusterNode?.notifyStats().received ?? 0) > heardBefore, "B heard it on its LISTEN connection");
    t.equal(deployServiceOf(b.ctx).events.waiting(row.id), 0, "B's waiter is gone");

    // The next change, the next poll: the same way, also for the deploy's end.
    const poll2 = await pollHeld(b, row.id, woken.updated_at);
    await record.stepEnded('dns', 'succeeded', { host: 'shop.example.com' });
    const woken2 = await poll2.answer;
    t.match(woken2.steps.find((s) => s.name === 'dns'), { state: 'succeeded' }, 'B answered with the step ended on A');

    const poll3 = await pollHeld(b, row.id, woken2.updated_at);
    await record.succeed({ appUrl: 'https://shop.example.com' });
    const ended = await poll3.answer;
    t.match(ended, { status: 'succeeded', app_url: 'https://shop.example.com' }, 'B answered with the end');
    t.ok((deployServiceOf(a.ctx).clusterEvents?.stats().sent ?? 0) >= 3, 'A sent a NOTIFY per change (some coalesced at most)');
    t.equal(deployServiceOf(a.ctx).clusterEvents?.stats().failed, 0);
  });

  t.test("B's LISTEN connection cut: its waiters are woken after it listens again, and later changes reach them", async (t) => {
    const { b, admin, record, row } = await rig(t);
    await cutListen(t, admin, b, 'dev-b');
    const seen = await current(b, row.id);
    const poll = await pollHeld(b, row.id, seen.updated_at);
    await record.stepStarted('dns');
    const woken = await poll.answer;
    t.equal(woken.current_step, 'dns', 'a change on A after B listened again woke its poll');

    // A change B never hears of (written without a NOTIFY, as one lost while B was away):
    // the poll held across the cut re-reads at the resync and answers it. It asks the
    // longest wait (10 min), past the client's timeout (3 min): one the resync did not wake
    // would fail the test, not answer the change late.
    const poll2 = await pollHeld(b, row.id, woken.updated_at, 600_000);
    const at = Date.parse(woken.updated_at) + 1_000;
    await rawExec(b.ctx.db, sql`UPDATE deploys SET current_step = ${'dispatching'}, updated_at = ${at} WHERE id = ${row.id}`);
    t.equal((await getDeployById(b.ctx.db, row.id))?.currentStep, 'dispatching', 'the change is in the database');
    t.equal(deployServiceOf(b.ctx).events.waiting(row.id), 1, 'and the poll still waits: nothing told B');
    await cutListen(t, admin, b, 'dev-b');
    const resynced = await poll2.answer;
    t.equal(resynced.current_step, 'dispatching', 'the poll held across the cut answered the change made meanwhile');
    t.equal(Date.parse(resynced.updated_at), at, 'the change written without a NOTIFY, nothing after it');
    t.match(await leaseOf(b.ctx.db, 'deploys', row.id), { owner: DRIVER, generation: 1 }, 'nobody else drove the deploy meanwhile');
  });
}

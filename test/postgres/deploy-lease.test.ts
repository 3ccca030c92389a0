/**
 * Deploys and agent rollouts across control-plane processes on one PostgreSQL database,
 * each process a real `vmkit-control-plane serve` with its own node id (the three share
 * one data dir: the admin key, the secret-box key and the local compute provider's
 * folder), short leases (6 s, checked every 500 ms: room for a process stalled while its neighbours start on this loaded machine):
 *
 *   - a deploy driven by A, A killed with SIGKILL while the workflow run is followed:
 *     B and C, started together, resume it once between them after A's lease ran out;
 *     the DNS record is created once and the workflow dispatched once; the step under
 *     way at the kill runs again (it only follows the same run), no other step does;
 *     the survivor stopped with SIGTERM releases it and the last one takes it at once;
 *   - a running rollout left by a dead process, two processes starting together: one
 *     resumes it, the other only after the first stops cleanly and releases it.
 *
 * GitHub and Cloudflare are the local stand-ins; the deploy's VM is an instance row
 * with an address (its steps up to hardening are on record as done), so no sandbox runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { createRunningRollout } from '../../control-plane/src/db/agent-rollouts.ts';
import { createAgent } from '../../control-plane/src/db/agents.ts';
import { createDeploy, updateDeploy, upsertDeployStep } from '../../control-plane/src/db/deploys.ts';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { leaseOf } from '../../control-plane/src/db/leases.ts';
import { jsonColumn, rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { freePort, startControlPlaneProcess } from '../helpers/cp-process.ts';
import type { ControlPlaneProcess } from '../helpers/cp-process.ts';
import { DEST, FULL } from '../helpers/deploy-rig.ts';
import type { DeployBody } from '../helpers/deploy-rig.ts';
import { ZONE, configureDeployProviders, startDeployFakes } from '../helpers/deploy-process.ts';
import type { FakeCloudflare } from '../helpers/fake-cloudflare.ts';
import type { FakeGitHub } from '../helpers/fake-github.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';

t.setTimeout(900_000);

const DEPLOY_RESUMED = 'deploy: resumed a deploy no live process drove';
const ROLLOUT_RESUMED = 'agent rollout: resumed a rollout no live process drove';

interface Cluster {
  pgUrl: string;
  dataDir: string;
  db: Db;
  start(nodeId: string): Promise<ControlPlaneProcess>;
}

async function cluster(t: Test): Promise<Cluster> {
  const pgdb = await createTestDatabase();
  t.teardown(() => pgdb.drop());
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-lease-'));
  const procs: ControlPlaneProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
    rmSync(dataDir, { recursive: true, force: true });
  });
  const db = await openDatabase({ dataDir, databaseUrl: pgdb.url });
  t.teardown(() => closeDatabase(db));
  return {
    pgUrl: pgdb.url,
    dataDir,
    db,
    async start(nodeId) {
      const p = await startControlPlaneProcess({
        dataDir,
        port: await freePort(),
        env: { VMKIT_DATABASE_URL: pgdb.url, VMKIT_NODE_ID: nodeId, VMKIT_LEASE_MS: '6000', VMKIT_LEASE_CHECK_MS: '500', VMKIT_SSH_GATEWAY_PORT: '0' },
      });
      procs.push(p);
      return p;
    },
  };
}

/** The audit rows of `action`, oldest first, with their target ids. */
async function audits(db: Db, action: string): Promise<Record<string, string>[]> {
  const rows = await rawRows<{ target_ids: unknown }>(db, sql`SELECT target_ids FROM audit_log WHERE action = ${action} ORDER BY at, id`);
  return rows.map((r) => jsonColumn<Record<string, string>>(r.target_ids) ?? {});
}

/** Whichever of the processes logs `msg` first, with the line. */
async function firstToLog(procs: ControlPlaneProcess[], msg: string): Promise<{ proc: ControlPlaneProcess; log: Record<string, unknown> }> {
  return Promise.race(procs.map((proc) => proc.waitForLog((l) => l.msg === msg).then((log) => ({ proc, log }))));
}

async function must<T>(res: Promise<{ status: number; body: T }>, what: string): Promise<T> {
  const r = await res;
  if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Long-polls the deploy on `cp` (the process driving it wakes its long-polls) until `done`. */
async function until(cp: ControlPlaneProcess, id: string, done: (d: DeployBody) => boolean, what: string): Promise<DeployBody> {
  let after = '';
  for (let i = 0; i < 200; i++) {
    const res = await cp.api<DeployBody>('GET', `/api/deploys/${id}?wait_ms=5000${after ? `&after=${encodeURIComponent(after)}` : ''}`, undefined, 60_000);
    if (res.status !== 200) throw new Error(`GET /api/deploys/${id}: ${res.status} ${JSON.stringify(res.body)}`);
    if (done(res.body)) return res.body;
    after = res.body.updated_at;
  }
  throw new Error(`waited in vain for ${what}`);
}

/**
 * Process A with GitHub and DNS configured and the scaffolding merged, and a deploy of the
 * second phase as a process that died after hardening left it (a VM with an address, the
 * first steps done, the lease of the dead node run out): A claims it and drives it to the workflow
 * run, which stays queued until the test completes it.
 */
async function deployAtRun(t: Test, c: Cluster): Promise<{ a: ControlPlaneProcess; github: FakeGitHub; cloudflare: FakeCloudflare; id: string }> {
    const fakes = await startDeployFakes(t);
    const { github, cloudflare } = fakes;

    const a = await c.start('lease-a');
    await configureDeployProviders(a, fakes);
    const repo = await must(a.api<{ id: string; workspace_id?: string }>('POST', '/api/repos', { repo: FULL }), 'POST /api/repos');
    const env = await must(a.api<{ id: string }>('POST', `/api/repos/${repo.id}/environments`, { name: DEST }), 'POST environments');
    // The first phase for real: the scaffolding pull request, merged, puts the workflow on main.
    const first = await must(a.api<DeployBody>('POST', '/api/deploys', { repo: FULL, dest: DEST }), 'POST /api/deploys');
    t.equal(first.status, 'scaffolding_pr_open');
    github.writes.mergePull(FULL, github.writes.pulls(FULL)[0]?.number ?? 1);

    // The second phase as a process that died after hardening left it: a VM with an address, the first steps done, the lease of a node gone since run out.
    const [row] = await rawRows<{ workspace_id: string }>(c.db, sql`SELECT workspace_id FROM repos WHERE id = ${repo.id}`);
    const workspaceId = row?.workspace_id ?? '';
    const inst = await createInstance(c.db, { workspaceId, name: 'shop-staging', provider: 'manual', status: 'running', environmentId: env.id, sshHost: '203.0.113.7' });
    // Held by a node that is gone until every row is in place, so nobody claims it half-made.
    const d = await createDeploy(c.db, {
      workspaceId,
      repoId: repo.id,
      environmentId: env.id,
      status: 'running',
      sha: 'c'.repeat(40),
      currentStep: 'dns',
      lease: { nodeId: 'lease-dead', now: Date.now(), durationMs: 3_600_000 },
    });
    await updateDeploy(c.db, d.id, { instanceId: inst.id });
    const done = { state: 'succeeded' as const, attempts: 1, startedAt: Date.now(), finishedAt: Date.now() };
    await upsertDeployStep(c.db, d.id, 0, { name: 'scaffolding', state: 'skipped' });
    for (const [seq, name] of ['provisioning', 'waiting_for_agent', 'hardening'].entries()) await upsertDeployStep(c.db, d.id, seq + 1, { name, ...done });
    await rawExec(c.db, sql`UPDATE deploys SET lease_expires_at = 0 WHERE id = ${d.id}`);

    // A claims it at its next lease check and drives it to the workflow run, which stays queued.
    const atRun = (x: DeployBody) => x.status !== 'running' || x.steps.some((s) => s.name === 'running_workflow' && s.state === 'running');
    const running = await until(a, d.id, atRun, 'A to reach the workflow run');
    t.equal(running.status, 'running', `A reached the run: ${running.error_message ?? ''}`);
    t.match(await leaseOf(c.db, 'deploys', d.id), { owner: 'lease-a' }, 'A holds the lease');

    return { a, github, cloudflare, id: d.id };
}

if (fileNeeds(postgresMissing())) {
  t.test('a deploy whose process dies mid-way is finished by one other process; every step ran once', async (t) => {
    const c = await cluster(t);
    const { a, github, cloudflare, id } = await deployAtRun(t, c);
    const d = { id };
    a.kill('SIGKILL');
    await a.exited;
    // B and C start together: whichever claims first after A's lease ran out resumes it, the other never.
    const [b, cc] = await Promise.all([c.start('lease-b'), c.start('lease-c')]);
    const winner = await firstToLog([b, cc], DEPLOY_RESUMED);
    const other = winner.proc === b ? cc : b;
    const winnerId = String(winner.log.node_id);
    t.ok(['lease-b', 'lease-c'].includes(winnerId), `resumed by ${winnerId}`);
    t.match(await leaseOf(c.db, 'deploys', d.id), { owner: winnerId, generation: 3 }, 'the winner holds generation 3 (the node gone before had 1, A 2)');

    const again = await until(winner.proc, d.id, (x) => x.status !== 'running' || (x.steps.find((s) => s.name === 'running_workflow')?.attempts ?? 0) >= 2, 'the winner to follow the run');
    t.equal(again.status, 'running', 'the winner follows the run');
    // The winner stops cleanly: it releases the lease, and the last process takes it at once.
    winner.proc.kill('SIGTERM');
    t.equal(await winner.proc.exited, 0, 'the winner stopped cleanly');
    const last = await firstToLog([other], DEPLOY_RESUMED);
    const lastId = String(last.log.node_id);

    const run = github.writes.dispatched(FULL)[0];
    if (!run) throw new Error('no run was dispatched');
    github.writes.startRun(FULL, run.id);
    github.writes.completeRun(FULL, run.id, 'success');
    const ended = await until(other, d.id, (x) => x.status !== 'running', 'the deploy to end');
    t.match(ended, { status: 'succeeded', app_url: `https://shop-staging.${ZONE}`, error_key: null }, 'the same deploy succeeded');

    t.equal(github.writes.dispatched(FULL).length, 1, 'the workflow was dispatched once');
    t.equal(cloudflare.records().length, 1, 'one DNS record');
    t.equal(cloudflare.requests.filter((r) => r.method === 'POST').length, 1, 'created once');
    const attempts = Object.fromEntries(ended.steps.map((s) => [s.name, s.attempts]));
    t.same(
      { dns: attempts.dns, dispatching: attempts.dispatching, running_workflow: attempts.running_workflow },
      { dns: 1, dispatching: 1, running_workflow: 3 },
      'dns and dispatching ran once; following the run started again under each new holder',
    );
    const resumed = await audits(c.db, 'deploys.resumed');
    t.same(
      resumed.map((r) => [r.node_id, r.from_node_id, r.step]),
      [
        ['lease-a', 'lease-dead', 'dns'],
        [winnerId, 'lease-a', 'running_workflow'],
        [lastId, undefined, 'running_workflow'],
      ],
      'resumed once per holder: A (from the node gone before), the winner (from dead A), the last (released, so no previous holder)',
    );
    t.notSame(lastId, winnerId);
    t.match(await leaseOf(c.db, 'deploys', d.id), { generation: 4 }, 'three claims after the first holder');
  });

  t.test('a process paused past its lease loses the deploy to another and stops driving it', async (t) => {
    const c = await cluster(t);
    const { a, github, id } = await deployAtRun(t, c);
    const b = await c.start('lease-b');
    a.kill('SIGSTOP');
    t.teardown(() => a.kill('SIGCONT'));
    const claimed = await firstToLog([b], DEPLOY_RESUMED);
    t.match(claimed.log, { deploy_id: id, node_id: 'lease-b', from_node_id: 'lease-a' }, 'B claims the deploy once the paused holder stopped renewing');
    const following = await until(b, id, (x) => x.status !== 'running' || (x.steps.find((s) => s.name === 'running_workflow')?.attempts ?? 0) >= 2, 'B to follow the run');
    t.equal(following.status, 'running');

    // A wakes up: its next renewal (or its next write, fenced) tells it the lease is gone, and it stops.
    a.kill('SIGCONT');
    const stopped = await a.waitForLog((l) => l.deploy_id === id && (l.msg === 'deploy: lease lost to another process; stopping here' || l.msg === 'deploy: another process holds the lease now; this one stops driving it'));
    t.equal(stopped.node_id, 'lease-a', `A stopped: ${String(stopped.msg)}`);
    t.match(await leaseOf(c.db, 'deploys', id), { owner: 'lease-b', generation: 3 }, 'B keeps it');

    const run = github.writes.dispatched(FULL)[0];
    if (!run) throw new Error('no run was dispatched');
    github.writes.startRun(FULL, run.id);
    github.writes.completeRun(FULL, run.id, 'success');
    const ended = await until(b, id, (x) => x.status !== 'running', 'the deploy to end');
    t.equal(ended.status, 'succeeded', `B finished it: ${ended.error_message ?? ''}`);
    t.equal(github.writes.dispatched(FULL).length, 1, 'dispatched once');
    t.equal(ended.steps.find((s) => s.name === 'running_workflow')?.attempts, 2, 'the run was followed by A, then by B');
    t.equal((await audits(c.db, 'deploys.step.running_workflow.succeeded')).length, 1, 'the step ended once');
    t.equal((await audits(c.db, 'deploys.succeeded')).length, 1, 'the deploy ended once');
    t.same(
      (await audits(c.db, 'deploys.resumed')).map((r) => [r.node_id, r.from_node_id]),
      [
        ['lease-a', 'lease-dead'],
        ['lease-b', 'lease-a'],
      ],
      'A never took it back',
    );
  });

  t.test('a running rollout left by a dead process: two processes starting together, one resumes it', async (t) => {
    const c = await cluster(t);
    // The first start makes the workspace; then it dies with a rollout of one agent (never connected) running, its lease run out.
    const boot = await c.start('roll-boot');
    boot.kill('SIGKILL');
    await boot.exited;
    const [ws] = await rawRows<{ id: string }>(c.db, sql`SELECT id FROM workspaces`);
    const workspaceId = ws?.id ?? '';
    const inst = await createInstance(c.db, { workspaceId, name: 'roll-vm', provider: 'manual', status: 'running' });
    const agent = await createAgent(c.db, { workspaceId, instanceId: inst.id, publicKey: 'roll-pk' });
    const { rollout } = await createRunningRollout(c.db, {
      workspaceId,
      keyId: null,
      version: '9.9.9',
      allowDowngrade: false,
      selection: { percent: 100 },
      batchSize: 1,
      maxFailures: 1,
      targets: [{ instanceId: inst.id, agentId: agent.id, platform: 'linux-x64', fromVersion: '0.1.0' }],
      lease: { nodeId: 'roll-dead', now: Date.now() - 60_000, durationMs: 1500 },
    });

    const [p, q] = await Promise.all([c.start('roll-p'), c.start('roll-q')]);
    const winner = await firstToLog([p, q], ROLLOUT_RESUMED);
    const other = winner.proc === p ? q : p;
    const winnerId = String(winner.log.node_id);
    t.match(await leaseOf(c.db, 'agentRollouts', rollout.id), { owner: winnerId, generation: 2 }, `${winnerId} holds it`);
    winner.proc.kill('SIGTERM');
    t.equal(await winner.proc.exited, 0, 'the winner stopped cleanly');
    const next = await firstToLog([other], ROLLOUT_RESUMED);
    const resumed = await audits(c.db, 'agent.rollout.resumed');
    t.same(
      resumed.map((r) => [r.node_id, r.from_node_id]),
      [
        [winnerId, 'roll-dead'],
        [String(next.log.node_id), undefined],
      ],
      'resumed by one of the two at start (from the dead process), by the other only once the first released it',
    );
    t.match(await leaseOf(c.db, 'agentRollouts', rollout.id), { owner: String(next.log.node_id), generation: 3 });
  });
}

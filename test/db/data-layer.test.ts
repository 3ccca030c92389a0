/**
 * The data layer, once per dialect: the same calls, the same answers, on SQLite and on
 * PostgreSQL (a database of its own on the run's test cluster). What differs between
 * the two underneath is what is checked here: transactions, case-insensitive and
 * partial unique indexes, ON CONFLICT, RETURNING, JSON, booleans, big integers,
 * affected-row counts and unique-violation errors.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { newId } from '@vmkit/protocol';
import { createAgent, getAgentById, getAgentByInstance, insertEnrolledAgents, updateAgent } from '../../control-plane/src/db/agents.ts';
import { findApiKeyByHash, getApiKey, insertApiKey, listApiKeys, revokeApiKey, touchApiKey } from '../../control-plane/src/db/api-keys.ts';
import { insertAudit, listAudit } from '../../control-plane/src/db/audit.ts';
import { getCommand, listCommandsOfInstance } from '../../control-plane/src/db/commands.ts';
import {
  deleteDashboardSession,
  deleteExpiredDashboardSessions,
  findDashboardSession,
  insertDashboardSession,
  touchDashboardSession,
} from '../../control-plane/src/db/dashboard-sessions.ts';
import {
  createDeploy,
  createRunningDeploy,
  findRunningDeploy,
  getDeploy,
  getDeployById,
  latestScaffoldingDeploy,
  getDeployWithSteps,
  listDeploySteps,
  listDeploys,
  listUnfinishedDeploys,
  updateDeploy,
  upsertDeployStep,
} from '../../control-plane/src/db/deploys.ts';
import { listDnsRecords } from '../../control-plane/src/db/dns-records.ts';
import { createEnrollmentToken, enrollWithToken, registerInstance } from '../../control-plane/src/db/enrollment.ts';
import { createEnvironment, deleteEnvironment, getEnvironment, listEnvironments } from '../../control-plane/src/db/environments.ts';
import { isUniqueViolation } from '../../control-plane/src/db/errors.ts';
import { finishHardenFollowUp, getHardenFollowUp, insertHardenFollowUp, listOwedHardenFollowUps } from '../../control-plane/src/db/harden-follow-ups.ts';
import { isDatabaseClosed } from '../../control-plane/src/db/index.ts';
import {
  createInstance,
  findLiveInstanceByName,
  findLiveInstanceOfEnvironment,
  freeInstanceName,
  getInstance,
  getInstanceWithAgent,
  listInstancesInStatus,
  listInstancesWithAgents,
  moveInstanceStatus,
  updateInstance,
} from '../../control-plane/src/db/instances.ts';
import { jsonColumn, rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { databaseReadiness } from '../../control-plane/src/db/readiness.ts';
import { DatabaseHealthProbe } from '../../control-plane/src/db/health.ts';
import { createRepo, findRepoByName, getRepo, listRepos } from '../../control-plane/src/db/repos.ts';
import { createScan, findScanAtSha, getScan, listScansOfRepo, updateScan } from '../../control-plane/src/db/scans.ts';
import {
  closeOrphanedShellSessions,
  endShellSession,
  getShellSession,
  insertShellSession,
  listShellSessions,
  updateShellSessionCounters,
} from '../../control-plane/src/db/shell-sessions.ts';
import { deleteSshKey, findSshKeyByFingerprint, getSshKeyById, insertSshKey, listSshKeys, touchSshKey } from '../../control-plane/src/db/ssh-keys.ts';
import { exec, rows, transaction } from '../../control-plane/src/db/tx.ts';
import {
  deleteWorkspaceProvider,
  firstWorkspaceId,
  getWorkspaceProvider,
  listWorkspaceProviders,
  putWorkspaceProvider,
} from '../../control-plane/src/db/workspace-providers.ts';
import { countWorkspaces, createWorkspace, createWorkspaceWithKey, listWorkspaces } from '../../control-plane/src/db/workspaces.ts';
import { DbDnsRecordStore } from '../../control-plane/src/db/dns-records.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

const hash = (s: string) => createHash('sha256').update(s).digest('hex');

for (const { dialect, skip } of testDialects()) {
  t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
    const db = await openTestDatabase(t, dialect);
    t.equal(db.dialect, dialect);

    t.test('a fresh database is migrated and reachable', async (t) => {
      t.same(await databaseReadiness(db), { ready: true, reachable: true, migrationsApplied: true });
      t.ok(db.latestMigration > 0, 'the build ships migrations');
      const probe = new DatabaseHealthProbe(db);
      t.equal(probe.dialect, dialect, 'the metrics label');
      await probe.ping();
      t.equal(await probe.pendingMigrations(), 0);
      if (dialect === 'postgres') t.match(probe.pool?.(), { max: 10, waiting: 0 }, 'PostgreSQL reports its pool');
      else t.equal(probe.pool, undefined, 'SQLite has no pool');
    });

    t.test('workspaces and keys: a workspace with its first key is one transaction', async (t) => {
      // Named, not counted: this file's later setup inserts a workspace of its own while
      // this subtest runs (on PostgreSQL its insert can land between two counts).
      const named = async (name: string) => (await listWorkspaces(db)).filter((w) => w.name === name).length;
      const before = await countWorkspaces(db);
      const { workspace, key } = await createWorkspaceWithKey(db, 'tx', { name: 'admin', hash: hash('tx'), prefix: 'vmk_tx', scopes: ['admin'] });
      t.ok((await countWorkspaces(db)) > before);
      t.equal(await named('tx'), 1);
      t.same((await findApiKeyByHash(db, hash('tx')))?.scopes, ['admin'], 'JSON array read back');
      t.equal((await findApiKeyByHash(db, hash('tx')))?.id, key.id, 'the prepared lookup answers again');
      t.equal(await findApiKeyByHash(db, hash('nobody')), undefined);
      // The same key hash again: the second insert fails, so neither row of that transaction stays.
      await t.rejects(createWorkspaceWithKey(db, 'tx-again', { name: 'admin', hash: hash('tx'), prefix: 'vmk_tx', scopes: ['admin'] }));
      t.equal(await named('tx-again'), 0, 'the failed transaction left no workspace behind');
      t.equal(await named('tx'), 1);
      t.ok((await listWorkspaces(db)).some((w) => w.id === workspace.id));
      // This file's setup may insert a workspace beside this subtest, between any two reads:
      // the first workspace is the oldest listed just before or just after asking for it.
      const oldestBefore = (await listWorkspaces(db))[0]?.id;
      const first = await firstWorkspaceId(db);
      const oldestAfter = (await listWorkspaces(db))[0]?.id;
      t.ok(first !== undefined && (first === oldestBefore || first === oldestAfter), `the first workspace is the oldest listed (${first} in ${oldestBefore}, ${oldestAfter})`);

      const second = await insertApiKey(db, { workspaceId: workspace.id, name: 'ci', hash: hash('ci'), prefix: 'vmk_ci', scopes: ['repos:read'], expiresAt: 2_000_000_000_000 });
      t.same((await listApiKeys(db, workspace.id)).map((k) => k.name).sort(), ['admin', 'ci']);
      await touchApiKey(db, second.id, 1234);
      t.equal((await getApiKey(db, workspace.id, second.id))?.lastUsedAt, 1234);
      t.equal((await getApiKey(db, workspace.id, second.id))?.expiresAt, 2_000_000_000_000, 'a time past 2^31 comes back as a number');
      const revoked = await revokeApiKey(db, workspace.id, second.id, 5000);
      t.equal(revoked?.revokedAt, 5000);
      t.equal((await revokeApiKey(db, workspace.id, second.id, 6000))?.revokedAt, 5000, 'a second revoke keeps the first time');
      t.equal(await revokeApiKey(db, workspace.id, 'key_nope'), undefined);
      t.equal(await getApiKey(db, 'ws_other', second.id), undefined, 'another workspace does not see it');
    });

    const ws = await createWorkspace(db, 'main');

    t.test('repos: owner/name is unique in any case; connecting again answers the same row', async (t) => {
      const a = await createRepo(db, ws.id, 'Acme', 'Web');
      t.equal(a.created, true);
      const b = await createRepo(db, ws.id, 'acme', 'WEB');
      t.same({ created: b.created, id: b.repo.id }, { created: false, id: a.repo.id });
      t.equal((await findRepoByName(db, ws.id, 'ACME', 'web'))?.id, a.repo.id);
      t.equal((await getRepo(db, ws.id, a.repo.id))?.owner, 'Acme', 'the case as first connected');
      t.same((await listRepos(db, ws.id)).map((r) => r.id), [a.repo.id]);
      await t.rejects(rawExec(db, sql`INSERT INTO repos (id, workspace_id, owner, name, created_at) VALUES ('repo_x', ${ws.id}, 'ACME', 'web', 1)`), 'the index refuses a case variant');
      try {
        await rawExec(db, sql`INSERT INTO repos (id, workspace_id, owner, name, created_at) VALUES ('repo_x', ${ws.id}, 'ACME', 'web', 1)`);
      } catch (err) {
        t.ok(isUniqueViolation(err), 'recognised as a unique violation');
        t.notOk(isUniqueViolation(new Error('other')), 'and another error is not');
      }
    });

    t.test('environments: created once per repo and name, listed by name, deleted', async (t) => {
      const { repo } = await createRepo(db, ws.id, 'acme', 'envs');
      const prod = await createEnvironment(db, ws.id, repo.id, 'production');
      t.equal(prod.created, true);
      t.equal((await createEnvironment(db, ws.id, repo.id, 'production')).environment.id, prod.environment.id);
      await createEnvironment(db, ws.id, repo.id, 'a-staging');
      t.same((await listEnvironments(db, ws.id, repo.id)).map((e) => e.name), ['a-staging', 'production']);
      t.equal((await getEnvironment(db, ws.id, prod.environment.id))?.name, 'production');
      await deleteEnvironment(db, ws.id, prod.environment.id);
      t.equal(await getEnvironment(db, ws.id, prod.environment.id), undefined);
    });

    t.test('instances: a live name is unique in any case; a destroyed one frees it', async (t) => {
      const web = await createInstance(db, { workspaceId: ws.id, name: 'Web-1', provider: 'manual', status: 'running', providerRef: { server: 7, tags: ['a'] } });
      await t.rejects(createInstance(db, { workspaceId: ws.id, name: 'web-1', provider: 'manual' }), { name: 'ApiError', key: 'instance_name_taken' }, 'the partial, case-insensitive index answers instance_name_taken');
      await t.rejects(registerInstance(db, { workspaceId: ws.id, name: 'WEB-1', environmentId: null, provider: 'local' }, 1), { name: 'ApiError', key: 'instance_name_taken' });
      t.equal((await findLiveInstanceByName(db, ws.id, 'WEB-1'))?.id, web.id);
      t.equal(await freeInstanceName(db, ws.id, 'web-1'), 'web-1-2');
      t.ok(await moveInstanceStatus(db, web.id, ['running'], { status: 'destroyed' }), 'moved from running');
      t.notOk(await moveInstanceStatus(db, web.id, ['running'], { status: 'failed' }), 'not from a status it is not in');
      const again = await createInstance(db, { workspaceId: ws.id, name: 'web-1', provider: 'manual', status: 'running' });
      t.equal((await findLiveInstanceByName(db, ws.id, 'Web-1'))?.id, again.id, 'the name is free again');
      t.same((await getInstance(db, ws.id, web.id))?.providerRef, { server: 7, tags: ['a'] }, 'JSON object read back');
      await updateInstance(db, again.id, { sshHost: '10.0.0.2', sshPort: 22, hardenedAt: 1_700_000_000_000 });
      t.match(await getInstance(db, ws.id, again.id), { sshHost: '10.0.0.2', sshPort: 22, hardenedAt: 1_700_000_000_000 });
      t.equal(await getInstance(db, 'ws_other', again.id), undefined);
      const withAgents = await listInstancesWithAgents(db, ws.id);
      t.ok(withAgents.some((r) => r.instance.id === again.id && r.agent === null), 'left join: no agent yet');
      t.ok((await listInstancesInStatus(db, ['destroyed'])).some((r) => r.instance.id === web.id));
      const { repo } = await createRepo(db, ws.id, 'acme', 'live');
      const { environment } = await createEnvironment(db, ws.id, repo.id, 'production');
      await createInstance(db, { workspaceId: ws.id, name: 'env-old', provider: 'manual', status: 'failed', environmentId: environment.id });
      const live = await createInstance(db, { workspaceId: ws.id, name: 'env-live', provider: 'manual', status: 'running', environmentId: environment.id });
      t.equal((await findLiveInstanceOfEnvironment(db, ws.id, environment.id))?.id, live.id, 'the failed one is passed over');
    });

    t.test('enrollment: one transaction, one winner of two uses of a token, re-enrolment keeps the agent id', async (t) => {
      const inst = await registerInstance(db, { workspaceId: ws.id, name: 'enrol', environmentId: null, provider: 'local' }, Date.now());
      const tok = await createEnrollmentToken(db, { workspaceId: ws.id, instanceId: inst.id, ttlMs: 60_000 }, Date.now());
      const input = { token: tok.token, publicKey: 'pk-1', hostname: 'h', os: 'linux', agentVersion: '1', pinnedKeyIds: ['k1'], sshHostKeys: ['ssh-ed25519 AAAA'] };
      const both = await Promise.all([enrollWithToken(db, input, Date.now()), enrollWithToken(db, { ...input, publicKey: 'pk-2' }, Date.now())]);
      t.equal(both.filter((o) => o.ok).length, 1, 'exactly one use wins');
      const agent = await getAgentByInstance(db, inst.id);
      t.same(agent?.pinnedKeyIds, ['k1']);
      t.same((await getInstance(db, ws.id, inst.id))?.sshHostKeys, ['ssh-ed25519 AAAA']);
      const tok2 = await createEnrollmentToken(db, { workspaceId: ws.id, instanceId: inst.id, ttlMs: 60_000 }, Date.now());
      const re = await enrollWithToken(db, { ...input, token: tok2.token, publicKey: 'pk-3' }, Date.now());
      t.match(re, { ok: true, agentId: agent?.id, replacedKey: true });
      t.equal((await getAgentById(db, agent?.id ?? ''))?.publicKey, 'pk-3');
      const expired = await createEnrollmentToken(db, { workspaceId: ws.id, instanceId: inst.id, ttlMs: 1 }, 1000);
      t.same(await enrollWithToken(db, { ...input, token: expired.token }, Date.now()), { ok: false }, 'an expired token registers nothing');
      t.same(await enrollWithToken(db, { ...input, token: 'vmkenr_unknown' }, Date.now()), { ok: false });
      const joined = await getInstanceWithAgent(db, ws.id, inst.id);
      t.equal(joined?.agent?.id, agent?.id, 'left join finds the agent');
    });

    t.test('a generator transaction rolls back everything when a step throws', async (t) => {
      const id = newId('workspace');
      await t.rejects(
        transaction(db, function* (tx, tb) {
          yield* exec(tx.insert(tb.workspaces).values({ id, name: 'rolled back', createdAt: 1 }));
          const [row] = yield* rows(tx.select().from(tb.workspaces).where(sql`${tb.workspaces.id} = ${id}`));
          if (row) throw new Error('inside: the row is visible to the transaction, then undone');
        }),
        /inside/,
      );
      t.same(await rawRows(db, sql`SELECT id FROM workspaces WHERE id = ${id}`), [], 'nothing stays');
    });

    t.test('agents in bulk, and the hub columns they carry', async (t) => {
      const ids = await insertEnrolledAgents(
        db,
        ws.id,
        Array.from({ length: 1203 }, (_, i) => ({ instanceName: `bulk-${i}`, publicKey: `pk-${i}` })),
        ['k1', 'k2'],
        42,
      );
      t.equal(ids.length, 1203, 'more agents than one chunk');
      const last = await getAgentById(db, ids[1202] ?? '');
      t.match(last, { publicKey: 'pk-1202', state: 'disconnected', pinnedKeyIds: ['k1', 'k2'], createdAt: 42 });
      await updateAgent(db, ids[0] ?? '', { state: 'connected', lastSeen: 99, agentVersion: '2' });
      t.match(await getAgentById(db, ids[0] ?? ''), { state: 'connected', lastSeen: 99, agentVersion: '2' });
      const inst = await createInstance(db, { workspaceId: ws.id, name: 'solo', provider: 'manual' });
      const solo = await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: 'pk-solo' });
      t.equal((await getAgentByInstance(db, inst.id))?.id, solo.id);
    });

    t.test('deploys: one running per environment, even when two start together; steps upsert', async (t) => {
      const { repo } = await createRepo(db, ws.id, 'acme', 'deploys');
      const { environment } = await createEnvironment(db, ws.id, repo.id, 'production');
      const [a, b] = await Promise.all([
        createRunningDeploy(db, { workspaceId: ws.id, repoId: repo.id, environmentId: environment.id, sha: 'a' }),
        createRunningDeploy(db, { workspaceId: ws.id, repoId: repo.id, environmentId: environment.id, sha: 'b' }),
      ]);
      t.equal([a, b].filter((r) => r.created).length, 1, 'one created');
      t.equal(a.deploy.id, b.deploy.id, 'both answer the running one');
      t.equal((await findRunningDeploy(db, environment.id))?.id, a.deploy.id);
      await t.rejects(createDeploy(db, { workspaceId: ws.id, repoId: repo.id, environmentId: environment.id, status: 'running' }), 'the partial unique index holds');
      const big = 19_000_000_123;
      await updateDeploy(db, a.deploy.id, { runId: big, dispatchedAt: 1_800_000_000_000, currentStep: 'dispatch' });
      t.match(await getDeployById(db, a.deploy.id), { runId: big, dispatchedAt: 1_800_000_000_000 }, 'a GitHub run id past 2^31');
      await upsertDeployStep(db, a.deploy.id, 0, { name: 'provision', state: 'running', attempts: 1, detail: { vm: 'x' } });
      await upsertDeployStep(db, a.deploy.id, 0, { name: 'provision', state: 'succeeded', attempts: 1, detail: { vm: 'y' } });
      await upsertDeployStep(db, a.deploy.id, 1, { name: 'harden', state: 'pending' });
      t.same(
        (await listDeploySteps(db, a.deploy.id)).map((s) => [s.seq, s.state, s.detail]),
        [
          [0, 'succeeded', { vm: 'y' }],
          [1, 'pending', null],
        ],
      );
      const both = await getDeployWithSteps(db, a.deploy.id);
      t.match(both?.row, { id: a.deploy.id, runId: big }, 'the row and its steps in one read');
      t.same(both?.steps.map((s) => [s.seq, s.name, s.state]), [
        [0, 'provision', 'succeeded'],
        [1, 'harden', 'pending'],
      ]);
      const bare = await createDeploy(db, { workspaceId: ws.id, repoId: repo.id, environmentId: environment.id, status: 'failed' });
      t.same((await getDeployWithSteps(db, bare.id))?.steps, [], 'a deploy without steps');
      t.equal(await getDeployWithSteps(db, 'dep_none'), undefined, 'no deploy');
      t.ok((await listUnfinishedDeploys(db)).some((d) => d.id === a.deploy.id));
      await updateDeploy(db, a.deploy.id, { status: 'succeeded' });
      t.equal(await findRunningDeploy(db, environment.id), undefined);
      const scaffold = await createDeploy(db, { workspaceId: ws.id, repoId: repo.id, environmentId: environment.id, status: 'scaffolding_pr_open', prNumber: 3 });
      t.equal((await latestScaffoldingDeploy(db, ws.id, repo.id))?.id, scaffold.id);
      t.same((await listDeploys(db, ws.id, { repoId: repo.id })).map((d) => d.id), [scaffold.id, bare.id, a.deploy.id], 'newest first');
      t.equal((await getDeploy(db, ws.id, a.deploy.id))?.status, 'succeeded');
    });

    t.test('scans: booleans, JSON details and the lookup by sha inside them', async (t) => {
      const { repo } = await createRepo(db, ws.id, 'acme', 'scans');
      const scan = await createScan(db, { workspaceId: ws.id, repo: 'acme/scans', repoId: repo.id });
      await updateScan(db, scan.id, {
        status: 'succeeded',
        procfileDetected: true,
        dockerfileDetected: false,
        details: { sha: 'abc', source: 'github', rules_version: 3, evidence: ['package.json'] },
        finishedAt: 7,
      });
      t.match(await getScan(db, ws.id, scan.id), { procfileDetected: true, dockerfileDetected: false, finishedAt: 7 });
      t.same((await getScan(db, ws.id, scan.id))?.details?.evidence, ['package.json']);
      const q = { workspaceId: ws.id, repoId: repo.id, sha: 'abc', source: 'github', rulesVersion: 3 };
      t.equal((await findScanAtSha(db, q))?.id, scan.id);
      t.equal(await findScanAtSha(db, { ...q, rulesVersion: 4 }), undefined, 'another rules version');
      t.equal(await findScanAtSha(db, { ...q, sha: 'abd' }), undefined, 'another sha');
      t.same((await listScansOfRepo(db, ws.id, repo.id, 5)).map((s) => s.id), [scan.id]);
    });

    t.test('harden follow-ups and commands', async (t) => {
      const inst = await createInstance(db, { workspaceId: ws.id, name: 'hf', provider: 'manual' });
      const agent = await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: 'pk' });
      const commandId = newId('command');
      await rawExec(
        db,
        sql`INSERT INTO commands (id, workspace_id, agent_id, instance_id, type, state, envelope, created_at, updated_at)
            VALUES (${commandId}, ${ws.id}, ${agent.id}, ${inst.id}, 'harden', 'queued', ${JSON.stringify({ id: commandId })}, 5, 5)`,
      );
      t.same((await getCommand(db, commandId))?.envelope, { id: commandId });
      t.same((await listCommandsOfInstance(db, ws.id, inst.id, 10)).map((c) => c.id), [commandId]);
      await insertHardenFollowUp(db, { commandId, workspaceId: ws.id, instanceId: inst.id, keyId: null }, 10);
      t.ok((await listOwedHardenFollowUps(db)).some((f) => f.commandId === commandId));
      // What an agent answers is stored as it came, \u0000 included (jsonb would refuse the row).
      t.ok(await finishHardenFollowUp(db, commandId, { status: 'hardened', note: 'nul\u0000byte' }, 11), 'the first finisher wins');
      t.notOk(await finishHardenFollowUp(db, commandId, { status: 'other' }, 12), 'a second does not');
      t.match(await getHardenFollowUp(db, commandId), { state: 'done', answer: { status: 'hardened', note: 'nul\u0000byte' }, finishedAt: 11 });
    });

    t.test('providers, DNS records and SSH keys: ON CONFLICT updates or does nothing', async (t) => {
      const first = await putWorkspaceProvider(db, {
        workspaceId: ws.id,
        kind: 'compute',
        provider: 'hetzner',
        settings: { location: 'hel1' },
        secretSealed: 'v1.x',
        secretFingerprint: 'fp',
        secretSetAt: 1,
      });
      const second = await putWorkspaceProvider(db, { ...first, kind: 'compute', settings: { location: 'fsn1' } }, 99);
      t.equal(second.id, first.id, 'the upsert keeps the row');
      t.same(second.settings, { location: 'fsn1' });
      t.equal(second.updatedAt, 99);
      t.same((await listWorkspaceProviders(db, ws.id)).map((p) => p.kind), ['compute']);
      t.equal((await getWorkspaceProvider(db, ws.id, 'compute'))?.provider, 'hetzner');
      t.ok(await deleteWorkspaceProvider(db, ws.id, 'compute'));
      t.notOk(await deleteWorkspaceProvider(db, ws.id, 'compute'), 'nothing left to delete');

      const store = new DbDnsRecordStore(db, ws.id, 'z.internal', () => 5);
      await store.put({ id: 'rec1', name: 'A.z.internal', type: 'A', content: '10.0.0.1', ttl: 60, proxied: false, owner: 'env1' });
      await store.put({ id: 'rec2', name: 'a.z.internal', type: 'A', content: '10.0.0.2', ttl: 60, proxied: false, owner: 'env1' });
      t.same((await listDnsRecords(db, ws.id)).map((r) => [r.id, r.name, r.content]), [['rec1', 'a.z.internal', '10.0.0.2']]);

      const { key } = await createWorkspaceWithKey(db, 'ssh', { name: 'op', hash: hash('op'), prefix: 'p', scopes: ['shell'] });
      const ssh = await insertSshKey(db, { workspaceId: key.workspaceId, keyId: key.id, publicKey: 'ssh-ed25519 AAAA op', fingerprint: 'SHA256:one', comment: 'op' });
      t.ok(ssh);
      t.equal(await insertSshKey(db, { workspaceId: key.workspaceId, keyId: key.id, publicKey: 'x', fingerprint: 'SHA256:one', comment: null }), undefined, 'a fingerprint registers once');
      t.equal((await findSshKeyByFingerprint(db, 'SHA256:one'))?.apiKey.id, key.id);
      await touchSshKey(db, ssh?.id ?? '', 77);
      t.equal((await getSshKeyById(db, ssh?.id ?? ''))?.lastUsedAt, 77);
      t.equal((await listSshKeys(db, key.workspaceId, key.id)).length, 1);
      t.equal((await deleteSshKey(db, key.workspaceId, key.id, ssh?.id ?? ''))?.id, ssh?.id, 'delete answers the row it removed');
      t.equal(await deleteSshKey(db, key.workspaceId, key.id, ssh?.id ?? ''), undefined);
    });

    t.test('dashboard sessions, shell sessions and the audit trail', async (t) => {
      const { workspace, key } = await createWorkspaceWithKey(db, 'dash', { name: 'd', hash: hash('dash'), prefix: 'p', scopes: ['admin'] });
      await insertDashboardSession(db, { hash: 'h1', workspaceId: workspace.id, keyId: key.id, createdAt: 1, expiresAt: 10, lastSeenAt: null });
      await insertDashboardSession(db, { hash: 'h2', workspaceId: workspace.id, keyId: key.id, createdAt: 1, expiresAt: 1000, lastSeenAt: null });
      t.equal((await findDashboardSession(db, 'h2'))?.key.id, key.id, 'one prepared join');
      await touchDashboardSession(db, 'h2', 50);
      t.equal((await findDashboardSession(db, 'h2'))?.session.lastSeenAt, 50);
      await deleteExpiredDashboardSessions(db, 100);
      t.equal(await findDashboardSession(db, 'h1'), undefined, 'expired is gone');
      await deleteDashboardSession(db, 'h2');
      t.equal(await findDashboardSession(db, 'h2'), undefined);

      const inst = await createInstance(db, { workspaceId: workspace.id, name: 'sh', provider: 'manual' });
      const base = { workspaceId: workspace.id, instanceId: inst.id, keyId: key.id, via: 'ssh', recordingPath: null, command: null, runAs: 'kamal' };
      const s1 = await insertShellSession(db, { ...base, id: newId('shellSession'), startedAt: 1 });
      const s2 = await insertShellSession(db, { ...base, id: newId('shellSession'), startedAt: 2 });
      await updateShellSessionCounters(db, s1.id, 3_000_000_000, 5);
      await endShellSession(db, s1.id, { exitCode: 0, exitSignal: null, bytesIn: 3_000_000_001, bytesOut: 6, endReason: 'exit', endedAt: 9 });
      await endShellSession(db, s1.id, { exitCode: 1, exitSignal: null, bytesIn: 0, bytesOut: 0, endReason: 'again', endedAt: 10 });
      t.match(await getShellSession(db, workspace.id, s1.id), { exitCode: 0, bytesIn: 3_000_000_001, endReason: 'exit' }, 'ended once; byte counts past 2^31');
      t.equal((await closeOrphanedShellSessions(db, { kind: 'all' }, 11)).length, 1, 'the open one is closed, and answered');
      t.match((await listAudit(db, workspace.id, { action: 'shell.close', limit: 5 })).items, [{ targetIds: { session_id: s2.id, end_reason: 'control_plane_stopped' } }], 'and audited');
      const page = await listShellSessions(db, workspace.id, { limit: 1 });
      t.same(page.items.map((s) => [s.id, s.keyName]), [[s2.id, 'd']]);
      const next = await listShellSessions(db, workspace.id, { limit: 1, cursor: page.nextCursor ?? '' });
      t.same(next.items.map((s) => s.id), [s1.id]);
      t.equal(next.nextCursor, null);

      for (let i = 0; i < 3; i++) {
        await insertAudit(db, {
          workspaceId: workspace.id,
          keyId: key.id,
          channel: 'rest',
          tool: null,
          action: i === 1 ? 'repo.create' : 'key.create',
          method: 'POST',
          route: '/api/x',
          targetIds: { n: String(i) },
          status: 201,
          errorKey: null,
          requestId: null,
          clientAddress: '127.0.0.1',
          at: 100 + i,
        });
      }
      const all = await listAudit(db, workspace.id, { limit: 2 });
      t.same(all.items.map((a) => a.targetIds), [{ n: '2' }, { n: '1' }], 'newest first, JSON read back');
      t.ok(all.nextCursor);
      t.same((await listAudit(db, workspace.id, { limit: 5, action: 'key.create', since: 100, until: 102 })).items.map((a) => a.at), [100]);
      const raw = await rawRows<{ target_ids: unknown }>(db, sql`SELECT target_ids FROM audit_log WHERE workspace_id = ${workspace.id} AND channel = 'rest' ORDER BY id`);
      t.same(raw.map((r) => jsonColumn(r.target_ids)), [{ n: '0' }, { n: '1' }, { n: '2' }], 'raw JSON reads the same in both dialects');
    });

    t.test('closing is idempotent and visible', async (t) => {
      const other = await openTestDatabase(t, dialect);
      const { closeDatabase } = await import('../../control-plane/src/db/index.ts');
      await closeDatabase(other);
      await closeDatabase(other);
      t.ok(isDatabaseClosed(other));
      t.match(await databaseReadiness(other), { ready: false, reachable: false }, 'a closed database is not ready');
    });
  });
}

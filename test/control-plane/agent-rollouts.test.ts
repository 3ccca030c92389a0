import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { platformOf } from '@vmkit/protocol';
import { updateAgent } from '../../control-plane/src/db/agents.ts';
import { freePort } from '../helpers/cp-process.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import type { RealAgent } from '../helpers/real-agent.ts';
import type { AgentProcess } from '../agent/agent-process.ts';
import { rolloutEnd, rolloutWhere } from '../helpers/rollouts.ts';
import type { Rollout } from '../helpers/rollouts.ts';
import { vmkitCli } from '../helpers/vmkit-cli.ts';

/**
 * Fleet rollouts (POST /api/agents/updates) against a real control plane and real agent
 * processes run from the tests' agent bundle. These agents are not installed as releases, so each
 * refuses agent.update (update_refused): the failure path, validation, isolation, scope,
 * the one-running-rollout rule, the audit trail, a restart mid-rollout and the CLI run
 * here without building executables. test/agent/rollout.test.ts updates installed
 * single-executable agents for real.
 */

t.setTimeout(600_000);

const PLATFORM = platformOf(process.platform, process.arch) ?? 'linux-x64';
const AGENT_VERSION = '0.1.0';

/** A releases folder with small stand-in executables: enough for the control plane to serve and sign them. */
function releases(): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-rollout-releases-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const v of ['0.0.9', '0.2.0']) {
    mkdirSync(join(dir, v, PLATFORM), { recursive: true });
    writeFileSync(join(dir, v, PLATFORM, 'vmkit-agent'), `#!/bin/sh\necho ${v}\n`, { mode: 0o755 });
  }
  return dir;
}

const port = await freePort();
const cp = await startTestControlPlane({ config: { port, agentReleasesDir: releases() } });
t.teardown(() => cp.close());

const agents: { agent: RealAgent; proc: AgentProcess }[] = [];
for (let i = 0; i < 3; i++) {
  const agent = await enrollRealAgent(t, cp, { name: uniqueInstanceName(`fleet-${i}`) });
  agent.patchConfig({ shell: { program: plainBashShell() } });
  agents.push({ agent, proc: agent.start() });
}
for (const { agent } of agents) await waitAgentState(cp, agent.instanceId, 'connected');
const ids = agents.map((a) => a.agent.instanceId);
const [first, second, third] = agents.map((a) => a.agent);
if (!first || !second || !third) throw new Error('three agents expected');

const post = (body: unknown, key?: string) => cp.api<Rollout & { error?: string; message?: string }>('POST', '/api/agents/updates', { body, ...(key ? { key } : {}) });
const list = async () => (await cp.api<{ items: Rollout[] }>('GET', '/api/agents/updates')).body.items;
const audit = async (action: string) =>
  (await cp.api<{ items: { action: string; target_ids: Record<string, string> | null; status: number; error_key: string | null }[] }>('GET', `/api/audit?action=${action}&limit=100`)).body
    .items;

t.test('GET /api/instances shows each agent\'s version and platform', async (t) => {
  const res = await cp.api<{ items: { id: string; agent: { agent_version: string; platform: string | null } | null }[] }>('GET', '/api/instances');
  for (const id of ids) {
    const agent = res.body.items.find((i) => i.id === id)?.agent;
    t.equal(agent?.agent_version, AGENT_VERSION, id);
    t.equal(agent?.platform, PLATFORM, id);
  }
});

t.test('bad requests are refused with a clear error and start nothing', async (t) => {
  const base = { version: '0.2.0', batch_size: 1, max_failures: 1 };
  const cases: [string, unknown, number, string, RegExp][] = [
    ['both instance_ids and percent', { ...base, instance_ids: [ids[0]], percent: 50 }, 400, 'invalid_request', /exactly one of instance_ids .* or percent/],
    ['neither instance_ids nor percent', base, 400, 'invalid_request', /exactly one of instance_ids/],
    ['batch_size 0', { ...base, batch_size: 0, percent: 50 }, 400, 'invalid_request', /batch_size/],
    ['max_failures 0', { ...base, max_failures: 0, percent: 50 }, 400, 'invalid_request', /max_failures/],
    ['percent 101', { ...base, percent: 101 }, 400, 'invalid_request', /percent/],
    ['a version that is not a release version', { ...base, version: 'latest', percent: 50 }, 400, 'invalid_request', /version/],
    ['an unknown field', { ...base, percent: 50, canary: true }, 400, 'invalid_request', /Unrecognized key: "canary"/],
    ['an instance twice', { ...base, instance_ids: [ids[0], ids[0]] }, 400, 'invalid_request', /more than once/],
    ['an empty instance list', { ...base, instance_ids: [] }, 400, 'invalid_request', /instance_ids/],
    ['a version with no release', { ...base, version: '0.3.0', percent: 50 }, 404, 'release_not_found', /No agent release 0\.3\.0 for linux-/],
    ['an unknown instance', { ...base, instance_ids: [ids[0], 'inst_nope'] }, 404, 'instance_not_found', /No instance inst_nope exists in this workspace; nothing was started/],
    ['a downgrade without allow_downgrade', { ...base, version: '0.0.9', instance_ids: [ids[0]] }, 400, 'invalid_request', /0\.0\.9 is older than the vmkit-agent running on .*allow_downgrade: true/],
    ['percent when every agent is newer than the version', { ...base, version: '0.0.9', percent: 100 }, 409, 'conflict', /No agent to update: of the 3 enrolled agents/],
  ];
  for (const [what, body, status, key, message] of cases) {
    const res = await post(body);
    t.equal(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
    t.equal(res.body.error, key, what);
    t.match(res.body.message, message, what);
  }
  t.same(await list(), [], 'no rollout was stored');
  t.same(await audit('agent.rollout.started'), [], 'none started');
});

t.test('an instance without an agent, and an agent that is not connected, are refused', async (t) => {
  const bare = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('bare') } })).body;
  let res = await post({ version: '0.2.0', instance_ids: [ids[0], bare.id], batch_size: 1, max_failures: 1 });
  t.equal(res.status, 404);
  t.equal(res.body.error, 'vm_not_provisioned');
  t.match(res.body.message, new RegExp(`\\(${bare.id}\\) has no enrolled vmkit-agent`));

  const off = await enrollRealAgent(t, cp, { name: uniqueInstanceName('off') });
  res = await post({ version: '0.2.0', instance_ids: [off.instanceId], batch_size: 1, max_failures: 1 });
  t.equal(res.status, 409);
  t.equal(res.body.error, 'agent_not_connected');
  t.match(res.body.message, /is not connected; an update needs it online/);
  t.same(await list(), []);
});

t.test('an agent that never told its platform: refused when named, left out of a percent rollout', async (t) => {
  // As an agent older than self-update is stored: no platform.
  await updateAgent(cp.ctx.db, third.agentId, { platform: null });
  t.teardown(() => updateAgent(cp.ctx.db, third.agentId, { platform: PLATFORM }));
  const named = await post({ version: '0.2.0', instance_ids: [ids[0], ids[2]], batch_size: 1, max_failures: 1 });
  t.equal(named.status, 409);
  t.equal(named.body.error, 'conflict');
  t.match(named.body.message, new RegExp(`\\(${ids[2] ?? ''}\\) has not told its platform: it is older than self-update`));
  t.same(await list(), [], 'nothing stored');
  const some = await post({ version: '0.2.0', percent: 100, batch_size: 3, max_failures: 3 });
  t.equal(some.status, 202, JSON.stringify(some.body));
  t.same(
    some.body.agents.map((a) => a.instance_id),
    [ids[0], ids[1]],
    'percent 100 of the 4 enrolled agents: the 2 that can take it (one is offline, one has no platform)',
  );
  const done = await rolloutEnd(cp, some.body.id);
  t.equal(done.status, 'failed');
  t.same(done.counts, { failed: 2 });
});

t.test("another workspace's instance is refused as unknown; its rollouts are not visible", async (t) => {
  const other = await cp.createWorkspace('rollout-other');
  const res = await post({ version: '0.2.0', instance_ids: [ids[0]], batch_size: 1, max_failures: 1 }, other.adminKey);
  t.equal(res.status, 404);
  t.equal(res.body.error, 'instance_not_found');
  t.match(res.body.message, new RegExp(`No instance ${ids[0] ?? ''} exists in this workspace`));
  const theirs = await post({ version: '0.2.0', percent: 100, batch_size: 1, max_failures: 1 }, other.adminKey);
  t.equal(theirs.status, 409, 'an empty workspace has no agent to update');
  t.equal(theirs.body.error, 'conflict');
});

t.test('POST needs the admin scope; reading needs instances:read', async (t) => {
  const reader = await cp.createKey(['instances:read']);
  const res = await post({ version: '0.2.0', percent: 100, batch_size: 1, max_failures: 1 }, reader.secret);
  t.equal(res.status, 403);
  t.equal(res.body.error, 'forbidden');
  const read = await cp.api('GET', '/api/agents/updates', { key: reader.secret });
  t.equal(read.status, 200);
  const none = await cp.createKey(['repos:read']);
  t.equal((await cp.api('GET', '/api/agents/updates', { key: none.secret })).status, 403);
  const missing = await cp.api<{ error: string }>('GET', '/api/agents/updates/rol_nope');
  t.equal(missing.status, 404);
  t.equal(missing.body.error, 'rollout_not_found');
});

const updatesSentTo = async (id: string) =>
  (await cp.api<{ items: { type: string }[] }>('GET', `/api/instances/${id}/commands`)).body.items.filter((x) => x.type === 'agent.update').length;

t.test('max_failures 1: the first agent fails, the rollout stops, the rest are skipped; all audited', async (t) => {
  const sentBefore = await updatesSentTo(ids[1] ?? '');
  const res = await post({ version: '0.2.0', instance_ids: ids, batch_size: 1, max_failures: 1 });
  t.equal(res.status, 202, JSON.stringify(res.body));
  t.equal(res.body.status, 'running');
  t.same(
    res.body.agents.map((a) => [a.instance_id, a.batch, a.from_version, a.platform]),
    ids.map((id, i) => [id, i, AGENT_VERSION, PLATFORM]),
    'one agent per batch, in the order given',
  );
  const done = await rolloutEnd(cp, res.body.id);
  t.equal(done.status, 'stopped');
  t.equal(done.error_key, 'rollout_stopped');
  t.match(done.error_message, /1 agent update failed \(max_failures 1\)/);
  const [a, b, c] = done.agents;
  t.equal(a?.state, 'failed');
  t.equal(a?.error_key, 'update_refused', 'an agent run from source is not installed as a release and refuses');
  t.ok(a?.command_id?.startsWith('cmd_'), 'the signed agent.update was sent');
  t.ok(a?.started_at && a.finished_at);
  t.same([b?.state, c?.state], ['skipped', 'skipped']);
  t.same([b?.command_id, c?.command_id], [null, null], 'the skipped agents were sent nothing');
  t.same(done.counts, { failed: 1, skipped: 2 });
  t.equal(await updatesSentTo(ids[1] ?? ''), sentBefore, 'no agent.update reached a skipped agent');

  const started = (await audit('agent.rollout.started')).filter((r) => r.target_ids?.rollout_id === done.id);
  t.same(started.map((r) => r.target_ids), [{ rollout_id: done.id, version: '0.2.0', agents: '3' }]);
  const failed = (await audit('agent.update.failed')).filter((r) => r.target_ids?.rollout_id === done.id);
  t.same(failed.map((r) => [r.target_ids?.id, r.target_ids?.rollout_id, r.target_ids?.command_id, r.error_key]), [[ids[0], done.id, a?.command_id, 'update_refused']]);
  const skipped = await audit('agent.update.skipped');
  t.same(skipped.map((r) => r.target_ids?.id).sort(), [ids[1], ids[2]].sort());
  t.ok(skipped.every((r) => r.error_key === 'rollout_stopped' && r.target_ids?.rollout_id === done.id));
  const stopped = await audit('agent.rollout.stopped');
  t.same(stopped.map((r) => [r.target_ids?.rollout_id, r.error_key]), [[done.id, 'rollout_stopped']]);
  const route = await audit('agents.updates.create');
  t.ok(route.some((r) => r.status === 202), 'the request itself is audited');

  const listed = await list();
  t.same(listed[0] && [listed[0].id, listed[0].status, listed[0].counts], [done.id, 'stopped', { failed: 1, skipped: 2 }], 'newest first, with counts');
});

t.test('with room for failures every batch runs: the rollout ends failed, nothing skipped', async (t) => {
  const res = await post({ version: '0.2.0', instance_ids: [ids[2], ids[0]], batch_size: 2, max_failures: 3 });
  t.equal(res.status, 202);
  t.same(res.body.agents.map((a) => a.batch), [0, 0], 'both in one batch');
  const done = await rolloutEnd(cp, res.body.id);
  t.equal(done.status, 'failed');
  t.same(done.counts, { failed: 2 });
  t.match(done.error_message, /2 agent updates failed \(max_failures 3, not reached\)/);
  t.equal((await audit('agent.rollout.failed')).filter((r) => r.target_ids?.rollout_id === done.id).length, 1);
});

t.test('one rollout runs per workspace at a time', async (t) => {
  // A stopped agent holds its update: the rollout stays running until it answers.
  const { proc } = agents[1] ?? {};
  proc?.child.kill('SIGSTOP');
  const res = await post({ version: '0.2.0', instance_ids: [ids[1]], batch_size: 1, max_failures: 1 });
  t.equal(res.status, 202);
  await rolloutWhere(cp, res.body.id, (r) => r.agents[0]?.command_id !== null);
  const second = await post({ version: '0.2.0', instance_ids: [ids[0]], batch_size: 1, max_failures: 1 });
  t.equal(second.status, 409);
  t.equal(second.body.error, 'rollout_in_progress');
  t.match(second.body.message, new RegExp(`Agent rollout ${res.body.id} \\(to 0\\.2\\.0\\) is still running`));
  proc?.child.kill('SIGCONT');
  const done = await rolloutEnd(cp, res.body.id);
  t.equal(done.status, 'failed');
  t.equal(done.agents[0]?.error_key, 'update_refused');
});

t.test('a restart mid-rollout resumes it: the update under way is followed to its result, the next batch is sent', async (t) => {
  const { proc } = agents[0] ?? {};
  proc?.child.kill('SIGSTOP');
  const res = await post({ version: '0.2.0', instance_ids: [ids[0], ids[2]], batch_size: 1, max_failures: 2 });
  t.equal(res.status, 202);
  const sent = await rolloutWhere(cp, res.body.id, (r) => r.agents[0]?.command_id !== null);
  t.equal(sent.agents[0]?.state, 'updating');
  await cp.restart();
  proc?.child.kill('SIGCONT');
  const done = await rolloutEnd(cp, res.body.id);
  t.equal(done.status, 'failed', 'every agent had its turn: failed, not stopped');
  t.same(
    done.agents.map((a) => [a.state, a.error_key]),
    [
      ['failed', 'update_refused'],
      ['failed', 'update_refused'],
    ],
  );
  t.equal(done.agents[0]?.command_id, sent.agents[0]?.command_id, 'the first agent got one command, before the restart');
  const resumed = await audit('agent.rollout.resumed');
  t.same(resumed.map((r) => r.target_ids?.rollout_id), [res.body.id]);
  const rows = (await audit('agent.update.failed')).filter((r) => r.target_ids?.rollout_id === res.body.id);
  t.equal(rows.length, 2, 'one result row per agent, none for the restart itself');
});

t.test('vmkit agents update and vmkit agents updates', async (t) => {
  const vmkit = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));
  let r = await vmkit(['agents', 'update', '--version', '0.2.0', '--instances', `${first.instanceId},${second.instanceId}`, '--batch-size', '1', '--max-failures', '1', '--wait']);
  t.equal(r.code, 1, 'a stopped rollout exits 1');
  t.match(r.stderr, /Rollout rol_\w+ of 2 agent\(s\) to 0\.2\.0:/);
  t.match(r.stderr, /fleet-0-\d+-\d+ \(inst_\w+\)\s+failed\s+update_refused: /);
  t.match(r.stdout, /Rollout rol_\w+ to 0\.2\.0: stopped \(1 failed, 1 skipped; batch size 1, max failures 1\)\./);
  t.match(r.stdout, /INSTANCE\s+NAME\s+BATCH\s+STATE\s+FROM\s+TO\s+ERROR/);
  const id = /Rollout (rol_\w+) to/.exec(r.stdout)?.[1] ?? '';

  r = await vmkit(['agents', 'updates']);
  t.equal(r.code, 0);
  t.match(r.stdout, new RegExp(`${id}\\s+stopped\\s+0\\.2\\.0\\s+1 failed, 1 skipped`));

  r = await vmkit(['agents', 'updates', id, '--json']);
  t.equal(r.code, 1);
  t.equal((JSON.parse(r.stdout) as Rollout).id, id);

  r = await vmkit(['agents', 'update', '--version', '0.2.0', '--percent', '10', '--batch-size', '1']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--batch-size and --max-failures are required/);

  r = await vmkit(['agents', 'update', '--version', '0.3.0', '--percent', '10', '--batch-size', '1', '--max-failures', '1']);
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`error: release_not_found: No agent release 0\\.3\\.0 .* \\(POST ${cp.url}/api/agents/updates answered 404\\)`));

  r = await vmkit(['agents', 'updates', 'rol_nope']);
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`rollout_not_found: .*\\(GET ${cp.url}/api/agents/updates/rol_nope answered 404\\)`));

  r = await vmkit(['agents', 'update', '--version', '0.2.0', '--instances', 'no-such-vm', '--batch-size', '1', '--max-failures', '1']);
  t.equal(r.code, 1);
  t.match(r.stderr, /no instance named no-such-vm in this workspace/);
});


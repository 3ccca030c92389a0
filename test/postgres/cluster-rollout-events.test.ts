/**
 * Two control planes on one PostgreSQL database, both in this process: an agent rollout
 * driven by A (created there, so A holds its lease and writes each agent's outcome) wakes
 * a long-poll that landed on B, through NOTIFY vmkit_rollout_events on B's LISTEN
 * connection; B's LISTEN connection cut, a change after it listens again still reaches
 * B's waiter, and one missed while it was away is read at the resync.
 *
 * Two fake agents (test/hub/fake-agent.ts) held by A get the rollout's agent.update in
 * one batch and answer only when the test says, so between two answers the rollout does
 * not change. Each poll asks wait_ms=600000 with after=<updated_at>, longer than the
 * test client waits (3 min): the test waits until B holds the poll (B's waiter count),
 * only then has an agent answer, and asserts the answer carries that change. A poll the
 * change did not wake would fail the test, not answer late.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import type { Test } from 'tap';
import { PROTOCOL_VERSION, encodePublicKey, platformOf } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { getRolloutById } from '../../control-plane/src/db/agent-rollouts.ts';
import { getAgentById, insertEnrolledAgents } from '../../control-plane/src/db/agents.ts';
import { leaseOf } from '../../control-plane/src/db/leases.ts';
import { rawExec, sql } from '../../control-plane/src/db/raw.ts';
import { ROLLOUT_EVENTS_CHANNEL, rolloutService } from '../../control-plane/src/services/agent-rollout/service.ts';
import { FakeAgent } from '../hub/fake-agent.ts';
import { cutListen, startTestCluster } from '../helpers/cluster.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { uniqueInstanceName } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { parsePromText } from '../helpers/prom-text.ts';
import { rolloutWhere } from '../helpers/rollouts.ts';
import type { Rollout } from '../helpers/rollouts.ts';

t.setTimeout(600_000);

const PLATFORM = platformOf(process.platform, process.arch) ?? 'linux-x64';
/** Longer than the test client waits for an answer (180 s): only a wake-up answers it in time. */
const LONG_WAIT_MS = 600_000;

interface HeldAgent {
  instanceId: string;
  agent: FakeAgent;
  /** The agent.update A sent it, not answered yet. */
  command: MessageOf<'command'>;
}

interface Rig {
  a: TestControlPlane;
  b: TestControlPlane;
  admin: pg.Client;
  id: string;
  agents: [HeldAgent, HeldAgent];
}

async function connectAgent(t: Test, a: TestControlPlane): Promise<{ instanceId: string; agent: FakeAgent }> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const [agentId] = await insertEnrolledAgents(
    a.ctx.db,
    a.workspaceId,
    [{ instanceName: uniqueInstanceName('rev'), publicKey: encodePublicKey(publicKey) }],
    a.ctx.keyRing?.published().map((k) => k.key_id) ?? [],
  );
  if (!agentId) throw new Error('no agent inserted');
  const { agent, welcome } = await FakeAgent.connect(`${a.url.replace('http', 'ws')}/agent/v1/connect`, agentId, privateKey, { platform: PLATFORM });
  t.teardown(() => agent.close());
  if (!welcome) throw new Error('the fake agent was not welcomed');
  return { instanceId: (await getAgentById(a.ctx.db, agentId))?.instanceId ?? '', agent };
}

/** A rollout A drives, both its agents sent their update (command ids stored) and none answered. */
async function rig(t: Test): Promise<Rig> {
  const releases = mkdtempSync(join(tmpdir(), 'vmkit-rollout-events-'));
  t.teardown(() => rmSync(releases, { recursive: true, force: true }));
  mkdirSync(join(releases, '0.2.0', PLATFORM), { recursive: true });
  writeFileSync(join(releases, '0.2.0', PLATFORM, 'vmkit-agent'), '#!/bin/sh\necho 0.2.0\n', { mode: 0o755 });
  const { nodes, databaseUrl } = await startTestCluster(t, { nodeIds: ['rev-a', 'rev-b'], config: { agentReleasesDir: releases } });
  const [a, b] = nodes as [TestControlPlane, TestControlPlane];
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  t.teardown(() => admin.end());

  const held = [await connectAgent(t, a), await connectAgent(t, a)];
  const started = await a.api<Rollout>('POST', '/api/agents/updates', {
    body: { version: '0.2.0', instance_ids: held.map((h) => h.instanceId), batch_size: 2, max_failures: 2 },
  });
  if (started.status !== 202) throw new Error(`POST /api/agents/updates on A: ${started.status} ${JSON.stringify(started.body)}`);
  const id = started.body.id;
  const agents = (await Promise.all(
    held.map(async (h) => {
      const command = (await h.agent.next('command', 60_000)) as MessageOf<'command'>;
      if (command.envelope.type !== 'agent.update') throw new Error(`expected agent.update, got ${JSON.stringify(command.envelope.type)}`);
      h.agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: command.envelope.id });
      return { ...h, command };
    }),
  )) as [HeldAgent, HeldAgent];
  // Each update's command id is written after it was sent: from then on only an answer changes the rollout.
  await rolloutWhere(a, id, (r) => r.agents.every((x) => x.command_id !== null && x.state === 'updating'));
  return { a, b, admin, id, agents };
}

/** The agent refuses its update: A writes that agent's outcome (one write; the other agent still waits). */
function refuse(h: HeldAgent): void {
  h.agent.send({
    protocol: PROTOCOL_VERSION,
    type: 'result',
    command_id: h.command.envelope.id,
    status: 'failed',
    error: { key: 'update_refused', message: 'the test says no' },
    finished_at: Date.now(),
  });
}

/** Starts a long-poll on `cp` after `updatedAt` and resolves once `cp` holds it waiting. */
async function pollHeld(cp: TestControlPlane, id: string, updatedAt: string): Promise<{ answer: Promise<Rollout> }> {
  const events = rolloutService(cp.ctx).events;
  const before = events.waiting(id);
  const poll = cp.api<Rollout>('GET', `/api/agents/updates/${id}?wait_ms=${LONG_WAIT_MS}&after=${encodeURIComponent(updatedAt)}`).then((r) => {
    if (r.status !== 200) throw new Error(`GET /api/agents/updates/${id}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  });
  poll.catch(() => undefined); // awaited by the caller; a failure before that is reported there
  await eventually('the long-poll to wait', () => (events.waiting(id) > before ? true : undefined));
  return { answer: poll };
}

async function current(cp: TestControlPlane, id: string): Promise<Rollout> {
  const r = await cp.api<Rollout>('GET', `/api/agents/updates/${id}`);
  if (r.status !== 200) throw new Error(`GET /api/agents/updates/${id}: ${r.status}`);
  return r.body;
}

/** The rollout's updated_at as stored now. */
async function storedUpdatedAt(cp: TestControlPlane, id: string): Promise<number | undefined> {
  return (await getRolloutById(cp.ctx.db, id))?.updatedAt;
}


async function scrape(cp: TestControlPlane): Promise<ReturnType<typeof parsePromText>> {
  const res = await cp.api<string>('GET', '/metrics');
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parsePromText(res.body);
}

if (fileNeeds(postgresMissing())) {
  t.test('a rollout change on A wakes a long-poll held on B', async (t) => {
    const { a, b, id, agents } = await rig(t);
    const [x, y] = agents;
    t.ok(rolloutService(a.ctx).clusterEvents, 'A relays rollout changes');
    t.ok(rolloutService(b.ctx).clusterEvents, 'B hears them');
    t.equal(rolloutService(a.ctx).active(id) !== undefined, true, 'A drives the rollout');
    t.equal(rolloutService(b.ctx).active(id), undefined, 'B does not');
    const seen = await current(b, id);
    t.same(
      seen.agents.map((g) => g.state),
      ['updating', 'updating'],
    );

    const heardBefore = rolloutService(b.ctx).clusterEvents?.counters().received ?? 0;
    const poll = await pollHeld(b, id, seen.updated_at);
    refuse(x);
    const woken = await poll.answer;
    t.match(woken.agents.find((g) => g.instance_id === x.instanceId), { state: 'failed', error_key: 'update_refused' }, "B answered with the outcome A wrote after the poll began");
    t.match(woken.agents.find((g) => g.instance_id === y.instanceId), { state: 'updating' }, 'and nothing after it');
    t.equal(woken.status, 'running');
    t.ok(Date.parse(woken.updated_at) > Date.parse(seen.updated_at), 'a newer updated_at');
    t.equal(Date.parse(woken.updated_at), await storedUpdatedAt(b, id), "the change's updated_at: nothing was written since");
    t.ok((rolloutService(b.ctx).clusterEvents?.counters().received ?? 0) > heardBefore, 'B heard it on its LISTEN connection');
    t.equal(rolloutService(b.ctx).events.waiting(id), 0, "B's waiter is gone");

    // The other agent's answer, the next poll: the same way.
    const poll2 = await pollHeld(b, id, woken.updated_at);
    refuse(y);
    const woken2 = await poll2.answer;
    t.match(woken2.agents.find((g) => g.instance_id === y.instanceId), { state: 'failed', error_key: 'update_refused' }, "B answered with the second agent's outcome");
    t.ok(Date.parse(woken2.updated_at) > Date.parse(woken.updated_at));
    await rolloutService(a.ctx).active(id);
    t.match(await current(b, id), { status: 'failed', counts: { failed: 2 } }, 'A ended the rollout: every agent had its turn');

    const sent = rolloutService(a.ctx).clusterEvents?.counters();
    t.ok((sent?.sent ?? 0) >= 2, 'A sent a NOTIFY per change (some coalesced at most)');
    t.equal(sent?.failed, 0);
    const [scrapeA, scrapeB] = [await scrape(a), await scrape(b)];
    const channel = { channel: ROLLOUT_EVENTS_CHANNEL };
    t.equal(scrapeA.value('vmkit_db_change_notifies_total', { ...channel, outcome: 'sent' }), sent?.sent, "A's /metrics counts the NOTIFYs it sent");
    t.equal(scrapeA.value('vmkit_db_change_notifies_total', { ...channel, outcome: 'failed' }), 0);
    t.ok((scrapeB.value('vmkit_db_change_notifications_received_total', channel) ?? 0) >= 2, "B's /metrics counts the notifications it heard");
    t.equal(scrapeB.value('vmkit_db_change_resyncs_total', channel), 1, 'B listened once (its start), no loss since');
    t.equal(scrapeB.value('vmkit_db_change_notifies_total', { channel: 'vmkit_deploy_events', outcome: 'sent' }), 0, 'the deploys\' channel is a series of its own');
  });

  t.test("B's LISTEN connection cut: its waiters are woken after it listens again, and later changes reach them", async (t) => {
    const { a, b, admin, id, agents } = await rig(t);
    const [x, y] = agents;
    await cutListen(t, admin, b, 'rev-b');
    const seen = await current(b, id);
    const poll = await pollHeld(b, id, seen.updated_at);
    refuse(x);
    const woken = await poll.answer;
    t.match(woken.agents.find((g) => g.instance_id === x.instanceId), { state: 'failed' }, 'a change on A after B listened again woke its poll');
    t.equal(Date.parse(woken.updated_at), await storedUpdatedAt(b, id), "with the change's updated_at");

    // A change B never hears of (written without a NOTIFY, as one lost while B was away):
    // the poll held across the cut re-reads at the resync and answers it.
    const resyncsBefore = rolloutService(b.ctx).clusterEvents?.counters().resyncs ?? 0;
    const poll2 = await pollHeld(b, id, woken.updated_at);
    const at = Date.parse(woken.updated_at) + 1_000;
    await rawExec(b.ctx.db, sql`UPDATE agent_rollouts SET updated_at = ${at} WHERE id = ${id}`);
    t.equal(await storedUpdatedAt(b, id), at, 'the change is in the database');
    t.equal(rolloutService(b.ctx).events.waiting(id), 1, 'and the poll still waits: nothing told B');
    await cutListen(t, admin, b, 'rev-b');
    const resynced = await poll2.answer;
    t.equal(Date.parse(resynced.updated_at), at, 'the poll held across the cut answered the change made meanwhile, nothing after it');
    t.match(resynced.agents.find((g) => g.instance_id === y.instanceId), { state: 'updating' }, 'the other agent still waits');
    t.equal(rolloutService(b.ctx).clusterEvents?.counters().resyncs, resyncsBefore + 1, 'B counted the resync');
    t.match(await leaseOf(b.ctx.db, 'agentRollouts', id), { owner: 'rev-a' }, 'A still drives the rollout');
    t.ok(rolloutService(a.ctx).active(id), 'and has not stopped');
  });
}

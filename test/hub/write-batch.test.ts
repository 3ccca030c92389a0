/**
 * The hub store's group commit (control-plane/src/db/write-batch.ts), once per dialect on
 * a real database: writes issued together share a transaction, each resolves only once
 * it is visible to another connection, each gets its own answer, a write that fails
 * fails alone, and acks move only the acking agent's own command.
 */
import t from 'tap';
import Database from 'better-sqlite3';
import pg from 'pg';
import { newId } from '@vmkit/protocol';
import type { CommandEnvelope } from '@vmkit/protocol';
import { createAgent, getAgentById, updateAgent } from '../../control-plane/src/db/agents.ts';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import type { HubStore } from '../../control-plane/src/db/hub-store.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { createInstance, getInstanceById } from '../../control-plane/src/db/instances.ts';
import { SqliteWriteBatch } from '../../control-plane/src/db/write-batch.ts';
import type { WriteBatchStats } from '../../control-plane/src/db/write-batch.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import type { StoredCommand } from '../../control-plane/src/hub/store.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

function command(agentId: string, id = newId('command')): Omit<StoredCommand, 'result' | 'updatedAt'> {
  const now = Date.now();
  const envelope = { id, agent_id: agentId, type: 'ping', params: {}, issued_at: now, expires_at: now + 60_000, nonce: 'n', key_id: 'k' };
  return { id, agentId, type: 'ping', envelope: envelope as unknown as CommandEnvelope, signature: 'sig', state: 'queued', createdAt: now, expiresAt: now + 60_000 };
}

/** Reads a command's state through a connection of its own, not the store's. */
async function stateElsewhere(db: Db, id: string): Promise<string | undefined> {
  if (db.dialect === 'sqlite') {
    const other = new Database(db.sqlite.name, { readonly: true });
    try {
      return other.prepare<[string], { state: string }>('SELECT state FROM commands WHERE id = ?').get(id)?.state;
    } finally {
      other.close();
    }
  }
  const client = new pg.Client(db.pool.options);
  await client.connect();
  try {
    const { rows } = await client.query<{ state: string }>('SELECT state FROM commands WHERE id = $1', [id]);
    return rows[0]?.state;
  } finally {
    await client.end();
  }
}

function statsOf(store: HubStore): WriteBatchStats {
  return (store as HubStore & { writes: { stats: WriteBatchStats } }).writes.stats;
}

for (const { dialect, skip } of testDialects()) {
  t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
    const db = await openTestDatabase(t, dialect);
    const ws = await createWorkspace(db, 'batch');
    const agents: string[] = [];
    for (let i = 0; i < 2; i++) {
      const inst = await createInstance(db, { workspaceId: ws.id, name: `vm-${i}`, provider: 'manual' });
      agents.push((await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: `pk-${i}` })).id);
    }
    const [a, b] = agents as [string, string];
    const store = openHubStore(db);

    await t.test('writes issued together share transactions, and each is on file for other connections when it resolves', async (t) => {
      const before = { ...statsOf(store) };
      const cmds = Array.from({ length: 200 }, () => command(a));
      await Promise.all(cmds.map((c) => store.insert(c)));
      const after = statsOf(store);
      t.equal(after.writes - before.writes, 200, 'every insert went through the batch');
      t.ok(after.transactions - before.transactions < 20, `200 inserts in ${after.transactions - before.transactions} transactions`);
      const first = cmds[0] as StoredCommand;
      const last = cmds[199] as StoredCommand;
      t.equal(await stateElsewhere(db, first.id), 'queued');
      t.equal(await stateElsewhere(db, last.id), 'queued');
      const moved = await store.transition(last.id, ['queued'], 'sent', Date.now());
      t.equal(moved, true);
      t.equal(await stateElsewhere(db, last.id), 'sent', 'a resolved state change is committed');
    });

    await t.test('each write of a batch gets its own answer', async (t) => {
      const movable = command(a);
      const finished = command(a);
      await Promise.all([store.insert(movable), store.insert(finished)]);
      await store.recordResult(finished.id, a, { status: 'succeeded', output: {}, finished_at: Date.now() }, Date.now());
      const [m, f, r1, r2] = await Promise.all([
        store.transition(movable.id, ['queued'], 'sent', Date.now()),
        store.transition(finished.id, ['queued'], 'sent', Date.now()),
        store.recordResult(movable.id, a, { status: 'failed', error: { key: 'command_failed', message: 'x' }, finished_at: Date.now() }, Date.now()),
        store.recordResult(finished.id, a, { status: 'failed', error: { key: 'command_failed', message: 'x' }, finished_at: Date.now() }, Date.now()),
      ]);
      t.same([m, f, r1, r2], [true, false, 'stored', 'duplicate']);
      t.equal((await store.get(movable.id))?.state, 'failed');
      t.equal((await store.get(finished.id))?.state, 'succeeded');
    });

    await t.test('writes of one kind share one statement; two writes of one row in a batch still get one answer each', async (t) => {
      const before = { ...statsOf(store) };
      const cmds = Array.from({ length: 100 }, () => command(a));
      await Promise.all(cmds.map((c) => store.insert(c)));
      const moved = await Promise.all(cmds.map((c) => store.transition(c.id, ['queued'], 'sent', Date.now(), a)));
      t.ok(moved.every(Boolean), 'every command moved');
      const after = statsOf(store);
      const statements = after.statements - before.statements;
      const transactions = after.transactions - before.transactions;
      if (dialect === 'postgres') {
        t.equal(statements, transactions, `200 writes in ${statements} statements: one per kind and batch`);
      } else {
        t.equal(statements, 200, 'SQLite runs each write as its own statement, in its batch');
      }
      const one = command(a);
      await store.insert(one);
      const twice = await Promise.all([
        store.transition(one.id, ['queued'], 'sent', Date.now()),
        store.transition(one.id, ['queued'], 'sent', Date.now()),
        store.recordResult(cmds[0]?.id ?? '', a, { status: 'succeeded', output: {}, finished_at: Date.now() }, Date.now()),
        store.recordResult(cmds[1]?.id ?? '', b, { status: 'succeeded', output: {}, finished_at: Date.now() }, Date.now()),
      ]);
      t.same(twice, [true, false, 'stored', 'unknown'], 'one of two identical moves wins; a result from the wrong agent is not stored');
      t.equal(await stateElsewhere(db, cmds[1]?.id ?? ''), 'sent');
    });

    await t.test('handshake reads that arrive together get their own answers (PostgreSQL: in one query per kind)', async (t) => {
      const queued = command(b);
      await store.insert(queued);
      const before = dialect === 'postgres' ? (store as HubStore & { readStats: { reads: number; queries: number } }).readStats : undefined;
      const [foundA, foundB, nobody, forA, forB, forNobody] = await Promise.all([
        store.findAgent(a),
        store.findAgent(b),
        store.findAgent('agt_nobody'),
        store.deliverable(a, Date.now()),
        store.deliverable(b, Date.now()),
        store.deliverable('agt_nobody', Date.now()),
      ]);
      t.equal(foundA?.id, a);
      t.equal(foundB?.id, b);
      t.equal(nobody, undefined, 'an unknown agent is not found');
      t.ok(forB.some((c) => c.id === queued.id), "b's queued command is deliverable to b");
      t.notOk(forA.some((c) => c.id === queued.id), 'and not to a');
      t.ok([...forA, ...forB].every((c) => c.state === 'queued' || c.state === 'sent'));
      t.same(forNobody, []);
      if (before) {
        const after = (store as HubStore & { readStats: { reads: number; queries: number } }).readStats;
        t.equal(after.reads - before.reads, 6);
        t.equal(after.queries - before.queries, 2, 'six reads in two queries');
      }
    });

    await t.test('a write that fails fails alone; the rest of its batch commits', async (t) => {
      const dup = command(a);
      await store.insert(dup);
      const good1 = command(a);
      const good2 = command(b);
      const results = await Promise.allSettled([store.insert(good1), store.insert({ ...dup }), store.insert(good2), store.insert(command('agt_nobody'))]);
      t.equal(results[0]?.status, 'fulfilled');
      t.equal(results[1]?.status, 'rejected', 'the duplicate id is refused');
      t.equal(results[2]?.status, 'fulfilled');
      t.equal(results[3]?.status, 'rejected', 'a command for no agent is refused');
      t.equal(await stateElsewhere(db, good1.id), 'queued');
      t.equal(await stateElsewhere(db, good2.id), 'queued');
    });

    await t.test("an ack with the agent's id moves only that agent's own command", async (t) => {
      const cmd = command(a);
      await store.insert(cmd);
      await store.transition(cmd.id, ['queued'], 'sent', Date.now());
      t.equal(await store.transition(cmd.id, ['queued', 'sent'], 'acked', Date.now(), b), false, 'another agent cannot ack it');
      t.equal((await store.get(cmd.id))?.state, 'sent');
      t.equal(await store.transition(cmd.id, ['queued', 'sent'], 'acked', Date.now(), a), true);
      t.equal((await store.get(cmd.id))?.state, 'acked');
    });

    await t.test('connection state and last_seen writes join the batch', async (t) => {
      const before = statsOf(store).writes;
      await Promise.all([
        store.markConnected(a, { connectedAt: 1_000, publicKey: 'pk-0', agentVersion: '1', hostname: 'h', os: 'linux', platform: null }),
        store.markConnected(b, { connectedAt: 1_000, publicKey: 'pk-1', agentVersion: '1', hostname: 'h', os: 'linux', platform: null }),
        store.touchLastSeen(new Map([[a, 2_000]])),
      ]);
      await store.markDisconnected(b, 3_000);
      t.equal(statsOf(store).writes - before, 4);
      const state = async (id: string) => {
        if (db.dialect === 'sqlite') return db.sqlite.prepare<[string], { state: string; last_seen: number }>('SELECT state, last_seen FROM agents WHERE id = ?').get(id);
        return (await db.pool.query<{ state: string; last_seen: string }>('SELECT state, last_seen FROM agents WHERE id = $1', [id])).rows[0];
      };
      const sa = await state(a);
      const sb = await state(b);
      t.equal(sa?.state, 'connected');
      t.equal(Number(sa?.last_seen), 2_000);
      t.equal(sb?.state, 'disconnected');
      t.equal(Number(sb?.last_seen), 3_000);
    });

    await t.test('the connect write moves an instance waiting for its agent to running, and only such an instance', async (t) => {
      const statuses = ['provisioning', 'awaiting_agent', 'failed', 'destroyed', 'running'] as const;
      const rows: { status: string; agentId: string; instanceId: string }[] = [];
      for (const status of statuses) {
        const inst = await createInstance(db, { workspaceId: ws.id, name: `wait-${status}`, provider: 'manual', status }, 500);
        rows.push({ status, instanceId: inst.id, agentId: (await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: `pk-${status}` })).id });
      }
      const before = statsOf(store).writes;
      await Promise.all(rows.map((r) => store.markConnected(r.agentId, { connectedAt: 7_000, publicKey: `pk-${r.status}`, agentVersion: '1', hostname: 'h', os: 'linux', platform: null })));
      t.equal(statsOf(store).writes - before, rows.length, 'one batched write per connect, the instance move included');
      const instance = async (id: string) => {
        const row = await getInstanceById(db, id);
        return { status: row?.status, updatedAt: Number(row?.updatedAt), reason: row?.statusReason };
      };
      const ok = await Promise.all(rows.map((r) => store.markConnected(r.agentId, { connectedAt: 8_000, publicKey: `pk-${r.status}`, agentVersion: '1', hostname: 'h', os: 'linux', platform: null })));
      t.same(ok, rows.map(() => true), 'each connect wrote its row');
      for (const r of rows) {
        const got = await instance(r.instanceId);
        if (r.status === 'provisioning' || r.status === 'awaiting_agent') {
          t.same(got, { status: 'running', updatedAt: 7_000, reason: null }, `${r.status} → running at the (first) connect time`);
        } else {
          t.same(got, { status: r.status, updatedAt: 500, reason: null }, `${r.status} stays`);
        }
      }
    });

    await t.test('a connect under a key the row no longer holds, or for a revoked agent, writes nothing and says so', async (t) => {
      const inst = await createInstance(db, { workspaceId: ws.id, name: 'rekeyed', provider: 'manual', status: 'awaiting_agent' }, 500);
      const agentId = (await createAgent(db, { workspaceId: ws.id, instanceId: inst.id, publicKey: 'pk-new' })).id;
      const info = { connectedAt: 9_000, agentVersion: '1', hostname: 'h', os: 'linux', platform: null };
      const [stale, revoked] = await Promise.all([
        store.markConnected(agentId, { ...info, publicKey: 'pk-old' }),
        store.markConnected(a, { ...info, publicKey: 'pk-0' }),
      ]);
      t.equal(stale, false, 'the old key: not written');
      t.equal((await getAgentById(db, agentId))?.state, 'disconnected');
      t.equal((await getInstanceById(db, inst.id))?.status, 'awaiting_agent', 'nor its instance moved');
      t.equal(revoked, true, 'the control: the same write with the key the row holds');
      await updateAgent(db, agentId, { state: 'revoked' });
      t.equal(await store.markConnected(agentId, { ...info, publicKey: 'pk-new' }), false, 'revoked: not written');
      t.equal((await getAgentById(db, agentId))?.state, 'revoked');
    });
  });
}

t.test('SQLite: writes queued when the database closes are refused, not lost silently', async (t) => {
  const sqlite = new Database(':memory:');
  sqlite.exec('CREATE TABLE x (id INTEGER PRIMARY KEY)');
  const batch = new SqliteWriteBatch(sqlite, { maxBatch: 3 });
  const ins = sqlite.prepare<[number]>('INSERT INTO x (id) VALUES (?)');
  // Three fill a batch, which commits at once; the fourth waits for the next turn.
  const full = Promise.all([1, 2, 3].map((i) => batch.run(() => ins.run(i).changes)));
  const late = batch.run(() => ins.run(4).changes);
  t.same(await full, [1, 1, 1]);
  t.equal(batch.stats.transactions, 1, 'a full batch committed without waiting');
  sqlite.close();
  await t.rejects(late, { message: 'the database is closed' });
});

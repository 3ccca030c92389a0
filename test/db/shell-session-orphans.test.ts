/**
 * Shell sessions left open by a control plane that stopped under them, once per dialect:
 * which rows a start or a dead-node sweep ends (`control_plane_stopped`), and that each
 * is ended and audited exactly once, also when two live nodes sweep at the same time.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { newId } from '@vmkit/protocol';
import { listAudit } from '../../control-plane/src/db/audit.ts';
import { deregisterNode, heartbeatNode, listNodes, registerNode } from '../../control-plane/src/db/control-planes.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { closeOrphanedShellSessions, getShellSession, insertShellSession } from '../../control-plane/src/db/shell-sessions.ts';
import { createWorkspaceWithKey } from '../../control-plane/src/db/workspaces.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

const STALE_MS = 30_000;

for (const { dialect, skip } of testDialects()) {
  t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
    const db = await openTestDatabase(t, dialect);

    /** A workspace with one instance, no live nodes, no open sessions left by earlier tests, and a way to open session rows held by a node. */
    async function setup(name: string) {
      for (const n of await listNodes(db)) await deregisterNode(db, n.nodeId);
      await closeOrphanedShellSessions(db, { kind: 'all' }, 0);
      const { workspace, key } = await createWorkspaceWithKey(db, name, {
        name: 'admin',
        hash: createHash('sha256').update(name).digest('hex'),
        prefix: `vmk_${name}`,
        scopes: ['admin'],
      });
      const inst = await createInstance(db, { workspaceId: workspace.id, name: `${name}-vm`, provider: 'manual' });
      const open = async (nodeId: string | null) =>
        (
          await insertShellSession(db, {
            id: newId('shellSession'),
            workspaceId: workspace.id,
            instanceId: inst.id,
            keyId: key.id,
            via: 'websocket',
            recordingPath: null,
            command: null,
            runAs: null,
            startedAt: 1,
            nodeId,
          })
        ).id;
      const closeAudits = async () => (await listAudit(db, workspace.id, { action: 'shell.close', limit: 100 })).items;
      return { workspace, open, closeAudits };
    }

    const ended = async (db: Db, workspaceId: string, id: string) => (await getShellSession(db, workspaceId, id))?.endReason ?? null;

    t.test('one process (SQLite): a start ends every open session and audits each (the same query on either database)', async (t) => {
      const { open, closeAudits } = await setup('all');
      const held = await open('node-a');
      const unknown = await open(null);
      const closed = await closeOrphanedShellSessions(db, { kind: 'all' }, 100);
      t.same(closed.map((r) => r.id).sort(), [held, unknown].sort(), 'both open rows are ended');
      t.match(closed[0], { endReason: 'control_plane_stopped', endedAt: 100 });
      t.same((await closeOrphanedShellSessions(db, { kind: 'all' }, 200)).length, 0, 'nothing is ended twice');
      const audits = await closeAudits();
      t.same(audits.map((a) => a.targetIds?.session_id).sort(), [held, unknown].sort(), 'one shell.close row each');
      t.match(audits.find((a) => a.targetIds?.session_id === held), {
        channel: 'shell',
        status: 200,
        at: 100,
        targetIds: { end_reason: 'control_plane_stopped', via: 'websocket', node_id: 'node-a' },
      });
    });

    t.test("a restart ends only its own node's sessions", async (t) => {
      const { workspace, open, closeAudits } = await setup('own');
      const now = Date.now();
      await registerNode(db, { nodeId: 'node-a', url: 'http://a', now });
      await registerNode(db, { nodeId: 'node-b', url: 'http://b', now });
      const onA = await open('node-a');
      const onB = await open('node-b');
      const unknown = await open(null);
      const closed = await closeOrphanedShellSessions(db, { kind: 'own', nodeId: 'node-b', liveSince: now - STALE_MS }, now);
      t.same(closed.map((r) => r.id), [onB], "node B's restart ends its own session");
      t.equal(await ended(db, workspace.id, onA), null, 'the session live on node A stays open');
      t.equal(await ended(db, workspace.id, unknown), null, 'a session without a holder stays open while another node is live');
      t.same((await closeAudits()).map((a) => a.targetIds?.session_id), [onB]);
    });

    t.test('the sessions of a dead node are ended once, whichever live node sweeps first', async (t) => {
      const { workspace, open, closeAudits } = await setup('dead');
      const now = Date.now();
      await registerNode(db, { nodeId: 'node-a', url: 'http://a', now });
      await registerNode(db, { nodeId: 'node-b', url: 'http://b', now });
      // node-c stopped heartbeating; node-d is gone from the registry altogether.
      await registerNode(db, { nodeId: 'node-c', url: 'http://c', now: now - 10 * STALE_MS });
      const onA = await open('node-a');
      const onB = await open('node-b');
      const onC = await open('node-c');
      const onD = await open('node-d');
      const unknown = await open(null);
      const sweep = (nodeId: string) => closeOrphanedShellSessions(db, { kind: 'dead', nodeId, liveSince: now - STALE_MS }, now);
      // Both live nodes notice at once (on PostgreSQL, two transactions on two connections).
      const [byA, byB] = await Promise.all([sweep('node-a'), sweep('node-b')]);
      const all = [...byA, ...byB].map((r) => r.id).sort();
      t.same(all, [onC, onD].sort(), 'the dead nodes\' sessions are ended, each by one sweep');
      t.equal(await ended(db, workspace.id, onC), 'control_plane_stopped');
      t.equal(await ended(db, workspace.id, onD), 'control_plane_stopped');
      t.equal(await ended(db, workspace.id, onA), null, 'live nodes keep theirs');
      t.equal(await ended(db, workspace.id, onB), null);
      t.equal(await ended(db, workspace.id, unknown), null, 'a session without a holder stays open while two nodes are live');
      t.same((await sweep('node-a')).length, 0, 'a later sweep finds nothing');
      const audits = await closeAudits();
      t.same(audits.map((a) => a.targetIds?.session_id).sort(), [onC, onD].sort(), 'audited once each');
      t.match(audits.find((a) => a.targetIds?.session_id === onC), { targetIds: { node_id: 'node-c', end_reason: 'control_plane_stopped' } });
    });

    t.test('a node never sweeps its own sessions, even when its own heartbeat looks stale', async (t) => {
      const { workspace, open } = await setup('self');
      const now = Date.now();
      await registerNode(db, { nodeId: 'node-a', url: 'http://a', now: now - 10 * STALE_MS });
      const onA = await open('node-a');
      t.same(await closeOrphanedShellSessions(db, { kind: 'dead', nodeId: 'node-a', liveSince: now - STALE_MS }, now), []);
      t.equal(await ended(db, workspace.id, onA), null);
    });

    t.test('sessions without a holder are ended once no other node is live', async (t) => {
      const { workspace, open, closeAudits } = await setup('legacy');
      const now = Date.now();
      await registerNode(db, { nodeId: 'node-a', url: 'http://a', now });
      await registerNode(db, { nodeId: 'node-b', url: 'http://b', now: now - 10 * STALE_MS });
      const unknown = await open(null);
      const closed = await closeOrphanedShellSessions(db, { kind: 'own', nodeId: 'node-a', liveSince: now - STALE_MS }, now);
      t.same(closed.map((r) => r.id), [unknown], 'at a start with no other live node');
      const later = await open(null);
      await heartbeatNode(db, { nodeId: 'node-b', url: 'http://b', now });
      t.same(await closeOrphanedShellSessions(db, { kind: 'dead', nodeId: 'node-a', liveSince: now - STALE_MS }, now), [], 'not while node B is live');
      await deregisterNode(db, 'node-b');
      t.same(
        (await closeOrphanedShellSessions(db, { kind: 'dead', nodeId: 'node-a', liveSince: now - STALE_MS }, now)).map((r) => r.id),
        [later],
        'at a sweep once node B is gone',
      );
      t.equal((await closeAudits()).length, 2);
      t.equal(await ended(db, workspace.id, later), 'control_plane_stopped');
    });
  });
}

/**
 * Shell sessions of several control planes on one PostgreSQL database, when one of them
 * stops. A real vmkit-agent is held by A and an operator has a shell open on A: B's
 * restart ends only the sessions B held (its start used to end every open row, A's
 * live one too). A node that stops heartbeating (a row in `control_planes` and one
 * open session row, written directly: a killed process leaves nothing else) has its
 * session ended as `control_plane_stopped` by the live nodes, once, audited once.
 */
import { newId } from '@vmkit/protocol';
import t from 'tap';
import { listAudit } from '../../control-plane/src/db/audit.ts';
import { listNodes, registerNode } from '../../control-plane/src/db/control-planes.ts';
import { getShellSession, insertShellSession } from '../../control-plane/src/db/shell-sessions.ts';
import type { ShellSessionRow } from '../../control-plane/src/db/shell-sessions.ts';
import { startTestCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/cp-process.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import { openShell } from '../helpers/shell-client.ts';

const notRoot = process.getuid?.() === 0 ? false : 'the agent must run shells as root here (tests run as root under CI)';
const NODE_HEARTBEAT_MS = 250;
// Generous against a loaded machine taking a live node for dead; the dead node's wait is this long.
const NODE_STALE_AFTER_MS = 3_000;

if (fileNeeds(postgresMissing() || notRoot)) {
  const cluster = await startTestCluster(t, {
    nodes: 2,
    nodeIds: ['node-a', 'node-b'],
    config: { agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000, nodeHeartbeatMs: NODE_HEARTBEAT_MS, nodeStaleAfterMs: NODE_STALE_AFTER_MS } },
  });
  const [a, b] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[0]];

  const agent = await enrollRealAgent(t, a, { name: 'orphans-vm' });
  agent.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 4, program: plainBashShell() } });
  agent.start();
  await waitAgentState(a, agent.instanceId, 'connected', 120_000);
  const operator = await a.createKey(['shell'], { name: 'operator' });
  const db = () => a.ctx.db;
  const row = async (id: string) => getShellSession(db(), a.workspaceId, id);
  const closeAudits = async (sessionId: string) =>
    (await listAudit(db(), a.workspaceId, { action: 'shell.close', limit: 500 })).items.filter((x) => x.targetIds?.session_id === sessionId);
  /** A session row as a process that is gone now left it: open, held by `nodeId`. */
  const leftOpenBy = async (nodeId: string) =>
    (
      await insertShellSession(db(), {
        id: newId('shellSession'),
        workspaceId: a.workspaceId,
        instanceId: agent.instanceId,
        keyId: operator.id,
        via: 'websocket',
        recordingPath: null,
        command: null,
        runAs: null,
        startedAt: Date.now(),
        nodeId,
      })
    ).id;
  /** Resolves once every live node named ran a full heartbeat (and its dead-node sweep) after `since`. */
  const swept = (since: number, nodeIds: string[]) =>
    eventually(`heartbeats of ${nodeIds.join(', ')} after ${since}`, async () => {
      const nodes = await listNodes(db());
      return nodeIds.every((id) => (nodes.find((n) => n.nodeId === id)?.heartbeatAt ?? 0) >= since + 2 * NODE_HEARTBEAT_MS) || undefined;
    });

  t.test("a live session on A survives B's restart; B's own orphan is ended", async (t) => {
    const r = await openShell(a.url, 'orphans-vm', { key: operator.secret });
    if ('refused' in r) throw new Error(`refused: ${JSON.stringify(r.refused)}`);
    const s = r.session;
    t.teardown(() => s.ws.close());
    await s.until(() => s.opened, 'the opened message');
    const id = s.opened?.session_id ?? '';
    s.type('echo befo""re-$((6*7))\r');
    await s.waitFor(/before-42/);
    t.match(await row(id), { nodeId: 'node-a', endedAt: null }, 'the session is recorded as held by A');
    // What a crash of B would have left: an open row of B's that no process holds.
    const orphanOfB = await leftOpenBy('node-b');

    await b.restart();
    t.equal(b.ctx.nodeId, 'node-b', 'B came back as the same node');
    // B's start ends its orphan (unless A's sweep saw B gone first): either way once.
    const ended = await eventually('B\'s orphan ended', async () => ((await row(orphanOfB))?.endedAt ?? null) === null ? undefined : await row(orphanOfB));
    t.match(ended, { endReason: 'control_plane_stopped' });
    t.match(await row(id), { endedAt: null, endReason: null }, "A's session row stays open through B's restart");
    const mark = s.text.length;
    s.type('echo aft""er-$((6*7))\r');
    await s.waitFor(/after-42/, mark);
    t.equal(s.exit, undefined, 'and the shell still answers');
    await swept(Date.now(), ['node-a', 'node-b']);
    t.match(await row(id), { endedAt: null }, 'no sweep of the live nodes ends it either');
    t.equal((await closeAudits(orphanOfB)).length, 1, "B's orphan is audited once");
    t.equal((await closeAudits(id)).length, 0);

    s.type('exit 0\r');
    t.match(await s.waitExit(), { code: 0, reason: 'exit' });
    await eventually('the session row ended', async () => ((await row(id))?.endReason === 'exit' ? true : undefined));
  });

  t.test('the session of a node that stopped heartbeating is ended once by the live nodes, audited once', async (t) => {
    // node-z was live a moment ago, then went silent: its last heartbeat is now.
    await registerNode(db(), { nodeId: 'node-z', url: 'http://127.0.0.1:9', now: Date.now() });
    const onZ = await leftOpenBy('node-z');
    const ended: ShellSessionRow = await eventually(
      'the dead node\'s session ended',
      async () => {
        const r = await row(onZ);
        return r?.endedAt === null ? undefined : r;
      },
      NODE_STALE_AFTER_MS * 20,
    );
    t.match(ended, { endReason: 'control_plane_stopped', nodeId: 'node-z' });
    t.ok((ended.endedAt ?? 0) > ended.startedAt, 'ended after it was opened');
    // Both live nodes swept again after the end: neither ends or audits it a second time.
    await swept(ended.endedAt ?? 0, ['node-a', 'node-b']);
    t.match(await row(onZ), { endedAt: ended.endedAt }, 'ended once');
    const audits = await closeAudits(onZ);
    t.equal(audits.length, 1, 'audited once');
    t.match(audits[0], { channel: 'shell', status: 200, targetIds: { end_reason: 'control_plane_stopped', node_id: 'node-z' } });
    t.notOk((await listNodes(db())).some((n) => n.nodeId === 'node-z'), 'the dead node is forgotten');
  });
}

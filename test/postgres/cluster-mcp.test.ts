/**
 * MCP sessions across two control planes on one PostgreSQL database. Process A (its own
 * OS process, so that it can be killed) and B (in this test process) share the
 * database and the secret-box key. The SDK's MCP client initialises on A, and every
 * later request of the session lands on B, which relays it to A (the holder): a
 * tool list, tool calls answered as SSE, the standing GET stream, the DELETE that ends
 * the session. A key other than the session's is refused by both; requests posing as
 * a forward without the right signature are refused; A killed with SIGKILL: its
 * sessions answer 404 through B, and the client starts a new session there.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SecretBox } from '../../control-plane/src/auth/secret-box.ts';
import { deregisterNode, listNodes, registerNode } from '../../control-plane/src/db/control-planes.ts';
import { findMcpSessionHolder, forgetMcpSessionsOfDeadNodes, recordMcpSession, touchMcpSessions } from '../../control-plane/src/db/mcp-sessions.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { FORWARD_KEY_PURPOSE, McpSessionCluster, forwardBody, forwardHeaders } from '../../control-plane/src/mcp/cluster.ts';
import { eventually, freePort, startControlPlaneProcess } from '../helpers/cp-process.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { textOf } from '../helpers/mcp-client.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { parsePromText } from '../helpers/prom-text.ts';
import { createHash } from 'node:crypto';

type Node = 'a' | 'b';

/**
 * The SDK client, its requests sent to A or B as `route` says (what a balancer in
 * front of both would do), each one logged with the node it went to and the answer.
 */
function balancedClient(ports: Record<Node, number>, key: string, route: (method: string, seen: number) => Node) {
  const log: { method: string; node: Node; status: number; type: string }[] = [];
  let seen = 0;
  const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${ports.a}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${key}` } },
    fetch: async (url, init) => {
      const method = init?.method ?? 'GET';
      const node = route(method, seen++);
      const target = new URL(url);
      target.port = String(ports[node]);
      const res = await fetch(target, init);
      log.push({ method, node, status: res.status, type: res.headers.get('content-type') ?? '' });
      return res;
    },
  });
  const client = new Client({ name: 'vmkit-cluster-test', version: '0.0.0' });
  return { client, transport, log };
}

const ACCEPT = 'application/json, text/event-stream';
const LIST_TOOLS = { jsonrpc: '2.0', id: 7, method: 'tools/list' };

if (fileNeeds(postgresMissing())) {
  t.test('MCP sessions answered by whichever control plane a request reaches', async (t) => {
    const pgdb = await createTestDatabase();
    t.teardown(() => pgdb.drop());
    const dirA = mkdtempSync(join(tmpdir(), 'vmkit-mcp-cluster-a-'));
    const dirB = mkdtempSync(join(tmpdir(), 'vmkit-mcp-cluster-b-'));
    t.teardown(() => {
      rmSync(dirA, { recursive: true, force: true });
      rmSync(dirB, { recursive: true, force: true });
    });
    const portA = await freePort();
    const a = await startControlPlaneProcess({
      dataDir: dirA,
      port: portA,
      // Rate-limit windows longer than the test: counts below never roll over.
      env: { VMKIT_DATABASE_URL: pgdb.url, VMKIT_NODE_ID: 'node-a', VMKIT_RATE_LIMIT_WINDOW_MS: '3600000' },
    });
    let aAlive = true;
    t.teardown(async () => {
      if (!aAlive) return;
      a.kill('SIGKILL');
      await a.exited;
    });
    // One deployment: B gets A's secret-box key and the operator's admin key.
    for (const f of ['secret-box.key', 'admin.key']) if (existsSync(join(dirA, f))) copyFileSync(join(dirA, f), join(dirB, f));
    // B names the URL the others reach it at (--internal-url): localhost, where it listens on 127.0.0.1.
    const portB = await freePort();
    const b: TestControlPlane = await startTestControlPlane({
      dataDir: dirB,
      // A long stale bound: A's death is found by B failing to reach it, not by its silence.
      config: {
        port: portB,
        internalUrl: `http://localhost:${portB}`,
        databaseUrl: pgdb.url,
        nodeId: 'node-b',
        agentHub: { nodeHeartbeatMs: 300, nodeStaleAfterMs: 600_000 },
        rateLimit: { windowMs: 3_600_000 },
      },
    });
    t.teardown(() => b.close());
    const ports = { a: portA, b: portB };
    const admin = a.adminKey;
    const other = await b.createKey(['instances:read']);
    const forwardKey = new SecretBox(Buffer.from(readFileSync(join(dirA, 'secret-box.key'), 'utf8').trim(), 'base64')).subkey(FORWARD_KEY_PURPOSE);

    const forwarded = async (outcome: string) => {
      const res = await b.api<string>('GET', '/metrics');
      return parsePromText(String(res.body)).value('vmkit_mcp_forwarded_requests_total', { node_id: 'node-b', outcome }) ?? 0;
    };

    // Initialise on A; everything after, through B.
    const first = balancedClient(ports, admin, (_method, seen) => (seen === 0 ? 'a' : 'b'));
    await first.client.connect(first.transport);
    const sessionId = first.transport.sessionId;
    t.type(sessionId, 'string', 'A gave the session an id');
    const sid = sessionId ?? '';

    await t.test('the session is recorded as held by A, bound to a digest of the key', async (t) => {
      const rows = await rawRows<{ node_id: string; principal_hash: string | null }>(
        b.ctx.db,
        sql`SELECT node_id, principal_hash FROM mcp_sessions WHERE session_id = ${sid}`,
      );
      t.equal(rows.length, 1);
      t.equal(rows[0]?.node_id, 'node-a');
      t.match(rows[0]?.principal_hash ?? '', /^[0-9a-f]{64}$/, 'a SHA-256 digest');
      t.notOk(JSON.stringify(rows).includes(admin), 'never the key itself');
      const holder = await findMcpSessionHolder(b.ctx.db, sid, 0);
      t.equal(holder?.url, a.url, "the holder's URL is the one A listens on");
    });

    await t.test('tool list, tool calls and the GET stream land on B and are answered by A', async (t) => {
      const before = await forwarded('forwarded');
      const tools = await first.client.listTools();
      t.ok(
        tools.tools.some((tool) => tool.name === 'list_instances'),
        'tools/list answered through B',
      );
      const listed = await first.client.callTool({ name: 'list_instances', arguments: {} });
      t.notOk(listed.isError, textOf(listed));
      t.ok(Array.isArray((JSON.parse(textOf(listed)) as { instances?: unknown }).instances), 'list_instances answered with the instances');
      const missing = await first.client.callTool({ name: 'get_instance', arguments: { instance_id: 'inst_00000000000000000000000000' } });
      t.equal(missing.isError, true, 'an error answer comes back the same way');
      t.match(textOf(missing), /not_found/);

      // A call that asks for progress is answered as an SSE stream; the plain ones as JSON: both kinds pass through B.
      const streamed = await first.client.callTool({ name: 'list_instances', arguments: {} }, undefined, { onprogress: () => undefined });
      t.notOk(streamed.isError, textOf(streamed));
      const posts = first.log.filter((r) => r.method === 'POST' && r.node === 'b');
      t.ok(posts.length >= 4, `the client's POSTs went to B (${posts.length})`);
      t.ok(
        posts.some((r) => r.type.startsWith('application/json')),
        'plain tool calls were answered as JSON through B',
      );
      t.ok(
        posts.some((r) => r.type.startsWith('text/event-stream')),
        'a tool call asking for progress was answered as an SSE stream through B',
      );
      // The client opens its standing GET stream after initialising: through B, to A.
      const stream = await eventually('the GET stream through B', () => first.log.find((r) => r.method === 'GET'));
      t.same([stream.node, stream.status, stream.type.split(';')[0]], ['b', 200, 'text/event-stream']);
      // A session has one standing stream; A refusing a second one directly shows it holds the one opened through B.
      const direct = await fetch(`${a.url}/mcp`, {
        headers: { authorization: `Bearer ${admin}`, accept: 'text/event-stream', 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' },
      });
      t.equal(direct.status, 409, 'A already holds the stream B relays');
      await direct.body?.cancel();
      t.ok((await forwarded('forwarded')) >= before + 3, 'B counted its forwards (the three POSTs at least)');
      t.equal(await forwarded('refused'), 0);

      // The MCP envelope's budget is shared by both processes: a forwarded request costs it once, where it arrived.
      const envelopeCount = async () => {
        const rows = await rawRows<{ n: number }>(b.ctx.db, sql`SELECT COALESCE(SUM(count), 0)::int AS n FROM rate_limits WHERE key LIKE ${'%|mcp-key:%'}`);
        return rows[0]?.n ?? 0;
      };
      const spent = await envelopeCount();
      await first.client.listTools();
      t.equal(await envelopeCount(), spent + 1, 'one request through B and A counts once against the key');
    });

    await t.test('another key on the session: refused by B and by A', async (t) => {
      const viaB = await fetch(`${b.url}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${other.secret}`, accept: ACCEPT, 'content-type': 'application/json', 'mcp-session-id': sid },
        body: JSON.stringify(LIST_TOOLS),
      });
      t.equal(viaB.status, 404, 'B finds no session for that key');
      t.match(await viaB.text(), /Session not found/);
      const noKey = await fetch(`${b.url}/mcp`, {
        method: 'POST',
        headers: { accept: ACCEPT, 'content-type': 'application/json', 'mcp-session-id': sid },
        body: JSON.stringify(LIST_TOOLS),
      });
      t.equal(noKey.status, 404, 'nor without a key');
      await noKey.text();

      // A forward properly signed, carrying the other key: the holder checks the binding itself.
      const signed = (authorization: string, body: unknown, overrides: Partial<Record<string, string>> = {}) => {
        const bytes = forwardBody(body) ?? Buffer.alloc(0);
        return {
          authorization,
          accept: ACCEPT,
          'content-type': 'application/json',
          'mcp-session-id': sid,
          'mcp-protocol-version': '2025-06-18',
          ...forwardHeaders(forwardKey, {
            from: 'node-b',
            to: 'node-a',
            at: Date.now(),
            method: 'POST',
            sessionId: sid,
            authorization,
            bodySha256: createHash('sha256').update(bytes).digest('hex'),
          }),
          ...overrides,
        };
      };
      const wrongKey = await fetch(`${a.url}/mcp`, { method: 'POST', headers: signed(`Bearer ${other.secret}`, LIST_TOOLS), body: JSON.stringify(LIST_TOOLS) });
      t.equal(wrongKey.status, 404, 'A refuses a forward of the session carrying another key');
      await wrongKey.text();
      const rightKey = await fetch(`${a.url}/mcp`, { method: 'POST', headers: signed(`Bearer ${admin}`, LIST_TOOLS), body: JSON.stringify(LIST_TOOLS) });
      t.equal(rightKey.status, 200, 'the same forward with the session key is answered');
      t.match(await rightKey.text(), /list_instances/);

      // A forward is answered where it lands or not at all: B, given one for A's session, does not relay it on.
      const relayedBefore = await forwarded('forwarded');
      const toB = { ...signed(`Bearer ${admin}`, LIST_TOOLS) };
      Object.assign(
        toB,
        forwardHeaders(forwardKey, {
          from: 'node-a',
          to: 'node-b',
          at: Date.now(),
          method: 'POST',
          sessionId: sid,
          authorization: `Bearer ${admin}`,
          bodySha256: createHash('sha256').update(JSON.stringify(LIST_TOOLS)).digest('hex'),
        }),
      );
      const looped = await fetch(`${b.url}/mcp`, { method: 'POST', headers: toB, body: JSON.stringify(LIST_TOOLS) });
      t.equal(looped.status, 404, 'a forward for a session B does not hold: 404, not another hop');
      await looped.text();
      t.equal(await forwarded('forwarded'), relayedBefore, 'B relayed nothing');

      await t.test('requests posing as forwards without the proper signature are refused', async (t) => {
        const attempts: [string, string, Record<string, string>, string][] = [
          ['a flipped signature', a.url, signed(`Bearer ${admin}`, LIST_TOOLS, { 'x-vmkit-mcp-forward-signature': '0'.repeat(64) }), JSON.stringify(LIST_TOOLS)],
          [
            'a key of its own',
            a.url,
            {
              ...signed(`Bearer ${admin}`, LIST_TOOLS),
              ...forwardHeaders(Buffer.alloc(32, 7), {
                from: 'node-b',
                to: 'node-a',
                at: Date.now(),
                method: 'POST',
                sessionId: sid,
                authorization: `Bearer ${admin}`,
                bodySha256: createHash('sha256').update(JSON.stringify(LIST_TOOLS)).digest('hex'),
              }),
            },
            JSON.stringify(LIST_TOOLS),
          ],
          ['another body than the one signed', a.url, signed(`Bearer ${admin}`, LIST_TOOLS), JSON.stringify({ ...LIST_TOOLS, id: 8 })],
          ['another key than the one signed', a.url, { ...signed(`Bearer ${admin}`, LIST_TOOLS), authorization: `Bearer ${other.secret}` }, JSON.stringify(LIST_TOOLS)],
          ['a forward meant for A sent to B', b.url, signed(`Bearer ${admin}`, LIST_TOOLS), JSON.stringify(LIST_TOOLS)],
          ['a stale timestamp', a.url, signed(`Bearer ${admin}`, LIST_TOOLS, { 'x-vmkit-mcp-forwarded-at': String(Date.now() - 3_600_000) }), JSON.stringify(LIST_TOOLS)],
          [
            'the marker alone',
            a.url,
            { authorization: `Bearer ${admin}`, accept: ACCEPT, 'content-type': 'application/json', 'mcp-session-id': sid, 'x-vmkit-mcp-forwarded-by': 'node-b' },
            JSON.stringify(LIST_TOOLS),
          ],
        ];
        for (const [what, url, headers, body] of attempts) {
          const res = await fetch(`${url}/mcp`, { method: 'POST', headers, body });
          t.equal(res.status, 403, what);
          t.match(await res.text(), /signature does not verify/, what);
        }
        t.equal(await forwarded('refused'), 1, 'B counted the one that reached it');
      });
    });

    await t.test('the session ends through B: its row goes and B answers 404', async (t) => {
      // Closing the client ends its GET stream through B; A's slot for it frees.
      await first.client.close();
      await eventually('A to free the standing stream', async () => {
        const res = await fetch(`${a.url}/mcp`, {
          headers: { authorization: `Bearer ${admin}`, accept: 'text/event-stream', 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' },
        });
        await res.body?.cancel();
        return res.status === 200 ? true : undefined;
      });
      // Resume the same session through B without initialising, then end it.
      const resumed = new StreamableHTTPClientTransport(new URL(`${b.url}/mcp`), { sessionId: sid, requestInit: { headers: { authorization: `Bearer ${admin}` } } });
      await resumed.start();
      await resumed.terminateSession();
      t.equal(resumed.sessionId, undefined, 'DELETE through B answered');
      const rows = await rawRows(b.ctx.db, sql`SELECT 1 FROM mcp_sessions WHERE session_id = ${sid}`);
      t.equal(rows.length, 0, 'the row went before the DELETE was answered');
      const after = await fetch(`${b.url}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin}`, accept: ACCEPT, 'content-type': 'application/json', 'mcp-session-id': sid },
        body: JSON.stringify(LIST_TOOLS),
      });
      t.equal(after.status, 404);
      await after.text();
    });

    await t.test('a session opened on B, used through A: A relays to the internal URL B registered', async (t) => {
      const nodes = await listNodes(b.ctx.db);
      t.equal(nodes.find((n) => n.nodeId === 'node-b')?.url, `http://localhost:${portB}`, "B's registry row names its internal URL");
      const onB = balancedClient(ports, admin, (_method, seen) => (seen === 0 ? 'b' : 'a'));
      await onB.client.connect(onB.transport);
      const listed = await onB.client.callTool({ name: 'list_instances', arguments: {} });
      t.notOk(listed.isError, 'answered through A by B');
      t.ok(
        onB.log.some((r) => r.method === 'POST' && r.node === 'a' && r.status === 200),
        'the tool call went to A',
      );
      await onB.client.close();
    });

    await t.test('a process shutting down ends the streams it relays', async (t) => {
      const dirC = mkdtempSync(join(tmpdir(), 'vmkit-mcp-cluster-c-'));
      t.teardown(() => rmSync(dirC, { recursive: true, force: true }));
      for (const f of ['secret-box.key', 'admin.key']) copyFileSync(join(dirA, f), join(dirC, f));
      const c = await startTestControlPlane({ dataDir: dirC, config: { databaseUrl: pgdb.url, nodeId: 'node-c' } });
      const portC = Number(new URL(c.url).port);
      const viaC = balancedClient({ a: portA, b: portC }, admin, (_method, seen) => (seen === 0 ? 'a' : 'b'));
      await viaC.client.connect(viaC.transport);
      const heldId = viaC.transport.sessionId ?? '';
      const stream = await eventually('the GET stream through C', () => viaC.log.find((r) => r.method === 'GET'));
      t.same([stream.node, stream.status], ['b', 200], 'C relays the standing stream to A');
      // C's close would wait forever on a stream it relays, were the stream left open.
      await c.close();
      t.pass('C closed with the stream open');
      await eventually("A to free the session's stream", async () => {
        const res = await fetch(`${a.url}/mcp`, {
          headers: { authorization: `Bearer ${admin}`, accept: 'text/event-stream', 'mcp-session-id': heldId, 'mcp-protocol-version': '2025-06-18' },
        });
        await res.body?.cancel();
        return res.status === 200 ? true : undefined;
      });
      await viaC.client.close();
    });

    await t.test('A killed: its sessions answer 404 through B and the client starts again on B', async (t) => {
      const held = balancedClient(ports, admin, (_method, seen) => (seen === 0 ? 'a' : 'b'));
      await held.client.connect(held.transport);
      const heldId = held.transport.sessionId ?? '';
      t.ok((await held.client.listTools()).tools.length > 0, 'answered through B while A lives');
      t.equal(await touchMcpSessions(b.ctx.db, 'node-a', [heldId], Date.now()), 1, 'its last use is recorded');

      a.kill('SIGKILL');
      await a.exited;
      aAlive = false;
      const unreachableBefore = await forwarded('holder_unreachable');
      const refused = await held.client.listTools().then(
        () => 'answered',
        (err: unknown) => String(err),
      );
      t.match(refused, /404|Session not found/, 'the session is gone with A: 404');
      // (The client's standing GET stream, cut with A, may have tried again through B as well.)
      t.ok((await forwarded('holder_unreachable')) >= unreachableBefore + 1, 'B counted the holder it could not reach');
      await held.client.close();

      const again = balancedClient(ports, admin, () => 'b');
      await again.client.connect(again.transport);
      t.not(again.transport.sessionId, heldId, 'a new session');
      const listed = await again.client.callTool({ name: 'list_instances', arguments: {} });
      t.notOk(listed.isError, 'the new session on B works');
      t.ok(
        again.log.every((r) => r.node === 'b'),
        'all of it on B',
      );
      await again.client.close();

      // A dead node's rows go: first its registry row (B's heartbeat does this once A is stale), then its sessions.
      t.ok(await findMcpSessionHolder(b.ctx.db, heldId, 0), "A's row is still there while A is registered");
      t.equal(await findMcpSessionHolder(b.ctx.db, heldId, Date.now() + 60_000), undefined, 'a holder silent past the stale bound is no holder');
      await deregisterNode(b.ctx.db, 'node-a');
      t.ok((await forgetMcpSessionsOfDeadNodes(b.ctx.db, 0)) >= 1, "A's sessions are forgotten");
      const left = await rawRows<{ node_id: string }>(b.ctx.db, sql`SELECT node_id FROM mcp_sessions`);
      t.ok(
        left.every((r) => r.node_id === 'node-b'),
        "only B's sessions remain",
      );
    });

    await t.test("a node's own upkeep: last use written in batches, dead nodes' rows dropped, its own rows gone at close", async (t) => {
      const db = b.ctx.db;
      let clock = Date.now();
      await registerNode(db, { nodeId: 'node-d', url: 'http://127.0.0.1:9', now: clock });
      await recordMcpSession(db, { sessionId: 'left-by-node-d', nodeId: 'node-d', principalHash: null, now: clock });
      await recordMcpSession(db, { sessionId: 'of-a-dead-node', nodeId: 'node-gone', principalHash: null, now: clock });
      const c = new McpSessionCluster({ db, nodeId: 'node-d', key: forwardKey, staleAfterMs: 600_000, logger: b.ctx.logger, now: () => clock, flushMs: 20 });
      await c.start();
      const rowsOf = async (id: string) =>
        rawRows<{ last_used_at: number }>(db, sql`SELECT last_used_at FROM mcp_sessions WHERE session_id = ${id}`);
      t.same(await rowsOf('left-by-node-d'), [], 'a start forgets what a previous run of the node held');
      await c.opened('held-by-d', 'key_1');
      const opened = clock;
      clock += 5_000;
      c.used('held-by-d');
      await eventually('the use to be written', async () => (Number((await rowsOf('held-by-d'))[0]?.last_used_at) === opened + 5_000 ? true : undefined));
      await eventually("the dead node's row to go", async () => ((await rowsOf('of-a-dead-node')).length === 0 ? true : undefined));
      await c.close();
      t.same(await rowsOf('held-by-d'), [], 'a clean close removes the node\'s rows');
      await deregisterNode(db, 'node-d');
    });
  });
}

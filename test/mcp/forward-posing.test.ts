/**
 * One control plane (the default SQLite, or VMKIT_TEST_DATABASE=postgres): a request
 * posing as a forward from another control plane (the x-vmkit-mcp-forward* headers)
 * is refused, whatever it carries, and the session it names goes on working. On SQLite
 * no session is recorded in mcp_sessions (one process has nobody to forward to); on
 * PostgreSQL the session's row is there while it lives and goes when it is deleted.
 * Forwards between two processes: test/postgres/cluster-mcp.test.ts.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { FORWARD_HEADERS, forwardHeaders } from '../../control-plane/src/mcp/cluster.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

const ACCEPT = 'application/json, text/event-stream';
const LIST_TOOLS = { jsonrpc: '2.0', id: 3, method: 'tools/list' };

t.test('a request posing as a forward is refused; the session it names is untouched', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const transport = new StreamableHTTPClientTransport(new URL(`${cp.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${cp.adminKey}` } } });
  const client = new Client({ name: 'vmkit-test', version: '0.0.0' });
  await client.connect(transport);
  t.teardown(() => client.close());
  const sid = transport.sessionId ?? '';
  t.ok(sid, 'a session');

  const rows = async () => (await rawRows<{ node_id: string }>(cp.ctx.db, sql`SELECT node_id FROM mcp_sessions WHERE session_id = ${sid}`)).map((r) => r.node_id);
  if (cp.ctx.db.dialect === 'sqlite') t.same(await rows(), [], 'one SQLite process records nothing');
  else t.same(await rows(), [cp.ctx.nodeId], 'recorded as held by this node');

  const authorization = `Bearer ${cp.adminKey}`;
  const body = JSON.stringify(LIST_TOOLS);
  const base = { authorization, accept: ACCEPT, 'content-type': 'application/json', 'mcp-session-id': sid };
  // Signed with a key of the poser's own: on SQLite there is no key to verify with at all.
  const posing = forwardHeaders(Buffer.alloc(32, 1), {
    from: 'elsewhere',
    to: cp.ctx.nodeId,
    at: Date.now(),
    method: 'POST',
    sessionId: sid,
    authorization,
    bodySha256: createHash('sha256').update(body).digest('hex'),
  });
  for (const [what, headers] of [
    ['signed with another key', { ...base, ...posing }],
    ['only the marker', { ...base, [FORWARD_HEADERS.from]: 'elsewhere' }],
    ['only a signature', { ...base, [FORWARD_HEADERS.signature]: posing[FORWARD_HEADERS.signature] ?? '' }],
  ] as const) {
    const res = await fetch(`${cp.url}/mcp`, { method: 'POST', headers, body });
    t.equal(res.status, 403, what);
    const answer = (await res.json()) as { error?: { message?: string } };
    t.equal(
      answer.error?.message,
      'Forbidden: the request poses as a forward from another control plane but its signature does not verify.',
      what,
    );
  }
  const tools = await client.listTools();
  t.ok(tools.tools.length > 0, 'the session named goes on working');

  await transport.terminateSession();
  t.same(await rows(), [], 'no row once the session is deleted');
});

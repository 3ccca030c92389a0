import t from 'tap';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import { InProcessGateway } from '../../control-plane/src/mcp/gateway.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { revokeApiKey } from '../../control-plane/src/db/api-keys.ts';
import { listAudit } from '../../control-plane/src/db/audit.ts';
import type { AuditRow } from '../../control-plane/src/db/audit.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';

/**
 * The embedded MCP endpoint makes each tool's REST call inside the process
 * (mcp/in-process.ts) instead of through `inject`: the REST API must not be able to tell.
 */

const BUDGET = 12;
const cp = await startTestControlPlane({ config: { rateLimit: { max: BUDGET, windowMs: 3_600_000 } } });
t.teardown(() => cp.close());
const mcpUrl = `${cp.url}/mcp`;
const inst = await createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: 'web-1', provider: 'manual', status: 'running' });

async function auditRows(c: TestControlPlane, keyId: string): Promise<AuditRow[]> {
  return (await listAudit(c.ctx.db, c.workspaceId, { keyId, limit: 100 })).items;
}

t.test('a tool call leaves the audit row of a REST call: channel mcp, the tool, route, target id, status, client address', async (t) => {
  const key = await cp.createKey(['instances:read']);
  const client = await connectMcp(mcpUrl, key.secret);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'get_instance', arguments: { instance_id: inst.id } });
  t.notOk(res.isError);
  t.equal((res.structuredContent as { id: string }).id, inst.id, 'the REST view came back');
  const rows = await auditRows(cp, key.id);
  t.equal(rows.length, 1, 'one row for one tool call; the MCP envelope is not a row');
  t.match(rows[0], {
    workspaceId: cp.workspaceId,
    keyId: key.id,
    channel: 'mcp',
    tool: 'get_instance',
    action: 'instances.get',
    method: 'GET',
    route: '/api/instances/:id',
    targetIds: { id: inst.id },
    status: 200,
    errorKey: null,
    clientAddress: '127.0.0.1',
  });
  t.match(rows[0]?.requestId, /^[0-9a-f-]{36}$/, 'a request id of its own');
});

t.test('a key revoked while its session is open: the next tool call is refused with the contract sentence, and audited', async (t) => {
  const key = await cp.createKey(['instances:read']);
  const client = await connectMcp(mcpUrl, key.secret);
  t.teardown(() => client.close());
  t.notOk((await client.callTool({ name: 'list_instances', arguments: {} })).isError, 'works before');
  await revokeApiKey(cp.ctx.db, cp.workspaceId, key.id, Date.now());
  const res = await client.callTool({ name: 'list_instances', arguments: {} });
  t.equal(res.isError, true);
  t.equal(textOf(res), AUTH_FAILED_TEXT);
  const rows = await auditRows(cp, key.id);
  t.same(
    rows.map((r) => [r.action, r.status, r.errorKey, r.channel]),
    [
      ['instances.list', 401, 'unauthorized', 'mcp'],
      ['instances.list', 200, null, 'mcp'],
    ],
    'the refused REST call is in the trail, newest first',
  );
});

t.test('a path is resolved as an HTTP client resolves it: an id of .. climbs to /api/, an unknown route', async (t) => {
  const key = await cp.createKey(['instances:read']);
  const client = await connectMcp(mcpUrl, key.secret);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'get_instance', arguments: { instance_id: '..' } });
  t.equal(res.isError, true);
  t.equal((JSON.parse(textOf(res)) as { error: string }).error, 'not_found');
  t.match(await auditRows(cp, key.id), [{ action: 'route.unknown', route: null, status: 404, tool: 'get_instance' }]);
});

t.test('a key without the scope is refused by the route, as over HTTP', async (t) => {
  const key = await cp.createKey(['deploys:read']);
  const client = await connectMcp(mcpUrl, key.secret);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'get_instance', arguments: { instance_id: inst.id } });
  t.equal(textOf(res), AUTH_FAILED_TEXT);
  t.match(await auditRows(cp, key.id), [{ status: 403, errorKey: 'forbidden', tool: 'get_instance' }]);
});

t.test('each tool call costs its key exactly one request of the REST budget, shared with REST calls', async (t) => {
  const key = await cp.createKey(['instances:read']);
  // Half the budget spent over REST first.
  const spent = BUDGET / 2;
  for (let i = 0; i < spent; i++) t.equal((await cp.api('GET', '/api/instances', { key: key.secret })).status, 200);
  // The envelope (initialize, tools/call...) counts in a bucket of its own: it must not run out first.
  const client = await connectMcp(mcpUrl, key.secret);
  t.teardown(() => client.close());
  for (let i = 0; i < BUDGET - spent; i++) {
    const res = await client.callTool({ name: 'list_instances', arguments: {} });
    t.notOk(res.isError, `tool call ${i + 1} within the budget`);
  }
  const over = await client.callTool({ name: 'list_instances', arguments: {} });
  t.equal(over.isError, true, 'the call past the budget is refused');
  t.equal((JSON.parse(textOf(over)) as { error: string }).error, 'rate_limited', 'by the REST rate limit');
  t.equal((await cp.api('GET', '/api/instances', { key: key.secret })).status, 429, 'and REST is out of budget too');
});

t.test('a tool that posts a body: the route reads it (harden_vm on a VM without an agent)', async (t) => {
  const client = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'harden_vm', arguments: { instance_id: inst.id } });
  t.equal(res.isError, true);
  const body = JSON.parse(textOf(res)) as { error: string };
  t.not(body.error, 'invalid_request', 'the body arrived and passed validation');
  t.match(body.error, /^(agent_not_connected|vm_not_provisioned)$/);
});

t.test('the gateway on its own: status, JSON body and headers of the route, unknown routes included', async (t) => {
  const gateway = new InProcessGateway(cp.app);
  const ok = await gateway.request({ method: 'GET', path: `/api/instances/${inst.id}`, authorization: `Bearer ${cp.adminKey}`, tool: 'get_instance' });
  t.equal(ok.status, 200);
  t.equal((ok.body as { id: string }).id, inst.id);
  t.match(ok.headers['content-type'], /^application\/json/);
  t.match(ok.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  const missing = await gateway.request({ method: 'GET', path: '/api/nothing-here', authorization: `Bearer ${cp.adminKey}`, tool: 'get_instance' });
  t.equal(missing.status, 404);
  t.equal((missing.body as { error: string }).error, 'not_found');
  const bad = await gateway.request({
    method: 'POST',
    path: `/api/instances/${inst.id}/harden`,
    authorization: `Bearer ${cp.adminKey}`,
    tool: 'harden_vm',
    body: { wait_ms: 'soon' },
  });
  t.equal(bad.status, 400, 'a body the route refuses');
  t.equal((bad.body as { error: string }).error, 'invalid_request');
  const anonymous = await gateway.request({ method: 'GET', path: '/api/instances', authorization: undefined, tool: 'list_instances' });
  t.equal(anonymous.status, 401, 'no key, no answer');
});

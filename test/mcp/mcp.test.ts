import t from 'tap';
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { revokeApiKey } from '../../control-plane/src/db/api-keys.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';

const cp = await startTestControlPlane();
t.teardown(() => cp.close());
const mcpUrl = `${cp.url}/mcp`;
const inst = await createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: 'web-1', provider: 'manual', status: 'running' });

t.test('tools/list works without a key and shows every tool with schemas and annotations', async (t) => {
  const client = await connectMcp(mcpUrl, null);
  t.teardown(() => client.close());
  const { tools } = await client.listTools();
  const names = tools.map((x) => x.name).sort();
  for (const name of ['get_deploy', 'get_instance', 'harden_vm', 'list_instances']) t.ok(names.includes(name), name);
  for (const tool of tools) {
    t.equal(tool.inputSchema.type, 'object', `${tool.name} input schema`);
    t.equal(tool.outputSchema?.type, 'object', `${tool.name} output schema`);
    t.type(tool.annotations?.readOnlyHint, 'boolean', `${tool.name} readOnlyHint`);
    t.type(tool.annotations?.destructiveHint, 'boolean', `${tool.name} destructiveHint`);
    t.type(tool.annotations?.idempotentHint, 'boolean', `${tool.name} idempotentHint`);
    t.type(tool.annotations?.openWorldHint, 'boolean', `${tool.name} openWorldHint`);
    t.ok((tool.description ?? '').length > 60, `${tool.name} has a real description`);
  }
  const harden = tools.find((x) => x.name === 'harden_vm');
  t.same(harden?.inputSchema.required, ['instance_id'], 'harden_vm takes instance_id');
  t.equal(harden?.annotations?.readOnlyHint, false);
  t.equal(harden?.annotations?.destructiveHint, true, 'it removes root and password logins');
  t.equal(harden?.annotations?.idempotentHint, true, 'a second call changes nothing');
  t.equal(tools.find((x) => x.name === 'list_instances')?.annotations?.readOnlyHint, true);
});

t.test('list_instances answers structured content and the same JSON as text', async (t) => {
  const client = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'list_instances', arguments: {} });
  t.notOk(res.isError);
  const structured = res.structuredContent as { instances: Array<{ id: string; name: string }> };
  t.same(structured.instances.map((i) => i.id), [inst.id]);
  t.same(JSON.parse(textOf(res)), structured, 'text content is the JSON result');
});

t.test('get_instance answers the REST view; an unknown id answers the backend JSON error', async (t) => {
  const client = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => client.close());
  const ok = await client.callTool({ name: 'get_instance', arguments: { instance_id: inst.id } });
  t.equal((ok.structuredContent as { id: string }).id, inst.id);
  const missing = await client.callTool({ name: 'get_instance', arguments: { instance_id: 'inst_nope' } });
  t.equal(missing.isError, true);
  const body = JSON.parse(textOf(missing)) as { error: string; message: string };
  t.equal(body.error, 'instance_not_found');
  t.same(Object.keys(body), ['error', 'message'], 'exactly the backend error body');
  const rest = await cp.api<{ error: string; message: string }>('GET', '/api/instances/inst_nope');
  t.same(body, rest.body, 'the same body the REST API sends');
});

t.test('get_deploy of an unknown deploy answers deploy_not_found', async (t) => {
  const client = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: 'dep_unknown' } });
  t.equal(res.isError, true);
  t.equal((JSON.parse(textOf(res)) as { error: string }).error, 'deploy_not_found');
});

t.test('every kind of auth failure answers the exact contract sentence', async (t) => {
  const expired = await cp.createKey(['instances:read'], { expiresAt: Date.now() - 1000 });
  const revoked = await cp.createKey(['instances:read']);
  await revokeApiKey(cp.ctx.db, cp.workspaceId, revoked.id, Date.now());
  const narrow = await cp.createKey(['deploys:read']);
  const cases: Array<[string, string | null]> = [
    ['no key', null],
    ['not a vmk_ key', 'ghp_abcdef'],
    ['unknown key', `vmk_${'x'.repeat(43)}`],
    ['expired key', expired.secret],
    ['revoked key', revoked.secret],
    ['key without the scope', narrow.secret],
  ];
  for (const [name, key] of cases) {
    const client = await connectMcp(mcpUrl, key);
    const res = await client.callTool({ name: 'list_instances', arguments: {} });
    t.equal(res.isError, true, `${name}: tool error`);
    t.equal(textOf(res), AUTH_FAILED_TEXT, `${name}: exact sentence`);
    await client.close();
  }
  t.equal(
    AUTH_FAILED_TEXT,
    'Authentication failed — your vmk_ API key is missing, invalid, expired, or lacks the scope this tool requires.',
  );
});

t.test('invalid arguments give the SDK validation error, not a crash', async (t) => {
  const client = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'get_instance', arguments: { instance_id: 42 } });
  t.equal(res.isError, true);
  t.match(textOf(res), /Input validation error/);
  const after = await client.callTool({ name: 'list_instances', arguments: {} });
  t.notOk(after.isError, 'the session still works');
});

t.test('MCP calls land in the audit trail with channel mcp and the tool name', async (t) => {
  const client = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => client.close());
  await client.callTool({ name: 'get_instance', arguments: { instance_id: inst.id } });
  const audit = await cp.api<{ items: Array<{ channel: string; tool: string | null; action: string; status: number }> }>(
    'GET',
    '/api/audit?action=instances.get',
  );
  const row = audit.body.items.find((r) => r.channel === 'mcp');
  t.ok(row, 'an mcp row exists');
  t.equal(row?.tool, 'get_instance');
  t.equal(row?.status, 200);
});

/** A raw POST with chosen headers (fetch does not let a caller set Host). */
function rawPost(url: string, headers: Record<string, string>, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const INIT = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
});
const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

t.test('a Host header or Origin from another site is refused (DNS rebinding)', async (t) => {
  t.equal(await rawPost(mcpUrl, { ...JSON_HEADERS, host: 'evil.example' }, INIT), 403, 'foreign Host');
  t.equal(await rawPost(mcpUrl, { ...JSON_HEADERS, origin: 'https://evil.example' }, INIT), 403, 'foreign Origin');
  t.equal(await rawPost(mcpUrl, { ...JSON_HEADERS, origin: 'http://localhost:3000' }, INIT), 200, 'a loopback Origin is fine');
});

t.test('an unknown session id gets 404; a request without session that is not initialize gets 400', async (t) => {
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const unknown = await fetch(mcpUrl, {
    method: 'POST',
    headers: { ...headers, 'mcp-session-id': 'no-such-session' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  t.equal(unknown.status, 404);
  const noSession = await fetch(mcpUrl, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) });
  t.equal(noSession.status, 400);
  const malformed = await fetch(mcpUrl, { method: 'POST', headers, body: '{"jsonrpc":' });
  t.equal(malformed.status, 400, 'malformed JSON');
});

/** `vmkit mcp` as its own process; resolves with its URL once it listens. */
async function spawnStandalone(t: { teardown(fn: () => unknown): void }, gateway: string): Promise<string> {
  const child = spawn(process.execPath, ['control-plane/bin/vmkit.js', 'mcp', '--gateway', gateway, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    child.kill('SIGTERM');
  });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vmkit mcp did not start: ${out}`)), 30_000);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /serving MCP at (http:\/\/\S+)/.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('exit', (code) => reject(new Error(`vmkit mcp exited ${code}: ${out}`)));
  });
}

t.test('standalone mode (vmkit mcp, its own process) forwarding to the control plane gives the same answers', async (t) => {
  const url = await spawnStandalone(t, cp.url);
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'served at /');
  const viaGateway = await connectMcp(url, cp.adminKey);
  const embedded = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(async () => {
    await viaGateway.close();
    await embedded.close();
  });
  const a = await viaGateway.callTool({ name: 'list_instances', arguments: {} });
  const b = await embedded.callTool({ name: 'list_instances', arguments: {} });
  t.same(a.structuredContent, b.structuredContent, 'same structured answer');
  const { tools } = await viaGateway.listTools();
  t.same(tools.map((x) => x.name).sort(), (await embedded.listTools()).tools.map((x) => x.name).sort(), 'same tools');
  const anonymous = await connectMcp(url, null);
  const denied = await anonymous.callTool({ name: 'list_instances', arguments: {} });
  t.equal(textOf(denied), AUTH_FAILED_TEXT, 'the same auth sentence through the gateway');
  await anonymous.close();
  const missing = await viaGateway.callTool({ name: 'get_instance', arguments: { instance_id: 'inst_nope' } });
  t.equal((JSON.parse(textOf(missing)) as { error: string }).error, 'instance_not_found');
  const audit = await cp.api<{ items: Array<{ channel: string; tool: string | null }> }>('GET', '/api/audit?action=instances.list');
  t.ok(audit.body.items.some((r) => r.channel === 'mcp' && r.tool === 'list_instances'), 'audited as mcp through HTTP too');
});

t.test('vmkit mcp refuses bad options with one clear line', async (t) => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(process.execPath, ['control-plane/bin/vmkit.js', 'mcp', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      child.on('exit', (code) => resolve({ code, err }));
    });
  const noGateway = await run(['--listen', '127.0.0.1:0']);
  t.equal(noGateway.code, 2);
  t.match(noGateway.err, /--gateway must be/);
  const badListen = await run(['--gateway', 'http://127.0.0.1:1', '--listen', 'nope']);
  t.equal(badListen.code, 2);
  t.match(badListen.err, /--listen must be HOST:PORT/);
});

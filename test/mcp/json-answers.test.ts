/**
 * How /mcp answers a POST on an open session: one plain request (no progress asked) as
 * one application/json body; anything else (progress, a request the SDK refuses) the way
 * the SDK's Streamable HTTP transport does. Raw HTTP against a real control plane, then a
 * handler of our own whose tool waits, for a client that leaves before the answer.
 */
import t from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { McpHttpHandler } from '../../control-plane/src/mcp/http.ts';
import type { GatewayResponse } from '../../control-plane/src/mcp/gateway.ts';
import { defineTool, expectOk, okResult } from '../../control-plane/src/mcp/tool.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { readJsonBody } from '../helpers/http-json.ts';

const cp = await startTestControlPlane();
t.teardown(() => cp.close());
const mcpUrl = `${cp.url}/mcp`;
const inst = await createInstance(cp.ctx.db, { workspaceId: cp.workspaceId, name: 'json-1', provider: 'manual', status: 'running' });

const ACCEPT = 'application/json, text/event-stream';
const VERSION = '2025-06-18';

interface Answer {
  status: number;
  type: string;
  sessionId: string | null;
  length: string | null;
  text: string;
}

async function post(url: string, headers: Record<string, string>, body: unknown, signal?: AbortSignal): Promise<Answer> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), ...(signal && { signal }) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', sessionId: res.headers.get('mcp-session-id'), length: res.headers.get('content-length'), text: await res.text() };
}

/** The JSON-RPC messages of an answer, whether JSON or an SSE stream. */
function messagesOf(a: Answer): Array<{ id?: unknown; result?: Record<string, unknown>; error?: { code: number; message: string } }> {
  if (a.type.startsWith('application/json')) return [JSON.parse(a.text) as never];
  return a.text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => JSON.parse(l.slice(6)) as never);
}

async function openSession(url: string, key: string | null): Promise<Record<string, string>> {
  const auth: Record<string, string> = key === null ? {} : { authorization: `Bearer ${key}` };
  const init = await post(url, { ...auth, accept: ACCEPT }, {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion: VERSION, capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
  });
  if (init.status !== 200 || init.sessionId === null) throw new Error(`initialize answered ${init.status}: ${init.text}`);
  const headers = { ...auth, accept: ACCEPT, 'mcp-session-id': init.sessionId, 'mcp-protocol-version': VERSION };
  const initialized = await post(url, headers, { jsonrpc: '2.0', method: 'notifications/initialized' });
  if (initialized.status !== 202) throw new Error(`notifications/initialized answered ${initialized.status}`);
  return headers;
}

const LIST = { name: 'list_instances', arguments: {} };

t.test('a plain tool call is answered as one JSON body with the session id', async (t) => {
  const headers = await openSession(mcpUrl, cp.adminKey);
  const a = await post(mcpUrl, headers, { jsonrpc: '2.0', id: 7, method: 'tools/call', params: LIST });
  t.equal(a.status, 200);
  t.equal(a.type, 'application/json');
  t.equal(a.sessionId, headers['mcp-session-id'], 'the session id comes back');
  t.equal(a.length, String(Buffer.byteLength(a.text)), 'one body of a known length, not chunks');
  const [msg] = messagesOf(a);
  t.equal(msg?.id, 7, 'the response carries the request id');
  const structured = msg?.result?.structuredContent as { instances: Array<{ id: string }> };
  t.same(structured.instances.map((i) => i.id), [inst.id]);
  const content = msg?.result?.content as Array<{ type: string; text: string }>;
  t.same(JSON.parse(content[0]?.text ?? ''), structured, 'the same JSON as text');

  const listed = await post(mcpUrl, headers, { jsonrpc: '2.0', id: 'list-1', method: 'tools/list' });
  t.equal(listed.type, 'application/json', 'tools/list too');
  t.ok((messagesOf(listed)[0]?.result?.tools as unknown[]).length > 0);
  const unknown = await post(mcpUrl, headers, { jsonrpc: '2.0', id: 8, method: 'no/such/method' });
  t.equal(unknown.status, 200);
  t.equal(messagesOf(unknown)[0]?.error?.code, -32601, 'an unknown method is the JSON-RPC error, as JSON');
  const denied = await post(mcpUrl, { ...headers, authorization: `Bearer vmk_${'x'.repeat(43)}` }, { jsonrpc: '2.0', id: 9, method: 'tools/call', params: LIST });
  t.equal(denied.status, 404, 'another credential does not reach the session');
});

t.test('a call that asks for progress, and a batch, are answered by the SDK as SSE streams', async (t) => {
  const headers = await openSession(mcpUrl, cp.adminKey);
  const progress = await post(mcpUrl, headers, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { ...LIST, _meta: { progressToken: 'p1' } } });
  t.equal(progress.status, 200);
  t.match(progress.type, /^text\/event-stream/);
  t.equal(messagesOf(progress).at(-1)?.id, 1, 'the response ends the stream');
  const batch = await post(mcpUrl, headers, [
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: LIST },
    { jsonrpc: '2.0', id: 3, method: 'tools/list' },
  ]);
  t.match(batch.type, /^text\/event-stream/);
  t.same(messagesOf(batch).map((m) => m.id).sort(), [2, 3]);
});

t.test('what the SDK refuses is still refused the same way', async (t) => {
  const headers = await openSession(mcpUrl, cp.adminKey);
  const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: LIST };
  const noSse = await post(mcpUrl, { ...headers, accept: 'application/json' }, call);
  t.equal(noSse.status, 406, 'an Accept without text/event-stream');
  const oldVersion = await post(mcpUrl, { ...headers, 'mcp-protocol-version': '1999-01-01' }, call);
  t.equal(oldVersion.status, 400, 'an unsupported protocol version');
  t.match(oldVersion.text, /Unsupported protocol version/);
  const extraKey = await post(mcpUrl, headers, { ...call, extra: true });
  t.equal(extraKey.status, 400, 'a message that is not a JSON-RPC request');
  const fractionalId = await post(mcpUrl, headers, { ...call, id: 1.5 });
  t.equal(fractionalId.status, 400, 'an id that is neither a string nor an integer');
  const after = await post(mcpUrl, headers, call);
  t.equal(after.type, 'application/json', 'the session still answers');
});

t.test('a client that leaves before the answer: the late answer is dropped, the session goes on', async (t) => {
  let release: (() => void) | undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  let calls = 0;
  const arrived: Array<() => void> = [];
  const slow = defineTool({
    name: 'slow',
    title: 'Slow',
    description: 'Answers when the test lets it.',
    inputSchema: z.object({}),
    outputSchema: z.looseObject({ n: z.number() }),
    annotations: { readOnlyHint: true },
    async run(_args, ctx) {
      calls += 1;
      arrived.shift()?.();
      if (calls === 1) await held;
      return okResult(expectOk(await ctx.call({ method: 'GET', path: '/n' })));
    },
  });
  const errors: unknown[] = [];
  const handler = new McpHttpHandler({
    gateway: { request: async (): Promise<GatewayResponse> => ({ status: 200, body: { n: calls }, headers: {} }) },
    tools: [slow],
    onError: (err) => errors.push(err),
  });
  const server = createServer((req, res) => {
    void readJsonBody(req).then((body) => handler.handle(req, res, body, { keyId: 'k', principal: 'k' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    await handler.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const headers = await openSession(url, null);

  const gone = new AbortController();
  const started = new Promise<void>((resolve) => arrived.push(resolve));
  const first = post(url, headers, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'slow', arguments: {} } }, gone.signal);
  await started;
  gone.abort();
  await t.rejects(first, 'the client gave up');
  release?.();
  const second = await post(url, headers, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'slow', arguments: {} } });
  t.equal(second.type, 'application/json');
  const [msg] = messagesOf(second);
  t.equal(msg?.id, 2, 'the next call gets its own answer, not the dropped one');
  t.same(msg?.result?.structuredContent, { n: 2 });
  t.same(errors, []);
});

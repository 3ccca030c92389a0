import t from 'tap';
import { startStandaloneMcp } from '../../control-plane/src/mcp/standalone.ts';

/** How `vmkit mcp` reads a request body: whole JSON, a bounded size, clear errors otherwise. */

// No tool is called here: the gateway URL is never reached.
const mcp = await startStandaloneMcp({ gateway: 'http://127.0.0.1:9', host: '127.0.0.1', port: 0 });
t.teardown(() => mcp.close());
const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const INIT = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
});

async function post(body: string, path = '') {
  const res = await fetch(mcp.url + path, { method: 'POST', headers: HEADERS, body });
  return { status: res.status, session: res.headers.get('mcp-session-id'), text: await res.text() };
}

t.test('a JSON body is read whole: initialize opens a session, at / and at /mcp', async (t) => {
  // Big enough to come in several chunks.
  const padded = INIT.replace('"capabilities":{}', `"capabilities":{"experimental":{"pad":{"x":"${'x'.repeat(200_000)}"}}}`);
  t.ok(padded.length > 200_000);
  for (const [body, path] of [[INIT, ''], [padded, 'mcp']] as const) {
    const res = await post(body, path);
    t.equal(res.status, 200, `${path || '/'}: ${body.length} bytes`);
    t.ok(res.session, 'a session id');
  }
});

t.test('a body that is not JSON gets the JSON-RPC parse error', async (t) => {
  const res = await post('{"jsonrpc": "2.0",');
  t.equal(res.status, 400);
  t.match(JSON.parse(res.text), { jsonrpc: '2.0', error: { code: -32700, message: /not JSON/ }, id: null });
});

t.test('a body over 1 MiB is refused with 413, and the server goes on', async (t) => {
  const res = await post(JSON.stringify({ pad: 'x'.repeat(1024 * 1024 + 10) }));
  t.equal(res.status, 413);
  t.match(JSON.parse(res.text), { error: { code: -32700, message: 'Request body too large.' } });
  t.equal((await post(INIT)).status, 200, 'the next request is served');
});

t.test('another path gets 404, another method 405', async (t) => {
  t.equal((await post(INIT, 'other')).status, 404);
  t.equal((await post(INIT, 'mcp/../other')).status, 404, 'a path that only looks like /mcp');
  t.equal((await fetch(mcp.url, { method: 'PUT', body: INIT })).status, 405);
});

import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlaneOptions } from '../helpers/control-plane.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';

const INIT = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'flood', version: '1' } },
});
const LIST = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

/** Authorization headers an attacker rotates through: none of them a valid key. */
function junkAuthorization(i: number): string {
  switch (i % 5) {
    case 0:
      return `Bearer vmk_${randomBytes(32).toString('base64url').slice(0, 43)}`;
    case 1:
      return `Bearer junk-${i}`;
    case 2:
      return `Basic ${Buffer.from(`user${i}:pw`).toString('base64')}`;
    case 3:
      return `Token ${randomBytes(12).toString('hex')}`;
    default:
      return `${i}`;
  }
}

/** One raw MCP POST over real HTTP; resolves with the status, the session id given and the body. */
async function post(url: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body, signal: AbortSignal.timeout(60_000) });
  return { status: res.status, session: res.headers.get('mcp-session-id'), text: await res.text() };
}

/** `count` initialize calls with rotating junk headers, `parallel` at a time; statuses counted. */
async function flood(url: string, count: number, parallel = 8): Promise<{ statuses: Map<number, number>; first429: string }> {
  const statuses = new Map<number, number>();
  let first429 = '';
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      const res = await post(url, INIT, { authorization: junkAuthorization(i) });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 429 && !first429) first429 = res.text;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return { statuses, first429 };
}

async function start(t: Test, config: TestControlPlaneOptions['config']) {
  const cp = await startTestControlPlane({ config });
  t.teardown(() => cp.close());
  return { cp, mcpUrl: `${cp.url}/mcp` };
}

t.test('1,100 anonymous initialize calls with rotating junk headers get 429s and leave a real user session alone', async (t) => {
  // The default limits, with a window long enough that a slow run stays inside one.
  const { cp, mcpUrl } = await start(t, { rateLimit: { anonymousMax: 60, windowMs: 3_600_000 } });
  const user = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => user.close());
  t.notOk((await user.callTool({ name: 'list_instances', arguments: {} })).isError, 'the user works before the flood');

  const { statuses, first429 } = await flood(mcpUrl, 1100);
  t.same([...statuses.keys()].sort(), [200, 429], 'only 200 and 429 answers');
  t.equal(statuses.get(200), 60, 'the address gets its anonymous budget, whatever header it sends');
  t.equal(statuses.get(429), 1040, 'the rest of the flood is refused');
  const refused = JSON.parse(first429) as { error: string; message: string };
  t.same(Object.keys(refused).sort(), ['error', 'message'], 'a 429 in the error shape');
  t.equal(refused.error, 'rate_limited');

  const after = await user.callTool({ name: 'list_instances', arguments: {} });
  t.notOk(after.isError, 'the user session still works after the flood');
  t.ok((await user.listTools()).tools.length > 0, 'and lists tools');
});

t.test('even when the address limit lets every call through, anonymous sessions never evict a key session', async (t) => {
  const { cp, mcpUrl } = await start(t, {
    rateLimit: { anonymousMax: 1_000_000, windowMs: 3_600_000 },
    mcpSessions: { max: 1000, anonymousMax: 50, perKeyMax: 32 },
  });
  const user = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => user.close());
  const firstAnonymous = await post(mcpUrl, INIT);
  t.equal(firstAnonymous.status, 200);

  const { statuses } = await flood(mcpUrl, 1100);
  t.same([...statuses], [[200, 1100]], 'every junk initialize got a session (no limit in the way)');

  const after = await user.callTool({ name: 'list_instances', arguments: {} });
  t.notOk(after.isError, 'the user session survived 1,100 anonymous sessions');
  const evicted = await post(mcpUrl, LIST, { 'mcp-session-id': firstAnonymous.session ?? '' });
  t.equal(evicted.status, 404, 'the oldest anonymous session made room for the newer ones');
  t.match(evicted.text, /Session not found/);
});

t.test('a key holds a bounded number of sessions: its own oldest goes, other keys keep theirs', async (t) => {
  const { cp, mcpUrl } = await start(t, { mcpSessions: { max: 1000, anonymousMax: 100, perKeyMax: 3 } });
  const other = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => other.close());
  const { secret } = await cp.createKey(['instances:read']);
  const sessions = [];
  for (let i = 0; i < 4; i++) sessions.push(await post(mcpUrl, INIT, { authorization: `Bearer ${secret}` }));
  t.same(sessions.map((s) => s.status), [200, 200, 200, 200]);
  const use = (s: { session: string | null }) => post(mcpUrl, LIST, { authorization: `Bearer ${secret}`, 'mcp-session-id': s.session ?? '' });
  t.equal((await use(sessions[0]!)).status, 404, 'the first of four sessions of the key is gone');
  for (const s of sessions.slice(1)) t.equal((await use(s)).status, 200, 'the three newer ones answer');
  t.notOk((await other.callTool({ name: 'list_instances', arguments: {} })).isError, "another key's session is untouched");
});

t.test('over the total bound, the key holding the most sessions gives one up', async (t) => {
  const { cp, mcpUrl } = await start(t, { mcpSessions: { max: 4, anonymousMax: 100, perKeyMax: 10 } });
  const quiet = await connectMcp(mcpUrl, cp.adminKey);
  t.teardown(() => quiet.close());
  const { secret } = await cp.createKey(['instances:read']);
  const auth = { authorization: `Bearer ${secret}` };
  const busy = [];
  for (let i = 0; i < 4; i++) busy.push(await post(mcpUrl, INIT, auth));
  t.equal((await post(mcpUrl, LIST, { ...auth, 'mcp-session-id': busy[0]?.session ?? '' })).status, 404, 'the busy key lost its oldest');
  t.notOk((await quiet.callTool({ name: 'list_instances', arguments: {} })).isError, 'the key with one session kept it');
});

t.test('a session answers only to the key that opened it', async (t) => {
  const { cp, mcpUrl } = await start(t, {});
  const { secret } = await cp.createKey(['instances:read']);
  const opened = await post(mcpUrl, INIT, { authorization: `Bearer ${cp.adminKey}` });
  const sid = { 'mcp-session-id': opened.session ?? '' };
  t.equal((await post(mcpUrl, LIST, { ...sid, authorization: `Bearer ${secret}` })).status, 404, 'another key: no such session');
  t.equal((await post(mcpUrl, LIST, sid)).status, 404, 'no key: no such session');
  t.equal((await post(mcpUrl, LIST, { ...sid, authorization: 'Bearer junk' })).status, 404, 'junk: no such session');
  t.equal((await post(mcpUrl, LIST, { ...sid, authorization: `Bearer ${cp.adminKey}` })).status, 200, 'its own key: answered');
});

t.test('without a key, MCP still works and tools answer the contract sentence', async (t) => {
  const { mcpUrl } = await start(t, {});
  const anonymous = await connectMcp(mcpUrl, null);
  t.teardown(() => anonymous.close());
  t.ok((await anonymous.listTools()).tools.length > 0, 'tools/list without a key');
  const res = await anonymous.callTool({ name: 'list_instances', arguments: {} });
  t.equal(res.isError, true);
  t.equal(textOf(res), AUTH_FAILED_TEXT);
});

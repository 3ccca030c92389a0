/**
 * HttpGateway, the way `vmkit mcp --gateway` reaches the control plane: one REST call per
 * tool call over kept-alive HTTP connections, with the caller's key and the MCP marks,
 * bounded in time and stopped when the tool call is cancelled. Against a real loopback
 * server that records what reaches it (the control plane's side is in mcp.test.ts).
 */
import t from 'tap';
import type { Test } from 'tap';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpGateway } from '../../control-plane/src/mcp/gateway.ts';
import { readJsonBody } from '../helpers/http-json.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: unknown;
  socket: number;
}

async function backend(t: Test, answer: (req: IncomingMessage, res: ServerResponse) => void) {
  const seen: Seen[] = [];
  const sockets = new Map<unknown, number>();
  const closed: Array<() => void> = [];
  const arrived: Array<() => void> = [];
  const server = createServer((req, res) => {
    void (async () => {
      if (!sockets.has(req.socket)) sockets.set(req.socket, sockets.size + 1);
      const body = await readJsonBody(req);
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, socket: sockets.get(req.socket) ?? 0 });
      res.on('close', () => closed.shift()?.());
      arrived.shift()?.();
      answer(req, res);
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  /** Resolves when the server sees the next response closed (answered or cut by the client). */
  const nextClose = () => new Promise<void>((resolve) => closed.push(resolve));
  /** Resolves when the next request has reached the server. */
  const nextRequest = () => new Promise<void>((resolve) => arrived.push(resolve));
  return { url, seen, nextClose, nextRequest };
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json', 'x-request-id': 'req-1' });
  res.end(JSON.stringify(body));
};

t.test('a call carries the key, the MCP marks and the client address, and answers status, body and headers', async (t) => {
  const { url, seen } = await backend(t, (req, res) => json(res, req.method === 'POST' ? 202 : 200, { ok: true }));
  const gateway = new HttpGateway(url);
  t.teardown(() => gateway.close());
  const got = await gateway.request({ method: 'GET', path: '/api/instances?x=1', authorization: 'Bearer vmk_k', tool: 'list_instances', clientAddress: '10.0.0.9' });
  t.same(got, { status: 200, body: { ok: true }, headers: got.headers });
  t.equal(got.headers['x-request-id'], 'req-1');
  t.match(seen[0], {
    method: 'GET',
    url: '/api/instances?x=1',
    headers: { authorization: 'Bearer vmk_k', 'x-vmkit-channel': 'mcp', 'x-vmkit-tool': 'list_instances', 'x-forwarded-for': '10.0.0.9', accept: 'application/json' },
  });
  const posted = await gateway.request({ method: 'POST', path: '/api/deploys', authorization: 'Bearer vmk_k', tool: 'deploy', body: { repo: 'a/b', note: 'é' } });
  t.equal(posted.status, 202);
  t.same(seen[1]?.body, { repo: 'a/b', note: 'é' });
  t.equal(seen[1]?.headers['content-type'], 'application/json');
  t.equal(seen[1]?.headers['content-length'], String(Buffer.byteLength(JSON.stringify({ repo: 'a/b', note: 'é' }))), 'the length in bytes');
  t.equal(seen[1]?.socket, seen[0]?.socket, 'the second call reuses the kept-alive connection');
  const anonymous = await gateway.request({ method: 'GET', path: '/api/instances', authorization: undefined, tool: 'list_instances' });
  t.equal(anonymous.status, 200);
  t.notOk('authorization' in (seen[2]?.headers ?? {}), 'no key sent when the caller has none');
});

t.test('a body that is not JSON comes back as an internal error body naming what came', async (t) => {
  const { url } = await backend(t, (_req, res) => {
    res.writeHead(502, { 'content-type': 'text/html' });
    res.end('<html>bad gateway</html>');
  });
  const gateway = new HttpGateway(url);
  t.teardown(() => gateway.close());
  const got = await gateway.request({ method: 'GET', path: '/api/instances', authorization: 'Bearer vmk_k', tool: 'list_instances' });
  t.equal(got.status, 502);
  t.match(got.body, { error: 'internal', message: /non-JSON body: <html>bad gateway<\/html>/ });
});

t.test('a cancelled tool call stops its REST call at once', async (t) => {
  const { url, nextClose, nextRequest } = await backend(t, () => undefined); // never answers
  const gateway = new HttpGateway(url);
  t.teardown(() => gateway.close());
  const abort = new AbortController();
  const closed = nextClose();
  const arrived = nextRequest();
  const call = gateway.request({ method: 'GET', path: '/api/commands/c1?wait_ms=10000', authorization: 'Bearer vmk_k', tool: 'harden_vm', signal: abort.signal });
  await arrived;
  abort.abort(new Error('cancelled by the client'));
  await t.rejects(call, { message: 'cancelled by the client' });
  await closed;
  t.pass('the control plane saw the request go away');
  const already = new AbortController();
  already.abort();
  await t.rejects(
    gateway.request({ method: 'GET', path: '/api/instances', authorization: 'Bearer vmk_k', tool: 'list_instances', signal: already.signal }),
    'a call cancelled before it starts is not made',
  );
});

t.test('a control plane that does not answer in time fails the call with a sentence', async (t) => {
  const { url } = await backend(t, () => undefined); // never answers
  const gateway = new HttpGateway(url, 50);
  t.teardown(() => gateway.close());
  await t.rejects(gateway.request({ method: 'GET', path: '/api/instances', authorization: 'Bearer vmk_k', tool: 'list_instances' }), {
    message: 'The control plane did not answer within 50 ms.',
  });
});

t.test('a control plane that cannot be reached fails the call', async (t) => {
  // The port of a server that has been closed: nothing listens there now.
  const dead = createServer();
  await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
  const deadPort = (dead.address() as AddressInfo).port;
  await new Promise((r) => dead.close(r));
  const unreachable = new HttpGateway(`http://127.0.0.1:${deadPort}`);
  t.teardown(() => unreachable.close());
  await t.rejects(unreachable.request({ method: 'GET', path: '/api/instances', authorization: 'Bearer vmk_k', tool: 'list_instances' }), { code: 'ECONNREFUSED' });
});

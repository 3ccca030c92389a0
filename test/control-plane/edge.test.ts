import t from 'tap';
import type { Test } from 'tap';
import { connect } from 'node:net';
import { ERRORS, isErrorKey } from '@vmkit/protocol';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { ApiResponse, TestControlPlane } from '../helpers/control-plane.ts';

interface ErrorBody {
  error: string;
  message: string;
}

const ID_101 = `inst_${'a'.repeat(96)}`;
const ID_128 = `inst_${'a'.repeat(123)}`;
const ID_129 = `inst_${'a'.repeat(124)}`;

/** The answer is `{"error","message"}` with a registered key whose status it carries. */
function assertErrorShape(t: Test, res: ApiResponse, what: string): void {
  const body = res.body as Record<string, unknown>;
  t.same(Object.keys(body ?? {}).sort(), ['error', 'message'], `${what}: exactly error and message`);
  t.ok(isErrorKey(body?.error), `${what}: ${String(body?.error)} is a registered key`);
  if (isErrorKey(body?.error)) t.equal(res.status, ERRORS[body.error].status, `${what}: the key's status`);
  t.type(body?.message, 'string', `${what}: a message`);
}

/** Bytes straight on a socket, for what fetch will not send; resolves with the whole answer. */
function rawHttp(url: string, bytes: string): Promise<{ status: number; body: unknown }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(bytes));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // The server closes after answering; a reset after the answer arrived is fine.
      if (text.includes('\r\n\r\n')) return;
      reject(err);
    });
    socket.on('close', () => {
      const [head = '', body = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), body: body ? (JSON.parse(body) as unknown) : null });
    });
  });
}

t.test('ids as long as the API allows reach the route; longer ones are a 400 naming the field', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());
  for (const id of [ID_101, ID_128]) {
    const res = await cp.api<ErrorBody>('GET', `/api/instances/${id}`);
    t.equal(res.status, 404, `${id.length} characters: the route answers`);
    t.equal(res.body.error, 'instance_not_found');
  }
  const long = await cp.api<ErrorBody>('GET', `/api/instances/${ID_129}`);
  t.equal(long.status, 400);
  t.equal(long.body.error, 'invalid_request');
  t.match(long.body.message, /params\.id/);
  const huge = await cp.api('GET', `/api/instances/${'x'.repeat(8000)}`);
  t.equal(huge.status, 400, 'an 8,000-character id too');
  assertErrorShape(t, huge, 'huge id');
  const anonymous = await cp.api<ErrorBody>('GET', `/api/instances/${ID_101}`, { key: null });
  t.equal(anonymous.status, 401, 'without a key the key is asked for first, as on any route');
});

t.test('a path whose percent-encoding does not decode is a 400 invalid_request', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());
  for (const path of ['/api/instances/%ZZ', '/api/instances/%', '/api/instances/%C0%AF', '/no/such/%ZZ', '/api/keys/%E0%A4%A']) {
    const res = await cp.api<ErrorBody>('GET', path);
    t.equal(res.status, 400, path);
    t.same(res.body, { error: 'invalid_request', message: 'Invalid request: the URL path is not valid percent-encoded UTF-8.' }, path);
    t.ok(res.headers.get('x-request-id'), `${path}: a request id, like every answer`);
  }
  const fine = await cp.api<ErrorBody>('GET', '/api/instances/inst%5Fx?x=%ZZ');
  t.equal(fine.status, 404, 'good escapes in the path and odd ones in the query are fine');
});

for (const [what, path, opts] of [
  ['a 101-character id', `/api/instances/${ID_101}`, {}],
  ['a path that does not decode', '/api/instances/%ZZ', {}],
  ['an unknown route', '/api/nothing-here', {}],
  ['an over-long id on an unknown route', `/nothing/${ID_129}`, {}],
] as const) {
  t.test(`200 requests with ${what} and no key run into the per-address limit`, async (t) => {
    const cp = await startTestControlPlane({ config: { rateLimit: { anonymousMax: 20, windowMs: 600_000 } } });
    t.teardown(() => cp.close());
    const statuses = new Map<number, number>();
    let last: ApiResponse | undefined;
    for (let i = 0; i < 200; i++) {
      last = await cp.api('GET', path, { ...opts, key: null });
      statuses.set(last.status, (statuses.get(last.status) ?? 0) + 1);
    }
    t.equal(statuses.get(429), 180, `after 20 answers the rest are 429 (${JSON.stringify([...statuses])})`);
    if (last) assertErrorShape(t, last, 'the 429');
    t.equal((last?.body as ErrorBody).error, 'rate_limited');
  });
}

t.test('with a key, unknown routes, undecodable paths and long ids count against the key and are audited', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 12, windowMs: 600_000 } } });
  t.teardown(() => cp.close());
  const { id: keyId, secret } = await cp.createKey(['instances:read']);
  const asKey = { key: secret };
  const answers = [
    await cp.api<ErrorBody>('GET', '/api/nothing-here', asKey),
    await cp.api<ErrorBody>('GET', '/api/instances/%ZZ', asKey),
    await cp.api<ErrorBody>('GET', `/api/instances/${ID_101}`, asKey),
    await cp.api<ErrorBody>('GET', `/api/instances/${ID_129}`, asKey),
  ];
  t.same(
    answers.map((a) => [a.status, a.body.error]),
    [
      [404, 'not_found'],
      [400, 'invalid_request'],
      [404, 'instance_not_found'],
      [400, 'invalid_request'],
    ],
  );
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) statuses.push((await cp.api('GET', '/api/nothing-here', asKey)).status);
  t.same(statuses, [404, 404, 404, 404, 404, 404, 404, 404, 429, 429], 'the key has 12 requests, the first four included');

  const audit = await cp.api<{ items: Array<{ action: string; status: number; error_key: string | null; key_id: string }> }>(
    'GET',
    `/api/audit?key_id=${keyId}&limit=100`,
  );
  const rows = audit.body.items.map((r) => [r.action, r.status, r.error_key]);
  t.ok(rows.some(([a, s, e]) => a === 'route.unknown' && s === 404 && e === 'not_found'), 'the unknown route is audited');
  t.ok(rows.some(([a, s, e]) => a === 'instances.get' && s === 400 && e === 'invalid_request'), 'the undecodable path is audited');
  t.ok(rows.some(([a, s, e]) => a === 'instances.get' && s === 404 && e === 'instance_not_found'), 'the long id is audited');
  t.ok(rows.some(([a, s, e]) => a === 'route.unknown' && s === 429 && e === 'rate_limited'), 'the 429s are audited');
});

t.test('every odd request gets the error shape with a registered key', async (t) => {
  const cp: TestControlPlane = await startTestControlPlane({ config: { rateLimit: { max: 1000, anonymousMax: 1000 }, bodyLimit: 1024 } });
  t.teardown(() => cp.close());
  const cases: Array<[string, () => Promise<ApiResponse>]> = [
    ['unknown route', () => cp.api('GET', '/nope')],
    ['unknown route without a key', () => cp.api('GET', '/nope', { key: null })],
    ['method not routed', () => cp.api('PATCH', '/api/keys')],
    ['OPTIONS', () => cp.api('OPTIONS', '/api/keys')],
    ['bad JSON', () => cp.api('POST', '/api/keys', { rawBody: '{"name":' })],
    ['empty JSON body', () => cp.api('POST', '/api/keys', { rawBody: '' })],
    ['JSON that is not an object', () => cp.api('POST', '/api/keys', { rawBody: '"x"' })],
    ['__proto__ in JSON', () => cp.api('POST', '/api/keys', { rawBody: '{"__proto__":{"x":1},"name":"a","scopes":["admin"]}' })],
    ['oversized body', () => cp.api('POST', '/api/keys', { body: { name: 'x'.repeat(5000), scopes: ['admin'] } })],
    ['text/plain body', () => cp.api('POST', '/api/keys', { rawBody: 'hello', headers: { 'content-type': 'text/plain' } })],
    ['form body', () => cp.api('POST', '/api/keys', { rawBody: 'a=b', headers: { 'content-type': 'application/x-www-form-urlencoded' } })],
    ['undecodable path', () => cp.api('DELETE', '/api/keys/%ZZ')],
    ['over-long id', () => cp.api('DELETE', `/api/keys/${'k'.repeat(300)}`)],
    ['bad query', () => cp.api('GET', '/api/audit?limit=lots')],
    ['unknown query field', () => cp.api('GET', '/api/audit?evil=1')],
    ['made-up key', () => cp.api('GET', '/api/keys', { key: 'vmk_nope' })],
  ];
  for (const [what, run] of cases) assertErrorShape(t, await run(), what);

  const overflow = await rawHttp(cp.url, `GET /api/keys HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  t.equal(overflow.status, 431, 'headers past the limit');
  t.same(overflow.body, { error: 'headers_too_large', message: ERRORS.headers_too_large.message });
  const garbage = await rawHttp(cp.url, 'NOT HTTP AT ALL\r\n\r\n');
  t.equal(garbage.status, 400, 'bytes that are not HTTP');
  t.same(garbage.body, { error: 'invalid_request', message: 'Invalid request: this is not well-formed HTTP.' });
  const longUrl = await rawHttp(cp.url, `GET /api/instances/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.equal(longUrl.status, 431, 'a request line past the limit');
  t.equal((longUrl.body as ErrorBody).error, 'headers_too_large');
});

import t from 'tap';
import type { Test } from 'tap';
import { ROUTES } from '../../control-plane/src/app.ts';
import type { ApiPlugin } from '../../control-plane/src/app.ts';
import { ApiError } from '../../control-plane/src/errors.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

interface ErrorBody {
  error: string;
  message: string;
  [k: string]: unknown;
}

const failing: ApiPlugin = (app) => {
  app.get('/test/boom', { config: { auth: 'none' } }, () => {
    throw new Error('boom: secret internals /etc/shadow');
  });
  app.get('/test/api-error', { config: { auth: 'none' } }, () => {
    throw new ApiError('agent_not_connected', 'The agent of inst_x is not connected.', { instance_id: 'inst_x' });
  });
};

t.test('invalid requests get JSON errors naming the problem', async (t) => {
  const cp = await startTestControlPlane({ routes: [...ROUTES, failing], config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());

  const post = (path: string, opts: Parameters<typeof cp.api>[2]) => cp.api<ErrorBody>('POST', path, opts);
  const expect400 = async (t: Test, name: string, res: Awaited<ReturnType<typeof post>>, mention: RegExp) => {
    t.equal(res.status, 400, `${name}: 400`);
    t.equal(res.body.error, 'invalid_request', `${name}: invalid_request`);
    t.match(res.body.message, mention, `${name}: message says what is wrong`);
  };

  t.test('malformed JSON is a 400', async (t) => {
    await expect400(t, 'malformed', await post('/api/repos', { rawBody: '{"repo": "a/b"' }), /not valid JSON/);
  });
  t.test('an empty JSON body is a 400', async (t) => {
    await expect400(t, 'empty', await post('/api/repos', { rawBody: '' }), /empty/);
  });
  t.test('a field of the wrong type is a 400 naming the field', async (t) => {
    await expect400(t, 'wrong type', await post('/api/repos', { body: { repo: 42 } }), /body\.repo/);
    await expect400(t, 'missing field', await post('/api/repos', { body: {} }), /body\.repo/);
    await expect400(t, 'not an object', await post('/api/repos', { body: ['a/b'] }), /body/);
  });
  t.test('an unknown field is a 400 naming it', async (t) => {
    await expect400(t, 'unknown field', await post('/api/repos', { body: { repo: 'a/b', owner: 'x' } }), /"owner"/);
  });
  t.test('a repository name that is not owner/name is a 400', async (t) => {
    for (const repo of ['justname', 'a/b/c', '-a/b', 'a/..', 'a b/c', `${'o'.repeat(40)}/x`]) {
      await expect400(t, `repo ${repo}`, await post('/api/repos', { body: { repo } }), /body\.repo/);
    }
  });
  t.test('environment names and key scopes are checked', async (t) => {
    const repo = (await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: 'acme/web' } })).body;
    await expect400(t, 'env name', await post(`/api/repos/${repo.id}/environments`, { body: { name: 'Prod Env' } }), /body\.name/);
    await expect400(t, 'scope', await post('/api/keys', { body: { name: 'x', scopes: ['root'] } }), /body\.scopes/);
    await expect400(t, 'no scopes', await post('/api/keys', { body: { name: 'x', scopes: [] } }), /body\.scopes/);
    await expect400(t, 'past expiry',
      await post('/api/keys', { body: { name: 'x', scopes: ['shell'], expires_at: '2001-01-01T00:00:00Z' } }),
      /past/,
    );
    await expect400(t, 'bad query', await cp.api<ErrorBody>('GET', '/api/audit?bogus=1'), /"bogus"/);
  });
  t.test('a body over the limit is a 413', async (t) => {
    const res = await post('/api/repos', { rawBody: JSON.stringify({ repo: 'a/b', pad: 'x'.repeat(1024 * 1024 + 10) }) });
    t.equal(res.status, 413);
    t.equal(res.body.error, 'payload_too_large');
  });
  t.test('a body that is not JSON is a 415', async (t) => {
    const res = await post('/api/repos', { rawBody: 'repo=a/b', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    t.equal(res.status, 415);
    t.equal(res.body.error, 'unsupported_media_type');
  });
  t.test('an unknown route is a JSON 404', async (t) => {
    const res = await cp.api<ErrorBody>('GET', '/api/nothing-here');
    t.equal(res.status, 404);
    t.same(res.body, { error: 'not_found', message: 'No route GET /api/nothing-here.' });
    const noKey = await cp.api<ErrorBody>('DELETE', '/nope?x=1', { key: null });
    t.equal(noKey.status, 404);
    t.equal(noKey.body.message, 'No route DELETE /nope.', 'the query string is not echoed');
  });
  t.test('an unexpected failure is a 500 without internals', async (t) => {
    const res = await cp.api<ErrorBody>('GET', '/test/boom', { key: null });
    t.equal(res.status, 500);
    t.same(res.body, { error: 'internal', message: 'The server failed to handle the request.' });
    t.notOk(JSON.stringify(res.body).includes('boom'));
  });
  t.test('an ApiError keeps its status, key, message and extra fields', async (t) => {
    const res = await cp.api<ErrorBody>('GET', '/test/api-error', { key: null });
    t.equal(res.status, 409);
    t.same(res.body, { instance_id: 'inst_x', error: 'agent_not_connected', message: 'The agent of inst_x is not connected.' });
  });
  t.test('every response carries a request id', async (t) => {
    const a = await cp.api('GET', '/healthz', { key: null });
    const b = await cp.api('GET', '/healthz', { key: null, headers: { 'request-id': 'chosen-by-client' } });
    t.match(a.headers.get('x-request-id'), /^[0-9a-f-]{36}$/);
    t.not(a.headers.get('x-request-id'), b.headers.get('x-request-id'));
    t.not(b.headers.get('x-request-id'), 'chosen-by-client', 'clients cannot choose the id');
  });
});

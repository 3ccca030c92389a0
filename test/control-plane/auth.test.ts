import t from 'tap';
import type { Test } from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { generateApiKeySecret, hashApiKey } from '../../control-plane/src/auth/api-keys.ts';
import { findApiKeyByHash } from '../../control-plane/src/db/api-keys.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';

interface ErrorBody {
  error: string;
  message: string;
}

t.test('API key authentication', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());

  const expect401 = async (t: Test, name: string, headers: Record<string, string>, key: string | null = null) => {
    const res = await cp.api<ErrorBody>('GET', '/api/repos', { key, headers });
    t.equal(res.status, 401, `${name}: 401`);
    t.equal(res.body.error, 'unauthorized', `${name}: error key`);
    t.type(res.body.message, 'string');
    t.match(res.headers.get('www-authenticate') ?? '', /^Bearer/, `${name}: WWW-Authenticate: Bearer`);
    t.same(Object.keys(res.body).sort(), ['error', 'message'], `${name}: nothing but error and message`);
    return res.body;
  };

  t.test('a request without a key is refused with 401', async (t) => {
    const body = await expect401(t, 'no key', {});
    t.match(body.message, /No API key/);
  });

  t.test('a token without the vmk_ prefix is refused, saying keys start with vmk_', async (t) => {
    const body = await expect401(t, 'bad prefix', {}, `sk_${'a'.repeat(43)}`);
    t.equal(body.message, 'The bearer token is not a VMKit API key: those start with vmk_.');
  });

  t.test('another scheme or an empty bearer is refused, naming the header format', async (t) => {
    const cases: [string, string][] = [
      ['basic auth', 'Basic dXNlcjpwYXNz'],
      ['empty bearer', 'Bearer '],
      ['two tokens', 'Bearer vmk_a vmk_b'],
    ];
    for (const [name, authorization] of cases) {
      const body = await expect401(t, name, { authorization });
      t.match(body.message, /must be "Bearer vmk_\.\.\." with one token/, name);
    }
  });

  t.test('a vmk_ token of the wrong shape is refused as an incomplete key, not as a missing vmk_', async (t) => {
    const cases: [string, string][] = [
      ['vmk_bogus', 'vmk_bogus'],
      ['cut short', generateApiKeySecret().slice(0, 30)],
      ['a stray character', `${generateApiKeySecret().slice(0, -1)}-`],
    ];
    for (const [name, token] of cases) {
      const body = await expect401(t, name, {}, token);
      t.match(body.message, /starts with vmk_ but is not a whole VMKit API key/, name);
      t.notMatch(body.message, /not a VMKit API key: those start/, `${name}: not told it lacks vmk_`);
    }
  });

  t.test('a well-formed but unknown key is refused', async (t) => {
    const body = await expect401(t, 'unknown', {}, generateApiKeySecret());
    t.match(body.message, /not valid/);
  });

  t.test('an expired key is refused', async (t) => {
    const { secret } = await cp.createKey(['repos:read'], { expiresAt: Date.now() - 1000 });
    const body = await expect401(t, 'expired', {}, secret);
    t.match(body.message, /expired/);
  });

  t.test('a key that expires later works until then', async (t) => {
    const { secret } = await cp.createKey(['repos:read'], { expiresAt: Date.now() + 60_000 });
    const res = await cp.api('GET', '/api/repos', { key: secret });
    t.equal(res.status, 200);
  });

  t.test('a revoked key is refused', async (t) => {
    const { id, secret } = await cp.createKey(['repos:read']);
    t.equal((await cp.api('GET', '/api/repos', { key: secret })).status, 200, 'works before revocation');
    const revoke = await cp.api<{ revoked_at: string | null }>('DELETE', `/api/keys/${id}`);
    t.equal(revoke.status, 200);
    t.type(revoke.body.revoked_at, 'string');
    const body = await expect401(t, 'revoked', {}, secret);
    t.match(body.message, /revoked/);
  });

  t.test('a key without the scope gets 403 naming the scope', async (t) => {
    const { id, secret } = await cp.createKey(['repos:read']);
    const res = await cp.api<ErrorBody>('POST', '/api/repos', { key: secret, body: { repo: 'acme/web' } });
    t.equal(res.status, 403);
    t.equal(res.body.error, 'forbidden');
    t.equal(res.body.message, `The API key ${id} lacks the scope repos:write.`);
    const admin = await cp.api<ErrorBody>('GET', '/api/keys', { key: secret });
    t.equal(admin.status, 403);
    t.match(admin.body.message, /lacks the scope admin/);
  });

  t.test('a key with the scope is let through', async (t) => {
    const { secret } = await cp.createKey(['repos:write']);
    const res = await cp.api('POST', '/api/repos', { key: secret, body: { repo: 'acme/web' } });
    t.equal(res.status, 201);
  });

  t.test('admin implies every scope', async (t) => {
    for (const [method, path] of [
      ['GET', '/api/repos'],
      ['GET', '/api/instances'],
      ['GET', '/api/keys'],
      ['GET', '/api/audit'],
    ] as const) {
      t.equal((await cp.api(method, path)).status, 200, `${method} ${path}`);
    }
  });

  t.test('the scheme name is case-insensitive', async (t) => {
    const res = await cp.api('GET', '/api/repos', { key: null, headers: { authorization: `bearer ${cp.adminKey}` } });
    t.equal(res.status, 200);
  });

  t.test('health and OpenAPI need no key', async (t) => {
    t.equal((await cp.api('GET', '/healthz', { key: null })).status, 200);
    t.equal((await cp.api('GET', '/api/openapi.json', { key: null })).status, 200);
  });

  t.test('keys are vmk_ + 43 base62 characters and only their hash is stored', async (t) => {
    const { id, secret } = await cp.createKey(['shell']);
    t.match(secret, /^vmk_[0-9A-Za-z]{43}$/);
    const row = await findApiKeyByHash(cp.ctx.db, hashApiKey(secret));
    t.equal(row?.id, id);
    t.equal(row?.hash, hashApiKey(secret));
    t.not(row?.hash, secret);
    const dump = JSON.stringify(await rawRows(cp.ctx.db, sql`select * from api_keys`));
    t.notOk(dump.includes(secret), 'the secret is nowhere in the table');
    const secrets = new Set(Array.from({ length: 200 }, () => generateApiKeySecret()));
    t.equal(secrets.size, 200, 'secrets do not repeat');
  });

  t.test('last_used_at is recorded', async (t) => {
    const { id, secret } = await cp.createKey(['repos:read']);
    await cp.api('GET', '/api/repos', { key: secret });
    const keys = await cp.api<{ items: { id: string; last_used_at: string | null }[] }>('GET', '/api/keys');
    const k = keys.body.items.find((x) => x.id === id);
    t.type(k?.last_used_at, 'string');
  });
});

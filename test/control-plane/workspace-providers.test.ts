import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { makeConfig } from '../../control-plane/src/config.ts';
import { DB_FILE_NAME } from '../../control-plane/src/db/index.ts';
import { createLogger } from '../../control-plane/src/logger.ts';
import { startControlPlane } from '../../control-plane/src/server.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { FakeHetzner } from '../helpers/fake-hetzner.ts';
import { FakeCloudflare } from '../helpers/fake-cloudflare.ts';
import { dropTestDatabaseFor, selectedTestDatabase, testDatabaseFor } from '../helpers/postgres.ts';
import { rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';

const TOKEN = 'hcloud_test_token_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN';
const TOKEN_2 = 'hcloud_second_token_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH';
const CF_TOKEN = 'cf-test-token-0123456789abcdefghijklmnopqr';
const ZONE_ID = '023e105f4ecef8ad9ca31a8372d0c353';

interface View {
  kind: string;
  provider: string | null;
  source: string;
  settings: Record<string, unknown>;
  secret_fingerprint: string | null;
  secret_set_at: string | null;
  updated_at: string | null;
}
interface ErrorBody {
  error: string;
  message: string;
}

async function setup(t: Test): Promise<{ cp: TestControlPlane; hetzner: FakeHetzner }> {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const hetzner = await FakeHetzner.start({ token: TOKEN });
  t.teardown(() => hetzner.close());
  return { cp, hetzner };
}

/**
 * Everything the server's database holds: every byte of the SQLite files (the main file
 * and its write-ahead log), or on PostgreSQL every row of every table as JSON text
 * (bytea columns as hex, so `hex` is searched too).
 */
async function databaseText(cp: TestControlPlane): Promise<string> {
  const db = cp.ctx.db;
  if (db.dialect === 'postgres') {
    const tables = await rawRows<{ name: string }>(db, sql`select table_name as name from information_schema.tables where table_schema = current_schema()`);
    let text = '';
    for (const { name } of tables) {
      for (const row of await rawRows<{ j: string }>(db, sql`select row_to_json(t)::text as j from ${sql.identifier(name)} t`)) text += row.j;
    }
    return text;
  }
  const file = join(cp.dataDir, DB_FILE_NAME);
  let text = readFileSync(file).toString('latin1');
  try {
    text += readFileSync(`${file}-wal`).toString('latin1');
  } catch {
    // no WAL file right now
  }
  return text;
}

t.test('a Hetzner token is checked, stored sealed, and never shown again', async (t) => {
  const { cp, hetzner } = await setup(t);
  const put = await cp.api<View>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, location: 'nbg1', api_url: hetzner.url } });
  t.equal(put.status, 200, JSON.stringify(put.body));
  t.match(put.body, { kind: 'compute', provider: 'hetzner', source: 'workspace', settings: { location: 'nbg1', server_type: 'cx22', image: 'ubuntu-24.04', api_url: hetzner.url } });
  t.match(put.body.secret_fingerprint, /^sha256:[0-9a-f]{16}$/);
  t.ok(put.body.secret_set_at !== null && Date.parse(put.body.secret_set_at) > 0, 'when the secret was set');
  t.ok(
    hetzner.requests.some((r) => r.method === 'GET' && r.path.startsWith('/v1/servers') && r.status === 200),
    'the token was tried against Hetzner before it was saved',
  );

  const get = await cp.api<View>('GET', '/api/workspace/compute');
  t.same(get.body, put.body, 'GET answers what PUT did');
  const all = await cp.api<Record<string, View>>('GET', '/api/workspace/providers');
  t.same(all.body.compute, put.body);
  for (const text of [JSON.stringify(put.body), JSON.stringify(get.body), JSON.stringify(all.body)]) t.notMatch(text, TOKEN, 'the token is never in an answer');

  const [row] = await rawRows<{ secret_sealed: string; settings: unknown }>(cp.ctx.db, sql`select secret_sealed, settings from workspace_providers where kind = 'compute'`);
  t.match(row?.secret_sealed, /^v1\./, 'the row holds a SecretBox envelope');
  t.notMatch(`${row?.secret_sealed} ${JSON.stringify(row?.settings)}`, TOKEN);
  const stored = await databaseText(cp);
  t.ok(stored.includes('hetzner'), 'the dump holds the settings (it reads the real data)');
  t.notOk(stored.includes(TOKEN), 'the token is nowhere in the database');
  t.notOk(stored.includes(Buffer.from(TOKEN).toString('base64')), 'nor base64-encoded');
  t.notOk(stored.includes(Buffer.from(TOKEN).toString('hex')), 'nor hex-encoded');
});

t.test('changing settings without the token keeps the stored one; a new token changes the fingerprint', async (t) => {
  const { cp, hetzner } = await setup(t);
  const first = await cp.api<View>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } });
  t.equal(first.status, 200);
  const moved = await cp.api<View>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', location: 'hel1', server_type: 'cpx21', api_url: hetzner.url } });
  t.equal(moved.status, 200, JSON.stringify(moved.body));
  t.match(moved.body.settings, { location: 'hel1', server_type: 'cpx21' });
  t.equal(moved.body.secret_fingerprint, first.body.secret_fingerprint, 'same secret');
  t.equal(moved.body.secret_set_at, first.body.secret_set_at, 'set at the same time as before');
  t.equal(hetzner.requests.filter((r) => r.status === 200).length, 2, 'the kept token was checked again');

  const other = await FakeHetzner.start({ token: TOKEN_2 });
  t.teardown(() => other.close());
  const changed = await cp.api<View>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN_2, api_url: other.url } });
  t.equal(changed.status, 200);
  t.not(changed.body.secret_fingerprint, first.body.secret_fingerprint, 'another token, another fingerprint');
});

t.test('a token Hetzner refuses is not saved, and the settings stay as they were', async (t) => {
  const { cp, hetzner } = await setup(t);
  const good = await cp.api<View>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } });
  const bad = await cp.api<ErrorBody>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: 'hcloud_wrong_token_000000000000', location: 'hel1', api_url: hetzner.url } });
  t.equal(bad.status, 422);
  t.equal(bad.body.error, 'provider_credentials_refused');
  t.match(bad.body.message, /unauthorized/);
  t.match(bad.body.message, /Nothing was saved/);
  t.notMatch(bad.body.message, 'hcloud_wrong_token', 'the refused token is not echoed');
  t.same((await cp.api<View>('GET', '/api/workspace/compute')).body, good.body, 'unchanged');
});

t.test('Hetzner unreachable: the settings are not saved and the answer says the check could not run', async (t) => {
  const { cp, hetzner } = await setup(t);
  const url = hetzner.url;
  await hetzner.close();
  const res = await cp.api<ErrorBody>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: url } });
  t.equal(res.status, 502);
  t.equal(res.body.error, 'provider_unavailable');
  t.match(res.body.message, /Could not check the hetzner credentials/);
  t.equal((await cp.api<View>('GET', '/api/workspace/compute')).body.source, 'default');
});

t.test('bad settings are refused with a clear error and change nothing', async (t) => {
  const { cp, hetzner } = await setup(t);
  const cases: [string, unknown, RegExp][] = [
    ['compute', { provider: 'hetzner', api_url: hetzner.url }, /body\.token is required/],
    ['compute', { provider: 'hetzner', token: TOKEN, colour: 'red' }, /Unrecognized key: "colour"/],
    ['compute', { provider: 'aws', token: TOKEN }, /provider/],
    ['compute', { provider: 'hetzner', token: 'has spaces in it', api_url: hetzner.url }, /token/],
    ['compute', { provider: 'hetzner', token: TOKEN, api_url: 'ftp://example.com' }, /api_url/],
    ['dns', { provider: 'cloudflare', zone_id: ZONE_ID, zone: 'example.com' }, /body\.token is required/],
    ['dns', { provider: 'local', zone: 'Not A Zone' }, /zone/],
    ['github', { provider: 'github' }, /app_id with private_key .* or token/],
    ['github', { provider: 'github', token: 'ghp_plaintoken1234', app_id: 1 }, /not both/],
    ['github', { provider: 'github', private_key: 'x'.repeat(80) }, /app_id is required/],
    ['github', { provider: 'github', app_id: 12, private_key: `-----BEGIN RSA PRIVATE KEY-----\n${'A'.repeat(80)}\n-----END RSA PRIVATE KEY-----\n` }, /not a PEM private key/],
  ];
  for (const [kind, body, message] of cases) {
    const res = await cp.api<ErrorBody>('PUT', `/api/workspace/${kind}`, { body });
    t.equal(res.status, 400, `${kind} ${JSON.stringify(body)}`);
    t.equal(res.body.error, 'invalid_request');
    t.match(res.body.message, message);
  }
  t.same(await rawRows(cp.ctx.db, sql`select count(*) as n from workspace_providers`), [{ n: 0 }], 'no row was written');
  t.equal(hetzner.requests.length, 0, 'nothing was sent to Hetzner');
});

t.test('switching provider needs the new provider’s secret', async (t) => {
  const { cp } = await setup(t);
  const cf = await FakeCloudflare.start({ token: CF_TOKEN, zoneId: ZONE_ID, zoneName: 'example.com' });
  t.teardown(() => cf.close());
  t.equal((await cp.api('PUT', '/api/workspace/dns', { body: { provider: 'cloudflare', token: CF_TOKEN, zone_id: ZONE_ID, zone: 'example.com', api_url: cf.url } })).status, 200);
  const toGithubKind = await cp.api<ErrorBody>('PUT', '/api/workspace/compute', { body: { provider: 'hetzner' } });
  t.equal(toGithubKind.status, 400, 'the DNS token is not a compute token');
  const local = await cp.api<View>('PUT', '/api/workspace/dns', { body: { provider: 'local', zone: 'apps.internal' } });
  t.match(local.body, { provider: 'local', settings: { zone: 'apps.internal' }, secret_fingerprint: null, secret_set_at: null });
  const back = await cp.api<ErrorBody>('PUT', '/api/workspace/dns', { body: { provider: 'cloudflare', zone_id: ZONE_ID, zone: 'example.com', api_url: cf.url } });
  t.equal(back.status, 400, 'the forgotten Cloudflare token is not brought back');
  t.match(back.body.message, /body\.token is required/);
});

t.test('a Cloudflare token is checked against its zone', async (t) => {
  const { cp } = await setup(t);
  const cf = await FakeCloudflare.start({ token: CF_TOKEN, zoneId: ZONE_ID, zoneName: 'example.com' });
  t.teardown(() => cf.close());
  const wrongZone = await cp.api<ErrorBody>('PUT', '/api/workspace/dns', { body: { provider: 'cloudflare', token: CF_TOKEN, zone_id: 'ffff', zone: 'example.com', api_url: cf.url } });
  t.equal(wrongZone.status, 422);
  t.match(wrongZone.body, { error: 'provider_credentials_refused', message: /7003/ });
  const wrongToken = await cp.api<ErrorBody>('PUT', '/api/workspace/dns', { body: { provider: 'cloudflare', token: 'not-the-token-000', zone_id: ZONE_ID, zone: 'example.com', api_url: cf.url } });
  t.match(wrongToken.body, { error: 'provider_credentials_refused', message: /Zone → DNS → Edit/ });
  const ok = await cp.api<View>('PUT', '/api/workspace/dns', { body: { provider: 'cloudflare', token: CF_TOKEN, zone_id: ZONE_ID, zone: 'example.com', api_url: cf.url } });
  t.equal(ok.status, 200);
  t.same(ok.body.settings, { zone_id: ZONE_ID, zone: 'example.com', proxied: false, api_url: cf.url });
  t.notMatch(JSON.stringify(ok.body), CF_TOKEN);
  t.equal(cf.records().length, 0, 'checking wrote nothing');
});

t.test('only an admin key may read or change provider settings', async (t) => {
  const { cp, hetzner } = await setup(t);
  const { secret } = await cp.createKey(['repos:read', 'repos:write', 'instances:write', 'deploys:read', 'deploys:write']);
  for (const [method, path] of [['PUT', '/api/workspace/compute'], ['DELETE', '/api/workspace/compute'], ['GET', '/api/workspace/compute'], ['GET', '/api/workspace/providers']] as const) {
    const res = await cp.api<ErrorBody>(method, path, { key: secret, ...(method === 'PUT' && { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } }) });
    t.equal(res.status, 403, `${method} ${path}`);
    t.equal(res.body.error, 'forbidden');
  }
  t.equal(hetzner.requests.length, 0, 'nothing reached Hetzner');
  t.equal((await cp.api<View>('GET', '/api/workspace/compute')).body.source, 'default', 'nothing was set');
});

t.test('every change is audited, and no secret reaches the audit trail', async (t) => {
  const { cp, hetzner } = await setup(t);
  await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } });
  await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: 'hcloud_refused_token_00000000000000', api_url: hetzner.url } });
  await cp.api('DELETE', '/api/workspace/compute');
  const rows = await rawRows(cp.ctx.db, sql`select action, status, error_key from audit_log where action like 'workspace.%' order by at, id`);
  t.same(rows, [
    { action: 'workspace.compute.set', status: 200, error_key: null },
    { action: 'workspace.compute.set', status: 422, error_key: 'provider_credentials_refused' },
    { action: 'workspace.compute.delete', status: 200, error_key: null },
  ]);
  const dump = JSON.stringify(await rawRows(cp.ctx.db, sql`select * from audit_log`));
  t.notMatch(dump, TOKEN);
  t.notMatch(dump, 'hcloud_refused_token');
});

t.test('DELETE returns a kind to the defaults', async (t) => {
  const { cp, hetzner } = await setup(t);
  await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } });
  const del = await cp.api<View>('DELETE', '/api/workspace/compute');
  t.equal(del.status, 200);
  t.same(del.body, { kind: 'compute', provider: 'local', source: 'default', settings: {}, secret_fingerprint: null, secret_set_at: null, updated_at: null }, 'the first workspace falls back to the local sandbox');
  t.equal((await cp.api('DELETE', '/api/workspace/compute')).status, 200, 'deleting again is fine');
  t.same(await rawRows(cp.ctx.db, sql`select count(*) as n from workspace_providers`), [{ n: 0 }]);
});

t.test('one workspace never sees another’s settings', async (t) => {
  const { cp, hetzner } = await setup(t);
  await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } });
  await cp.api('PUT', '/api/workspace/dns', { body: { provider: 'local', zone: 'first.internal' } });
  const other = await cp.createWorkspace('other');
  const seen = await cp.api<Record<string, View>>('GET', '/api/workspace/providers', { key: other.adminKey });
  t.equal(seen.status, 200);
  t.same(
    { compute: seen.body.compute?.provider, dns: seen.body.dns?.settings, github: seen.body.github?.provider, sources: [seen.body.compute?.source, seen.body.dns?.source, seen.body.github?.source] },
    { compute: null, dns: { zone: 'vmkit.internal' }, github: null, sources: ['default', 'default', 'default'] },
    'a second workspace has no compute and no GitHub until it sets them',
  );
  await cp.api('DELETE', '/api/workspace/compute', { key: other.adminKey });
  t.equal((await cp.api<View>('GET', '/api/workspace/compute')).body.provider, 'hetzner', "the other workspace's DELETE did not touch this one");

  // A sealed row copied into the other workspace does not open there: the workspace is in the associated data.
  await rawExec(
    cp.ctx.db,
    sql`insert into workspace_providers (id, workspace_id, kind, provider, settings, secret_sealed, secret_fingerprint, secret_set_at, created_at, updated_at)
        select 'wsp_copied', ${other.workspaceId}, kind, provider, settings, secret_sealed, secret_fingerprint, secret_set_at, created_at, updated_at
        from workspace_providers where workspace_id = ${cp.workspaceId} and kind = 'compute'`,
  );
  const copied = await cp.api<ErrorBody>('PUT', '/api/workspace/compute', { key: other.adminKey, body: { provider: 'hetzner', location: 'hel1', api_url: hetzner.url } });
  t.equal(copied.status, 409);
  t.equal(copied.body.error, 'provider_secret_unreadable');
  t.match(copied.body.message, /integrity check/);
});

t.test('the provider routes are in the OpenAPI document', async (t) => {
  const { cp } = await setup(t);
  const doc = (await cp.api<{ paths: Record<string, Record<string, unknown>> }>('GET', '/api/openapi.json')).body;
  for (const kind of ['compute', 'dns', 'github']) {
    t.same(Object.keys(doc.paths[`/api/workspace/${kind}`] ?? {}).sort(), ['delete', 'get', 'put'], kind);
  }
  t.ok(doc.paths['/api/workspace/providers']?.get, 'GET /api/workspace/providers');
  t.ok(doc.paths['/api/dns-records']?.get, 'GET /api/dns-records');
  t.match(JSON.stringify(doc.paths['/api/workspace/compute']?.put), /hetzner/);
});

t.test('no secret reaches the logs, even at trace level', async (t) => {
  const hetzner = await FakeHetzner.start({ token: TOKEN });
  t.teardown(() => hetzner.close());
  const lines: string[] = [];
  const logger = createLogger('trace', { write: (line: string) => void lines.push(line) });
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-cp-log-'));
  const databaseUrl = selectedTestDatabase() === 'postgres' ? (await testDatabaseFor(dataDir)).url : undefined;
  const running = await startControlPlane(makeConfig({ host: '127.0.0.1', port: 0, dataDir, databaseUrl, logLevel: 'trace' }), { logger });
  t.teardown(async () => {
    await running.close();
    rmSync(dataDir, { recursive: true, force: true });
    await dropTestDatabaseFor(dataDir);
  });
  const adminKey = running.bootstrap?.adminKey ?? '';
  const put = (body: unknown) =>
    fetch(`${running.url}/api/workspace/compute`, { method: 'PUT', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  t.equal((await put({ provider: 'hetzner', token: TOKEN, api_url: hetzner.url })).status, 200);
  t.equal((await put({ provider: 'hetzner', token: 'hcloud_refused_token_00000000000000', api_url: hetzner.url })).status, 422);
  t.ok(lines.some((l) => l.includes('/api/workspace/compute')), 'the requests were logged');
  const all = lines.join('');
  t.notMatch(all, TOKEN);
  t.notMatch(all, 'hcloud_refused_token');
  t.notMatch(all, adminKey);
});

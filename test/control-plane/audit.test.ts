import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';

interface AuditItem {
  id: string;
  at: string;
  key_id: string | null;
  channel: string;
  tool: string | null;
  action: string;
  method: string | null;
  route: string | null;
  target_ids: Record<string, string> | null;
  status: number;
  error_key: string | null;
  request_id: string | null;
  client_address: string | null;
}
interface AuditPage {
  items: AuditItem[];
  next_cursor: string | null;
}

t.test('audit trail', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());

  const audit = async (query = '') => (await cp.api<AuditPage>('GET', `/api/audit${query}`)).body;

  t.test('each outcome of an authenticated request writes one row', async (t) => {
    const reader = await cp.createKey(['repos:read'], { name: 'reader' });
    const ok = await cp.api<{ items: unknown[] }>('GET', '/api/repos', { key: reader.secret });
    const missing = await cp.api('GET', '/api/repos/repo_nope', { key: reader.secret });
    const forbidden = await cp.api('POST', '/api/repos', { key: reader.secret, body: { repo: 'acme/web' } });
    const invalid = await cp.api('POST', '/api/repos', { body: { repo: 42 } });
    t.same([ok.status, missing.status, forbidden.status, invalid.status], [200, 404, 403, 400]);

    const rows = (await audit(`?key_id=${reader.id}`)).items;
    t.equal(rows.length, 3, 'three requests of the reader, three rows');
    const [forbiddenRow, missingRow, okRow] = rows; // newest first
    t.match(okRow, { action: 'repos.list', status: 200, error_key: null, channel: 'rest', method: 'GET', route: '/api/repos' });
    t.match(missingRow, { action: 'repos.get', status: 404, error_key: 'repo_not_found', target_ids: { id: 'repo_nope' } });
    t.match(forbiddenRow, { action: 'repos.create', status: 403, error_key: 'forbidden' });
    t.equal(okRow?.request_id, ok.headers.get('x-request-id'), 'the row carries the request id');
    t.equal(okRow?.client_address, '127.0.0.1');

    const invalidRow = (await audit('?action=repos.create')).items.find((r) => r.status === 400);
    t.match(invalidRow, { key_id: cp.running.bootstrap?.keyId, error_key: 'invalid_request' });
  });

  t.test('a revoked or expired key is still traced to its workspace', async (t) => {
    const { id, secret } = await cp.createKey(['repos:read'], { expiresAt: Date.now() - 1 });
    t.equal((await cp.api('GET', '/api/repos', { key: secret })).status, 401);
    const rows = (await audit(`?key_id=${id}`)).items;
    t.equal(rows.length, 1);
    t.match(rows[0], { status: 401, error_key: 'unauthorized' });
  });

  t.test('unauthenticated requests with unknown keys write no row', async (t) => {
    const before = (await audit('?limit=500')).items.length;
    await cp.api('GET', '/api/repos', { key: null });
    // The audit GET itself adds one row.
    t.equal((await audit('?limit=500')).items.length, before + 1);
  });

  t.test('MCP calls are recorded with channel and tool; bad tool names are dropped', async (t) => {
    await cp.api('GET', '/api/instances', { headers: { 'x-vmkit-channel': 'mcp', 'x-vmkit-tool': 'list_instances' } });
    await cp.api('GET', '/api/instances', { headers: { 'x-vmkit-channel': 'mcp', 'x-vmkit-tool': 'DROP TABLE;' } });
    await cp.app.inject({
      method: 'GET',
      url: '/api/instances',
      headers: { authorization: `Bearer ${cp.adminKey}`, 'x-vmkit-channel': 'mcp', 'x-vmkit-tool': 'harden_vm' },
    });
    const rows = (await audit('?action=instances.list&limit=3')).items;
    t.same(
      rows.map((r) => [r.channel, r.tool]),
      [
        ['mcp', 'harden_vm'],
        ['mcp', null],
        ['mcp', 'list_instances'],
      ],
    );
  });

  t.test('no secrets or bodies end up in the audit log', async (t) => {
    const created = await cp.api<{ secret: string }>('POST', '/api/keys', { body: { name: 'ci', scopes: ['repos:read'] } });
    t.equal(created.status, 201);
    const dump = JSON.stringify(await rawRows(cp.ctx.db, sql`select * from audit_log`));
    t.notOk(dump.includes(created.body.secret), 'the new secret is not in the log');
    t.notOk(dump.includes(cp.adminKey), 'the caller key is not in the log');
    t.notOk(dump.includes('"ci"'), 'the request body is not in the log');
  });

  t.test('filters and cursor pagination walk the whole log once', async (t) => {
    const key = await cp.createKey(['instances:read']);
    for (let i = 0; i < 7; i++) await cp.api('GET', '/api/instances', { key: key.secret });
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: AuditPage = await audit(`?key_id=${key.id}&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.items.map((r) => r.id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor && pages < 10);
    t.equal(seen.length, 7);
    t.equal(new Set(seen).size, 7, 'no row twice');
    t.same([...seen].sort().reverse(), seen, 'newest first');
    t.equal(pages, 3);

    const future = new Date(Date.now() + 60_000).toISOString();
    t.equal((await audit(`?since=${encodeURIComponent(future)}`)).items.length, 0, 'since in the future finds nothing');
    t.ok((await audit(`?since=${Date.now() - 60_000}&key_id=${key.id}`)).items.length === 7, 'since as epoch ms');
    t.equal((await cp.api('GET', '/api/audit?since=yesterday')).status, 400, 'a bad since is a 400');
    t.equal((await cp.api('GET', '/api/audit?limit=0')).status, 400, 'a bad limit is a 400');
  });

  t.test('reading the audit log needs admin', async (t) => {
    const { secret } = await cp.createKey(['repos:read', 'instances:read', 'deploys:read']);
    t.equal((await cp.api('GET', '/api/audit', { key: secret })).status, 403);
  });
});

t.test('behind a trusted proxy the audit records the forwarded client address', async (t) => {
  const cp = await startTestControlPlane({ config: { trustProxy: '127.0.0.1' } });
  t.teardown(() => cp.close());
  await cp.api('GET', '/api/repos', { headers: { 'x-forwarded-for': '198.51.100.7' } });
  const rows = (await cp.api<AuditPage>('GET', '/api/audit?action=repos.list')).body.items;
  t.equal(rows[0]?.client_address, '198.51.100.7');
});

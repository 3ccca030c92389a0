// The dashboard's server side at HTTP level: static assets, sign-in cookie, CSRF,
// sessions that end with their key, sign-out, the live feed and the audit trail.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { serveDashboard, signIn } from '../helpers/dashboard.ts';
import { enrollRealAgent } from '../helpers/real-agent.ts';
import type { HttpSession } from '../helpers/dashboard.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';

interface ErrorBody {
  error: string;
  message: string;
}
interface AuditBody {
  items: { action: string; channel: string; key_id: string | null; status: number; error_key: string | null; at: string }[];
  next_cursor: string | null;
}

let clock = Date.now();
const cp = await startTestControlPlane({ now: () => clock, config: { rateLimit: { max: 10_000, anonymousMax: 10_000 } } });
t.teardown(() => cp.close());
const manifest = await serveDashboard(cp);

/** A request with the session cookie (and the CSRF header when asked). */
function withSession(s: HttpSession, method: string, path: string, opts: { body?: unknown; csrf?: string | null } = {}) {
  const headers: Record<string, string> = { cookie: s.cookie };
  const csrf = opts.csrf === undefined ? s.csrf : opts.csrf;
  if (csrf !== null) headers['x-vmkit-csrf'] = csrf;
  return cp.api(method, path, { key: null, headers, ...(opts.body === undefined ? {} : { body: opts.body }) });
}

t.test('GET / serves the built page with a strict CSP, and its hashed assets for good', async (t) => {
  const page = await fetch(`${cp.url}/`);
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /^text\/html/);
  t.equal(page.headers.get('cache-control'), 'no-cache', 'the page itself is revalidated');
  t.match(page.headers.get('content-security-policy'), /default-src 'self'.*script-src 'self'/);
  t.match(page.headers.get('content-security-policy'), /frame-ancestors 'none'/);
  const html = await page.text();
  t.ok(html.includes(`/assets/${manifest.script}`), 'names the hashed entry script');
  t.match(manifest.script, /^main-[A-Z0-9]{8}\.js$/, 'content-hashed file name');
  t.ok(html.includes(manifest.version), 'carries the build version');

  const script = await fetch(`${cp.url}/assets/${manifest.script}`);
  t.equal(script.status, 200);
  t.match(script.headers.get('content-type'), /javascript/);
  t.match(script.headers.get('cache-control'), /immutable/);
  t.ok((await script.text()).length > 1000, 'the bundle');
  const style = manifest.styles[0] ?? '';
  t.equal((await fetch(`${cp.url}/assets/${style}`)).status, 200, 'and its styles');

  const missing = await fetch(`${cp.url}/assets/main-NOPE.js`);
  t.equal(missing.status, 404);
  const escape = await fetch(`${cp.url}/assets/..%2f..%2fpackage.json`);
  t.not(escape.status, 200, 'nothing outside the assets folder');
});

t.test('without a build, GET / says in words how to build it', async (t) => {
  const other = await startTestControlPlane();
  t.teardown(() => other.close());
  const empty = mkdtempSync(join(tmpdir(), 'vmkit-no-dashboard-'));
  t.teardown(() => rmSync(empty, { recursive: true, force: true }));
  other.ctx.dashboardDir = empty;
  const res = await fetch(`${other.url}/`);
  t.equal(res.status, 503);
  t.match(await res.text(), /not built.*npm run build/s);
});

t.test('sign-in refuses what is not a live key, in words, and sets no cookie', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /Paste an API key/],
    ['hello', /not a VMKit API key/],
    ['vmk_short', /not a whole VMKit API key/],
    [`vmk_${'A'.repeat(43)}`, /not valid/],
  ];
  for (const [key, message] of cases) {
    const res = await cp.api<ErrorBody>('POST', '/api/session', { key: null, body: { key } });
    t.equal(res.status, 401, key);
    t.equal(res.body.error, 'unauthorized');
    t.match(res.body.message, message);
    t.equal(res.headers.get('set-cookie'), null);
  }
  const revoked = await cp.createKey(['instances:read']);
  await cp.api('DELETE', `/api/keys/${revoked.id}`);
  const res = await cp.api<ErrorBody>('POST', '/api/session', { key: null, body: { key: revoked.secret } });
  t.equal(res.status, 401);
  t.equal(res.body.message, 'The API key has been revoked.');
  const audit = await cp.api<AuditBody>('GET', `/api/audit?action=session.create&key_id=${revoked.id}`);
  t.equal(audit.body.items[0]?.status, 401, 'a refused sign-in of a known key is audited');
  t.equal(audit.body.items[0]?.channel, 'dashboard');
});

t.test('sign-in sets an HttpOnly, SameSite=Strict session cookie that is not the key, stored hashed', async (t) => {
  const s = await signIn(cp, cp.adminKey);
  t.match(s.setCookie, /^vmk_session=vmks_[A-Za-z0-9_-]{43}; /);
  t.match(s.setCookie, /; HttpOnly/);
  t.match(s.setCookie, /; SameSite=Strict/);
  t.match(s.setCookie, /; Path=\//);
  t.match(s.setCookie, /; Max-Age=43200/, 'twelve hours');
  t.notMatch(s.setCookie, /Secure/, 'no Secure flag over plain http');
  t.notOk(s.setCookie.includes(cp.adminKey), 'the cookie does not carry the key');
  const secret = s.cookie.split('=')[1] ?? '';
  const rows = await rawRows(cp.ctx.db, sql`select * from dashboard_sessions`);
  t.ok(rows.length > 0);
  t.notOk(JSON.stringify(rows).includes(secret), 'the session secret is not stored, only its hash');

  const who = await withSession(s, 'GET', '/api/session');
  t.equal(who.status, 200);
  const body = who.body as { key: { scopes: string[] }; session: { csrf_token: string } };
  t.same(body.key.scopes, ['admin'], 'the session carries the key scopes');
  t.equal(body.session.csrf_token, s.csrf);

  const listed = await withSession(s, 'GET', '/api/instances');
  t.equal(listed.status, 200, 'the cookie works on the REST routes');
  const audit = await cp.api<AuditBody>('GET', '/api/audit?action=instances.list&channel=dashboard');
  t.ok(audit.body.items.length >= 1, 'requests made with the cookie are audited with channel dashboard');
  const signins = await cp.api<AuditBody>('GET', '/api/audit?action=session.create&channel=dashboard');
  t.ok(signins.body.items.some((a) => a.status === 201), 'and so is the sign-in');
});

t.test('the cookie is Secure when the dashboard is reached over TLS', async (t) => {
  const tls = await startTestControlPlane({ config: { publicUrl: 'https://vmkit.example.test' } });
  t.teardown(() => tls.close());
  const s = await signIn(tls, tls.adminKey);
  t.match(s.setCookie, /; Secure/);
  const proxied = await startTestControlPlane({ config: { trustProxy: true } });
  t.teardown(() => proxied.close());
  const res = await proxied.api('POST', '/api/session', { key: null, body: { key: proxied.adminKey }, headers: { 'x-forwarded-proto': 'https' } });
  t.match(res.headers.get('set-cookie'), /; Secure/, 'also behind a trusted TLS proxy');
});

t.test('a write made with the cookie needs the CSRF token; one without it changes nothing', async (t) => {
  const s = await signIn(cp, cp.adminKey);
  const name = uniqueInstanceName('csrf');
  const none = await withSession(s, 'POST', '/api/instances', { body: { name, provider: 'manual' }, csrf: null });
  t.equal(none.status, 403);
  t.equal((none.body as ErrorBody).error, 'csrf_token_invalid');
  t.match((none.body as ErrorBody).message, /x-vmkit-csrf/);
  const wrong = await withSession(s, 'POST', '/api/instances', { body: { name, provider: 'manual' }, csrf: `${s.csrf.slice(0, -2)}xx` });
  t.equal(wrong.status, 403);
  const other = await signIn(cp, cp.adminKey);
  const crossed = await withSession(s, 'POST', '/api/instances', { body: { name, provider: 'manual' }, csrf: other.csrf });
  t.equal(crossed.status, 403, "another session's token does not do");
  const list = await cp.api<{ items: { name: string }[] }>('GET', '/api/instances');
  t.notOk(list.body.items.some((i) => i.name === name), 'nothing was created');
  const ok = await withSession(s, 'POST', '/api/instances', { body: { name, provider: 'manual' } });
  t.equal(ok.status, 201, 'with the token it works');
  const audit = await cp.api<AuditBody>('GET', '/api/audit?action=instances.create&channel=dashboard');
  t.ok(audit.body.items.some((a) => a.error_key === 'csrf_token_invalid'), 'the refusals are audited');
  const bearer = await cp.api('POST', '/api/instances', { body: { name: uniqueInstanceName('bearer'), provider: 'manual' } });
  t.equal(bearer.status, 201, 'a bearer key needs no CSRF token');
});

t.test("the session has its key's scopes, no more", async (t) => {
  const reader = await cp.createKey(['instances:read']);
  const s = await signIn(cp, reader.secret);
  t.equal((await withSession(s, 'GET', '/api/instances')).status, 200);
  const keys = await withSession(s, 'POST', '/api/keys', { body: { name: 'x', scopes: ['admin'] } });
  t.equal(keys.status, 403);
  t.equal((keys.body as ErrorBody).error, 'forbidden');
});

t.test('revoking the key ends its sessions on the next request', async (t) => {
  const key = await cp.createKey(['admin']);
  const s = await signIn(cp, key.secret);
  t.equal((await withSession(s, 'GET', '/api/instances')).status, 200);
  t.equal((await cp.api('DELETE', `/api/keys/${key.id}`)).status, 200);
  const after = await withSession(s, 'GET', '/api/instances');
  t.equal(after.status, 401);
  t.equal((after.body as ErrorBody).message, 'The API key has been revoked.');
  const audit = await cp.api<AuditBody>(`GET`, `/api/audit?key_id=${key.id}&channel=dashboard&action=instances.list`);
  t.equal(audit.body.items[0]?.status, 401, 'the refused request is audited under the key');
});

t.test('a key that expires ends its sessions; a session ends after its own time too', async (t) => {
  const key = await cp.createKey(['admin'], { expiresAt: clock + 60_000 });
  const s = await signIn(cp, key.secret);
  t.match(s.setCookie, /; Max-Age=60(;|$)/, 'the cookie lives no longer than the key');
  t.equal((await withSession(s, 'GET', '/api/instances')).status, 200);
  clock += 61_000;
  const [seen] = await rawRows<{ last_seen_at: number }>(cp.ctx.db, sql`select last_seen_at from dashboard_sessions where key_id = ${key.id}`);
  t.ok((seen?.last_seen_at ?? 0) >= clock - 61_000, 'the session records when it was last used');
  const after = await withSession(s, 'GET', '/api/instances');
  t.equal(after.status, 401);
  t.equal((after.body as ErrorBody).message, 'The API key has expired.');

  const long = await signIn(cp, cp.adminKey);
  clock += 12 * 3_600_000;
  const late = await withSession(long, 'GET', '/api/instances');
  t.equal(late.status, 401);
  t.match((late.body as ErrorBody).message, /session has ended/);
});

t.test('sign-out needs the CSRF token, ends the session and clears the cookie', async (t) => {
  const s = await signIn(cp, cp.adminKey);
  const forged = await withSession(s, 'DELETE', '/api/session', { csrf: null });
  t.equal(forged.status, 403, 'a forged sign-out is refused');
  t.equal((await withSession(s, 'GET', '/api/instances')).status, 200, 'and the session still works');
  const out = await withSession(s, 'DELETE', '/api/session');
  t.equal(out.status, 200);
  t.match(out.headers.get('set-cookie'), /^vmk_session=; .*Max-Age=0/);
  const after = await withSession(s, 'GET', '/api/instances');
  t.equal(after.status, 401);
  t.match((after.body as ErrorBody).message, /session has ended/);
  const bearer = await cp.api<ErrorBody>('DELETE', '/api/session');
  t.equal(bearer.status, 400, 'a bearer key has no session to end');
  t.match(bearer.body.message, /no dashboard session/);
});

t.test('a session sees only its own workspace', async (t) => {
  const other = await cp.createWorkspace('other-dash');
  const s = await signIn(cp, other.adminKey);
  const mine = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('mine'), provider: 'manual' } });
  const list = await withSession(s, 'GET', '/api/instances');
  t.same(list.body, { items: [] });
  const one = await withSession(s, 'GET', `/api/instances/${mine.body.id}`);
  t.equal(one.status, 404);
  const cmds = await withSession(s, 'GET', `/api/instances/${mine.body.id}/commands`);
  t.equal(cmds.status, 404);
});

t.test('GET /api/instances/{id}/commands lists what was sent (none yet for a new instance)', async (t) => {
  const inst = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('cmds'), provider: 'manual' } });
  const res = await cp.api<{ items: unknown[] }>('GET', `/api/instances/${inst.body.id}/commands`);
  t.equal(res.status, 200);
  t.same(res.body.items, []);
  const bad = await cp.api<ErrorBody>('GET', '/api/instances/inst_nope/commands');
  t.equal(bad.status, 404);
  t.equal(bad.body.error, 'instance_not_found');
});

t.test('the audit log filters by channel and time window', async (t) => {
  const before = await cp.api<AuditBody>('GET', '/api/audit?channel=rest&limit=5');
  t.ok(before.body.items.every((a) => a.channel === 'rest'));
  const first = before.body.items[before.body.items.length - 1];
  const until = await cp.api<AuditBody>(`GET`, `/api/audit?until=${encodeURIComponent(first?.at ?? '')}&limit=500`);
  t.ok(until.body.items.every((a) => a.at < (first?.at ?? '')), 'until: entries before');
  const bad = await cp.api<ErrorBody>('GET', '/api/audit?channel=carrier-pigeon');
  t.equal(bad.status, 400);
});

/** Reads Server-Sent Events from a response, frame by frame. */
function eventReader(res: Response) {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return async function next(): Promise<{ event: string; data: unknown } | null> {
    for (;;) {
      const end = buffer.indexOf('\n\n');
      if (end >= 0) {
        const raw = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(raw)?.[1];
        const data = /^data: (.*)$/m.exec(raw)?.[1];
        if (event !== undefined && data !== undefined) return { event, data: JSON.parse(data) };
        continue;
      }
      const chunk = await reader.read();
      if (chunk.done) return null;
      buffer += decoder.decode(chunk.value, { stream: true });
    }
  };
}

t.test('the live feed pushes instance changes to the session, and ends when its key is revoked', async (t) => {
  const key = await cp.createKey(['admin']);
  const s = await signIn(cp, key.secret);
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const res = await fetch(`${cp.url}/api/events`, { headers: { cookie: s.cookie }, signal: abort.signal });
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/event-stream/);
  const next = eventReader(res);
  const name = uniqueInstanceName('live');
  await cp.api('POST', '/api/instances', { body: { name, provider: 'manual' } });
  const got = await next();
  t.equal(got?.event, 'instance');
  t.equal((got?.data as { instance: { name: string } }).instance.name, name, 'an instance made by another client is pushed');

  const other = await cp.createWorkspace('other-live');
  await cp.api('POST', '/api/instances', { key: other.adminKey, body: { name: uniqueInstanceName('theirs'), provider: 'manual' } });
  await cp.api('DELETE', `/api/keys/${key.id}`);
  const ended = await next();
  t.equal(ended?.event, 'session_ended', "another workspace's instance is not pushed; the revocation is");
  t.match((ended?.data as { message: string }).message, /revoked/);
  t.equal(await next(), null, 'and the stream closes');

  const again = await fetch(`${cp.url}/api/events`, { headers: { cookie: s.cookie } });
  t.equal(again.status, 401, 'a new stream is refused');
  await again.body?.cancel();
});

t.test("the live feed tells when an instance's agent connects and when it goes", async (t) => {
  const s = await signIn(cp, cp.adminKey);
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const res = await fetch(`${cp.url}/api/events`, { headers: { cookie: s.cookie }, signal: abort.signal });
  const next = eventReader(res);
  const real = await enrollRealAgent(t, cp);
  const states: string[] = [];
  const until = async (want: string) => {
    for (;;) {
      const got = await next();
      if (got === null) throw new Error(`the stream ended before the agent was ${want}`);
      const inst = (got.data as { instance?: { id: string; status: string; agent: { state: string } | null } }).instance;
      if (got.event !== 'instance' || inst?.id !== real.instanceId) continue;
      states.push(`${inst.status}/${inst.agent?.state ?? 'none'}`);
      if (inst.agent?.state === want) return inst;
    }
  };
  const proc = real.start();
  const connected = await until('connected');
  t.equal(connected.status, 'running', 'pushed as running, with the agent connected');
  await proc.stop();
  await until('disconnected');
  t.pass(`then disconnected (${states.join(', ')})`);
});

t.test('the live feed needs instances:read', async (t) => {
  const key = await cp.createKey(['repos:read']);
  const res = await cp.api<ErrorBody>('GET', '/api/events', { key: key.secret });
  t.equal(res.status, 403);
});

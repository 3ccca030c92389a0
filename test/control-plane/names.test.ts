import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { vmkitCli } from '../helpers/vmkit-cli.ts';
import { escapeUnsafeText, isSafeText } from '@vmkit/protocol';

interface ErrorBody {
  error: string;
  message: string;
}

const cp = await startTestControlPlane({ config: { rateLimit: { max: 10_000 } } });
t.teardown(() => cp.close());

/** Text no name may hold, each with what it is. */
const UNSAFE: Array<[string, string]> = [
  ['NUL', 'a\u0000b'],
  ['an ESC sequence', '\u001b[31mred\u001b[0m'],
  ['BEL', 'ding\u0007'],
  ['DEL', 'x\u007f'],
  ['a C1 control (NEL)', 'x\u0085y'],
  ['a newline', 'two\nlines'],
  ['a tab', 'a\tb'],
  ['the line separator', 'a\u2028b'],
  ['LRE', 'a\u202ab'],
  ['RLE', 'a\u202bb'],
  ['PDF', 'a\u202cb'],
  ['LRO', 'a\u202db'],
  ['RLO (bidi override)', 'evil\u202etxt.exe'],
  ['LRI', 'a\u2066b'],
  ['RLI', 'a\u2067b'],
  ['FSI', 'a\u2068b'],
  ['PDI', 'a\u2069b'],
  ['LRM', 'a\u200eb'],
  ['RLM', 'a\u200fb'],
  ['ALM', 'a\u061cb'],
  ['a lone high surrogate', 'a\ud800b'],
  ['a lone low surrogate', 'a\udfffb'],
  ['a lone surrogate at the end', 'name\ud83d'],
];

const keyNames = async () =>
  (await cp.api<{ items: Array<{ name: string }> }>('GET', '/api/keys')).body.items.map((k) => k.name).sort();

t.test('key names with control characters, bidi controls or lone surrogates are refused, naming the field', async (t) => {
  const before = await keyNames();
  for (const [what, name] of UNSAFE) {
    // JSON.stringify writes control characters and lone surrogates as \u escapes,
    // so this is exactly what a client sends on the wire.
    const res = await cp.api<ErrorBody>('POST', '/api/keys', { body: { name, scopes: ['repos:read'] } });
    t.equal(res.status, 400, `${what}: 400`);
    t.equal(res.body.error, 'invalid_request', `${what}: invalid_request`);
    t.match(res.body.message, /body\.name/, `${what}: names the field`);
    t.match(res.body.message, /control characters, bidirectional controls or lone surrogates/, `${what}: says why`);
  }
  t.same(await keyNames(), before, 'no key was created');
});

t.test('a lone surrogate written as a raw \\ud800 escape in the JSON text is refused, not stored as U+FFFD', async (t) => {
  const res = await cp.api<ErrorBody>('POST', '/api/keys', { rawBody: '{"name":"x\\ud800","scopes":["repos:read"]}' });
  t.equal(res.status, 400);
  t.equal(res.body.error, 'invalid_request');
  t.match(res.body.message, /body\.name/);
  t.notOk((await keyNames()).some((n) => n.includes('\ufffd')), 'no name with U+FFFD was stored');
});

t.test('a body that is not valid UTF-8 (a surrogate encoded as bytes) is refused', async (t) => {
  const bytes = Buffer.concat([Buffer.from('{"name":"x'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('","scopes":["repos:read"]}')]);
  const res = await fetch(`${cp.url}/api/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${cp.adminKey}`, 'content-type': 'application/json' },
    body: bytes,
  });
  t.equal(res.status, 400);
  t.same(await res.json(), { error: 'invalid_request', message: 'Invalid request: the body is not valid UTF-8.' });
  t.notOk((await keyNames()).some((n) => n.includes('\ufffd')), 'nothing was stored');
});

t.test('ordinary names in any script, emoji included, are accepted and come back unchanged', async (t) => {
  for (const name of ['Zürich deploy', '日本のキー', 'مفتاح', 'rocket 🚀', 'a\\b "quoted"']) {
    const res = await cp.api<{ name: string }>('POST', '/api/keys', { body: { name, scopes: ['repos:read'] } });
    t.equal(res.status, 201, name);
    t.equal(res.body.name, name, `${name} comes back as sent`);
  }
});

t.test('instance, environment and repository names refuse the same characters, naming the field', async (t) => {
  const repo = await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: 'acme/web' } });
  t.equal(repo.status, 201);
  for (const [what, bad] of [
    ['ESC', 'web\u001b[2J'],
    ['RLO', 'web\u202e1'],
    ['a lone surrogate', 'web\ud800'],
    ['NUL', 'web\u0000'],
  ] as const) {
    const inst = await cp.api<ErrorBody>('POST', '/api/instances', { body: { name: bad } });
    t.equal(inst.status, 400, `instance name with ${what}`);
    t.match(inst.body, { error: 'invalid_request', message: /body\.name/ });
    const env = await cp.api<ErrorBody>('POST', `/api/repos/${repo.body.id}/environments`, { body: { name: bad } });
    t.equal(env.status, 400, `environment name with ${what}`);
    t.match(env.body, { error: 'invalid_request', message: /body\.name/ });
    const r = await cp.api<ErrorBody>('POST', '/api/repos', { body: { repo: `acme/${bad}` } });
    t.equal(r.status, 400, `repository name with ${what}`);
    t.match(r.body, { error: 'invalid_request', message: /body\.repo/ });
  }
  const instances = await cp.api<{ items: unknown[] }>('GET', '/api/instances');
  t.same(instances.body.items, [], 'no instance was created');
});

t.test('an agent enrolling with a host name, OS or version holding such characters is refused, naming the field', async (t) => {
  const good = { token: 'vmkenr_unknown', public_key: Buffer.alloc(32, 7).toString('base64url'), hostname: 'web-1', os: 'Debian 12', agent_version: '0.1.0' };
  for (const [field, bad] of [
    ['hostname', 'web\u001b[2J'],
    ['hostname', 'web\u202e1'],
    ['os', 'Debian\u0000'],
    ['agent_version', '0.1\ud800'],
  ] as const) {
    const res = await cp.api<ErrorBody>('POST', '/api/agents/enroll', { key: null, body: { ...good, [field]: bad } });
    t.equal(res.status, 400, `${field} ${JSON.stringify(bad)}`);
    t.match(res.body, { error: 'invalid_request', message: new RegExp(`body\\.${field}: must not contain control characters`) });
  }
  const fine = await cp.api<ErrorBody>('POST', '/api/agents/enroll', { key: null, body: good });
  t.equal(fine.body.error, 'enrollment_token_invalid', 'ordinary values pass on to the token check');
});

t.test('vmkit keys list never prints raw control characters a name holds', async (t) => {
  // Written straight to the database, as a name stored before the rule would be.
  const hostile = 'ops\u001b]0;pwned\u0007\u001b[2J\u202eevil\ud800';
  const { id } = await cp.createKey(['repos:read'], { name: hostile });
  const run = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));
  const list = await run(['keys', 'list']);
  t.equal(list.code, 0);
  t.ok(isSafeText(list.stdout.replaceAll('\n', '')), 'the table holds no control, bidi or surrogate character');
  t.match(list.stdout, `ops\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil`, 'the name is shown with escapes');
  const revoke = await run(['keys', 'revoke', id]);
  t.equal(revoke.code, 0);
  t.ok(isSafeText(revoke.stdout.replaceAll('\n', '')), 'the plain line holds none either');
  t.match(revoke.stdout, /Revoked key key_\w+ \(ops\\x1b/);
  const json = await run(['keys', 'list', '--json']);
  t.ok(isSafeText(json.stdout.replaceAll('\n', '')), '--json output is escaped JSON');
  const back = (JSON.parse(json.stdout) as { items: Array<{ id: string; name: string }> }).items.find((k) => k.id === id);
  t.ok(back?.name.startsWith('ops\u001b]0;pwned'), '--json still carries the exact name');
});

t.test('escapeUnsafeText writes escapes for what it must and leaves other text alone', async (t) => {
  t.equal(escapeUnsafeText('plain näme 🚀'), 'plain näme 🚀');
  t.equal(escapeUnsafeText('a\u001bb'), 'a\\x1bb');
  t.equal(escapeUnsafeText('a\u202eb'), 'a\\u202eb');
  t.equal(escapeUnsafeText('a\ud800'), 'a\\ud800');
  t.equal(escapeUnsafeText('a\\x1b\u0000'), 'a\\\\x1b\\x00', 'a literal backslash is doubled, so it cannot pass for an escape');
});

import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { FakeHetzner } from '../helpers/fake-hetzner.ts';
import { FakeCloudflare } from '../helpers/fake-cloudflare.ts';
import { FakeGitHub, filesOf } from '../helpers/fake-github.ts';
import { FIXTURE_REPOS } from '../scan/fixture-repos.ts';
import type { WorkspaceProviderSet } from '../../control-plane/src/services/deploy/providers.ts';
import { WorkspaceProviders } from '../../control-plane/src/services/workspace-providers.ts';
import { SecretBox } from '../../control-plane/src/auth/secret-box.ts';
import { ApiError } from '../../control-plane/src/errors.ts';

const TOKEN = 'hcloud_test_token_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN';
const CF_TOKEN = 'cf-test-token-0123456789abcdefghijklmnopqr';
const ZONE_ID = '023e105f4ecef8ad9ca31a8372d0c353';
const GH_TOKEN = 'github_pat_workspace_0123456789';
const APP_ID = '31337';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const appPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();

const axum = await filesOf(join(FIXTURE_REPOS, 'rust-axum'));
const github = await FakeGitHub.start({
  app: { id: APP_ID, publicKey },
  tokens: [GH_TOKEN],
  repos: [{ owner: 'acme', name: 'shop', files: axum, installationId: 11 }],
});
t.teardown(() => github.close());

async function controlPlane(t: Test): Promise<TestControlPlane> {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  return cp;
}

function resolve(cp: TestControlPlane, workspaceId = cp.workspaceId): Promise<WorkspaceProviderSet> {
  const of = cp.ctx.deployProviders;
  if (!of) throw new Error('the control plane installed no deploy provider resolver');
  return of(workspaceId);
}

t.test('the first workspace deploys with the defaults: local sandbox, local DNS, no GitHub without VMKIT_GITHUB_*', async (t) => {
  const cp = await controlPlane(t);
  const set = await resolve(cp);
  t.equal(set.compute?.name, 'local');
  t.equal(set.dns.name, 'local');
  t.equal(set.dns.zone, 'vmkit.internal');
  t.equal(set.github, null);
  t.equal(await resolve(cp), set, 'resolved once, then cached');
});

t.test('a second workspace with nothing configured has no compute and no GitHub, and local DNS', async (t) => {
  const cp = await controlPlane(t);
  const other = await cp.createWorkspace('second');
  const set = await resolve(cp, other.workspaceId);
  t.equal(set.compute, null, 'deploy answers compute_target_missing');
  t.equal(set.github, null, 'deploy answers github_app_not_installed');
  t.equal(set.dns.name, 'local');
});

t.test('VMKIT_GITHUB_* is the first workspace’s GitHub, and only its', async (t) => {
  const saved = { token: process.env.VMKIT_GITHUB_TOKEN, url: process.env.VMKIT_GITHUB_API_URL, zone: process.env.VMKIT_DNS_ZONE };
  process.env.VMKIT_GITHUB_TOKEN = GH_TOKEN;
  process.env.VMKIT_GITHUB_API_URL = github.url;
  process.env.VMKIT_DNS_ZONE = 'apps.example.internal';
  let cp: TestControlPlane;
  try {
    cp = await controlPlane(t);
  } finally {
    for (const [name, value] of [['VMKIT_GITHUB_TOKEN', saved.token], ['VMKIT_GITHUB_API_URL', saved.url], ['VMKIT_DNS_ZONE', saved.zone]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
  const set = await resolve(cp);
  t.equal(set.github?.authKind, 'token');
  t.equal(set.github?.apiBaseUrl, github.url);
  t.equal((await set.github?.getRepo({ owner: 'acme', name: 'shop' }))?.full_name, 'acme/shop', 'a real call through it reaches GitHub');
  t.equal(set.dns.zone, 'apps.example.internal', 'VMKIT_DNS_ZONE names the local zone');
  const view = (await cp.api<{ provider: string; source: string; settings: unknown; secret_fingerprint: string }>('GET', '/api/workspace/github')).body;
  t.match(view, { provider: 'github', source: 'default', settings: { auth: 'token', api_url: github.url } });
  t.match(view.secret_fingerprint, /^sha256:/);
  t.notMatch(JSON.stringify(view), GH_TOKEN);
  const other = await cp.createWorkspace('second');
  t.equal((await resolve(cp, other.workspaceId)).github, null, 'the environment’s GitHub is not lent to other workspaces');
});

t.test('a configured Hetzner project resolves to a working client; a change is seen at once', async (t) => {
  const cp = await controlPlane(t);
  const hetzner = await FakeHetzner.start({ token: TOKEN });
  t.teardown(() => hetzner.close());
  const before = await resolve(cp);
  t.equal((await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } })).status, 200);
  const set = await resolve(cp);
  t.not(set, before, 'the PUT dropped the cached set');
  t.equal(set.compute?.name, 'hetzner');
  t.equal(set.compute?.enrollmentTokenTtlMs, 30 * 60_000);
  const calls = hetzner.requests.length;
  t.equal(await set.compute?.status('inst_01jx4n9abcdefghjkmnpqrstvw'), 'missing', 'a real call through the resolved client');
  t.equal(hetzner.requests.at(-1)?.status, 200);
  t.ok(hetzner.requests.length > calls);

  await cp.api('DELETE', '/api/workspace/compute');
  t.equal((await resolve(cp)).compute?.name, 'local', 'DELETE is seen at once too');
});

t.test('a configured Cloudflare zone resolves to a client that writes VMKit’s record there', async (t) => {
  const cp = await controlPlane(t);
  const cf = await FakeCloudflare.start({ token: CF_TOKEN, zoneId: ZONE_ID, zoneName: 'example.com' });
  t.teardown(() => cf.close());
  const put = await cp.api('PUT', '/api/workspace/dns', { body: { provider: 'cloudflare', token: CF_TOKEN, zone_id: ZONE_ID, zone: 'example.com', api_url: cf.url } });
  t.equal(put.status, 200);
  const { dns } = await resolve(cp);
  t.equal(dns.name, 'cloudflare');
  const rec = await dns.upsert({ name: 'shop-staging.example.com', type: 'A', content: '203.0.113.7', owner: 'env_1' });
  t.equal(rec.outcome, 'created');
  t.match(cf.records(), [{ name: 'shop-staging.example.com', content: '203.0.113.7', proxied: false, comment: 'vmkit-managed owner=env_1' }]);
});

t.test('a workspace’s GitHub token or App is checked, resolved, and used for its scans', async (t) => {
  const cp = await controlPlane(t);
  const refused = await cp.api<{ error: string; message: string }>('PUT', '/api/workspace/github', { body: { provider: 'github', token: 'github_pat_wrong_000000', api_url: github.url } });
  t.equal(refused.status, 422);
  t.match(refused.body, { error: 'provider_credentials_refused', message: /Bad credentials/ });

  const byToken = await cp.api('PUT', '/api/workspace/github', { body: { provider: 'github', token: GH_TOKEN, api_url: github.url } });
  t.equal(byToken.status, 200);
  t.equal((await resolve(cp)).github?.authKind, 'token');

  const byApp = await cp.api<{ settings: unknown }>('PUT', '/api/workspace/github', { body: { provider: 'github', app_id: Number(APP_ID), private_key: appPem, api_url: github.url } });
  t.equal(byApp.status, 200);
  t.same(byApp.body.settings, { auth: 'app', app_id: APP_ID, api_url: github.url });
  t.ok(github.requests.some((r) => r.path === '/app'), 'the App key was tried with GET /app');
  const gh = (await resolve(cp)).github;
  t.equal(gh?.authKind, 'app');
  t.equal(gh?.apiBaseUrl, github.url);

  t.equal((await cp.api('POST', '/api/repos', { body: { repo: 'acme/shop' } })).status, 201);
  const scan = await cp.api<{ language: string; framework: string; sha: string }>('POST', '/api/scans', { body: { repo: 'acme/shop' } });
  t.equal(scan.status, 201, 'the scan ran');
  t.match(scan.body, { language: 'rust', framework: 'axum', sha: github.shaOf('acme/shop') }, 'scanned through the workspace’s App');

  const keep = await cp.api<{ settings: unknown }>('PUT', '/api/workspace/github', { body: { provider: 'github', api_url: github.url } });
  t.equal(keep.status, 200, 'a PUT without the key keeps the App and its key');
  t.same(keep.body.settings, { auth: 'app', app_id: APP_ID, api_url: github.url });
});

t.test('local DNS records are kept per workspace and listed by the API', async (t) => {
  const cp = await controlPlane(t);
  const other = await cp.createWorkspace('second');
  const mine = await resolve(cp);
  await mine.dns.upsert({ name: 'shop-staging.vmkit.internal', type: 'A', content: '10.0.0.2', owner: 'env_a' });
  const theirs = await resolve(cp, other.workspaceId);
  t.equal(await theirs.dns.find('shop-staging.vmkit.internal', 'A'), null, 'the other workspace does not see it');
  await theirs.dns.upsert({ name: 'shop-staging.vmkit.internal', type: 'A', content: '10.0.0.9', owner: 'env_b' });

  const listed = await cp.api<{ items: { name: string; content: string; owner: string; zone: string }[] }>('GET', '/api/dns-records');
  t.match(listed.body.items, [{ name: 'shop-staging.vmkit.internal', content: '10.0.0.2', owner: 'env_a', zone: 'vmkit.internal' }]);
  t.equal(listed.body.items.length, 1);
  const theirList = await cp.api<{ items: { content: string }[] }>('GET', '/api/dns-records', { key: other.adminKey });
  t.same(theirList.body.items.map((r) => r.content), ['10.0.0.9']);
  const { secret } = await cp.createKey(['deploys:read']);
  t.equal((await cp.api('GET', '/api/dns-records', { key: secret })).status, 200, 'deploys:read may list them');
  const { secret: narrow } = await cp.createKey(['repos:read']);
  t.equal((await cp.api('GET', '/api/dns-records', { key: narrow })).status, 403);
});

t.test('when the sandbox cannot run here, the first workspace still resolves and provisioning says why', async (t) => {
  const cp = await controlPlane(t);
  const providers = new WorkspaceProviders({
    db: cp.ctx.db,
    box: SecretBox.forDataDir(cp.dataDir),
    localCompute: () => {
      throw new ApiError('sandbox_unavailable', 'The local VM sandbox cannot run here: not root.');
    },
    defaultGitHub: { apiBaseUrl: github.url, auth: { kind: 'token', token: GH_TOKEN } },
  });
  const set = await providers.resolve(cp.workspaceId);
  t.equal(set.compute?.name, 'local');
  t.equal(set.github?.authKind, 'token', 'GitHub still resolves: the first phase of a deploy needs no VM');
  t.equal(set.dns.name, 'local');
  const compute = set.compute;
  if (compute === null) throw new Error('the first workspace resolved no compute');
  const failure = (p: Promise<unknown>): Promise<unknown> => p.then(() => null, (err: unknown) => err);
  t.match(await failure(compute.create({ instance_id: 'inst_1', name: 'x' })), { key: 'sandbox_unavailable', message: /not root/ });
  t.match(await failure(compute.status('inst_1')), { key: 'sandbox_unavailable' });
  t.match(await failure(compute.destroy('inst_1')), { key: 'sandbox_unavailable' });
});

t.test('settings survive a restart: the sealed token opens again with the same key file', async (t) => {
  const cp = await controlPlane(t);
  const hetzner = await FakeHetzner.start({ token: TOKEN });
  t.teardown(() => hetzner.close());
  await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url } });
  await cp.restart();
  const { compute } = await resolve(cp);
  t.equal(compute?.name, 'hetzner');
  t.equal(await compute?.status('inst_01jx4n9abcdefghjkmnpqrstvw'), 'missing', 'the reopened token is accepted by Hetzner');
});

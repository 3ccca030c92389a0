import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { GitHubClient } from '../../control-plane/src/providers/github/client.ts';
import type { GitHubClientOptions } from '../../control-plane/src/providers/github/client.ts';
import { GitHubError } from '../../control-plane/src/providers/github/errors.ts';
import { createAppJwt, loadAppPrivateKey } from '../../control-plane/src/providers/github/app-jwt.ts';
import { GitHubRepoSource } from '../../control-plane/src/providers/repo-source/github.ts';
import { RepoSourceError } from '../../control-plane/src/providers/repo-source/types.ts';
import { classifyRepo } from '../../control-plane/src/services/scan/classify.ts';
import { RepoView } from '../../control-plane/src/services/scan/repo-view.ts';
import { FakeGitHub, filesOf } from '../helpers/fake-github.ts';
import { FIXTURE_REPOS } from './fixture-repos.ts';

const APP_ID = '424242';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
// GitHub hands out PKCS#1 PEM files; the client must accept that form.
const appPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

const fastapi = await filesOf(join(FIXTURE_REPOS, 'python-fastapi'));
const monorepo = await filesOf(join(FIXTURE_REPOS, 'monorepo-workspaces'));

const fake = await FakeGitHub.start({
  app: { id: APP_ID, publicKey },
  tokens: ['ghp_plaintoken'],
  tokenLifetimeMs: 10 * 60_000,
  repos: [
    { owner: 'badri', name: 'my-fastapi-app', files: fastapi, installationId: 7 },
    { owner: 'badri', name: 'sibling', files: { 'index.html': '<h1>hi</h1>' }, installationId: 7 },
    { owner: 'badri', name: 'not-installed', files: fastapi },
    { owner: 'acme', name: 'many-branches', files: fastapi, installationId: 9, branches: Array.from({ length: 250 }, (_, i) => `b${String(i).padStart(3, '0')}`) },
  ],
});
t.teardown(() => fake.close());

function appClient(extra: Partial<GitHubClientOptions> = {}): GitHubClient {
  return new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: APP_ID, privateKey: appPem }, ...extra });
}

async function rejectsWith(t: Test, p: Promise<unknown>, key: string): Promise<RepoSourceError | undefined> {
  try {
    await p;
    t.fail(`expected ${key}`);
    return undefined;
  } catch (err) {
    t.type(err, RepoSourceError);
    t.equal((err as RepoSourceError).key, key);
    return err as RepoSourceError;
  }
}

const repo = { owner: 'badri', name: 'my-fastapi-app' };

t.test('a GitHub App scans a repo over the real REST shapes and gets the contract answer', async (t) => {
  const before = { tokens: fake.tokenRequests, lookups: fake.installationLookups };
  const source = new GitHubRepoSource(appClient());
  const head = await source.head(repo);
  t.equal(head.defaultBranch, 'main');
  t.equal(head.sha, fake.shaOf('badri/my-fastapi-app'));
  const view = await RepoView.open(source, repo, head.sha);
  t.ok(view.treeComplete, 'one recursive tree call listed everything');
  const c = await classifyRepo(view, { repo: 'badri/my-fastapi-app' });
  t.match(c, { language: 'python', framework: 'fastapi', buildpack: 'gcr.io/buildpacks/builder:v1', procfile_detected: true, dockerfile_detected: false });
  t.equal(fake.installationLookups - before.lookups, 1, 'one installation lookup');
  t.equal(fake.tokenRequests - before.tokens, 1, 'one token for the whole scan');
  const issued = fake.lastIssuedToken();
  t.same(issued?.repositories, ['my-fastapi-app'], 'the token is limited to the scanned repository');
  t.same(issued?.permissions, { contents: 'read', metadata: 'read' }, 'and to reading it');
  t.ok(fake.requests.every((r) => r.apiVersion === '2022-11-28'), 'every call names the API version');
  t.notOk(fake.requests.some((r) => r.path.includes('main.py')), 'source files are not fetched');
});

t.test('installation tokens are reused until shortly before they expire', async (t) => {
  const client = appClient();
  const source = new GitHubRepoSource(client);
  const start = fake.tokenRequests;
  const head = await source.head(repo);
  await source.readFile(repo, head.sha, 'requirements.txt');
  await source.readFile(repo, head.sha, 'Procfile');
  t.equal(fake.tokenRequests - start, 1, 'three calls, one token');

  // A margin longer than the token's 10-minute life: every call needs a fresh token.
  const eager = new GitHubRepoSource(appClient({ tokenRefreshMarginMs: 11 * 60_000 }));
  const start2 = fake.tokenRequests;
  await eager.readFile(repo, head.sha, 'requirements.txt');
  await eager.readFile(repo, head.sha, 'Procfile');
  t.equal(fake.tokenRequests - start2, 2, 'an expiring token is renewed');

  const fresh = new GitHubRepoSource(appClient());
  const start3 = fake.tokenRequests;
  await Promise.all(['requirements.txt', 'Procfile', 'main.py', 'nope'].map((p) => fresh.readFile(repo, head.sha, p)));
  t.equal(fake.tokenRequests - start3, 1, 'concurrent calls share one token request');
});

t.test('a token revoked early is replaced once, transparently', async (t) => {
  const source = new GitHubRepoSource(appClient());
  const head = await source.head(repo);
  fake.revokeAllTokens();
  const text = await source.readFile(repo, head.sha, 'requirements.txt');
  t.match(text, /fastapi/);
});

t.test('a repository the App is not installed on answers github_app_not_installed', async (t) => {
  const source = new GitHubRepoSource(appClient());
  const err = await rejectsWith(t, source.head({ owner: 'badri', name: 'not-installed' }), 'github_app_not_installed');
  t.match(err?.message, /badri\/not-installed/);
  await rejectsWith(t, source.head({ owner: 'badri', name: 'does-not-exist' }), 'github_app_not_installed');
});

t.test('with a plain token an unknown repository answers repo_not_found', async (t) => {
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'token', token: 'ghp_plaintoken' } }));
  await rejectsWith(t, source.head({ owner: 'badri', name: 'does-not-exist' }), 'repo_not_found');
  const head = await source.head(repo);
  t.equal(head.sha, fake.shaOf('badri/my-fastapi-app'), 'the same token reads a known repo');
});

t.test('a JWT signed with the wrong key is refused by GitHub and reported as a credentials problem', async (t) => {
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: APP_ID, privateKey: other } }));
  const err = await rejectsWith(t, source.head(repo), 'github_unavailable');
  t.match(err?.message, /refused the configured credentials/);
  const wrongIssuer = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: '1', privateKey: appPem } }));
  await rejectsWith(t, wrongIssuer.head(repo), 'github_unavailable');
});

t.test('an exhausted rate limit is a clear error carrying the reset time', async (t) => {
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'token', token: 'ghp_plaintoken' } }));
  const reset = Math.floor(Date.now() / 1000) + 1234;
  fake.rateLimitResetAt = reset;
  t.teardown(() => {
    fake.rateLimitResetAt = null;
  });
  const err = await rejectsWith(t, source.head(repo), 'github_rate_limited');
  const iso = new Date(reset * 1000).toISOString();
  t.match(err?.message, iso, 'the message says when it resets');
  t.equal(err?.detail.reset_at, iso);
});

t.test('a secondary rate limit (429 with retry-after) is reported the same way', async (t) => {
  const client = new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'token', token: 'ghp_plaintoken' } });
  fake.secondaryRetryAfter = 30;
  t.teardown(() => {
    fake.secondaryRetryAfter = null;
  });
  const before = Date.now();
  try {
    await client.getRepo(repo);
    t.fail('expected a rate limit');
  } catch (err) {
    t.type(err, GitHubError);
    const e = err as GitHubError;
    t.equal(e.failure, 'rate_limited');
    t.ok(e.resetAt && e.resetAt.getTime() >= before + 29_000 && e.resetAt.getTime() <= Date.now() + 31_000, 'reset is retry-after seconds away');
  }
});

t.test('list endpoints follow Link headers across pages', async (t) => {
  const client = appClient();
  const before = fake.requests.length;
  const branches = await client.listBranches({ owner: 'acme', name: 'many-branches' }, 100);
  t.equal(branches.length, 251, 'main plus 250 branches');
  t.equal(new Set(branches).size, 251, 'no page is read twice');
  t.equal(fake.requests.slice(before).filter((r) => r.path.includes('/branches')).length, 3, 'three pages');
});

t.test('a next-page link to another origin is refused, so credentials never leave the API host', async (t) => {
  const evil = await FakeGitHub.start({
    tokens: ['ghp_x'],
    nextLinkOverride: 'http://127.0.0.2:9/steal',
    repos: [{ owner: 'acme', name: 'many-branches', files: { 'a.txt': 'a' }, branches: ['x', 'y', 'z'] }],
  });
  t.teardown(() => evil.close());
  const client = new GitHubClient({ apiBaseUrl: evil.url, auth: { kind: 'token', token: 'ghp_x' } });
  await t.rejects(client.listBranches({ owner: 'acme', name: 'many-branches' }, 2), /off the API origin/);
});

t.test('a truncated tree falls back to listing only the directories classification needs', async (t) => {
  const big = await FakeGitHub.start({
    tokens: ['ghp_big'],
    truncateTreesOver: 3,
    repos: [{ owner: 'acme', name: 'mono', files: { ...monorepo, ...Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`docs/page${i}.md`, `# ${i}`])) } }],
  });
  t.teardown(() => big.close());
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: big.url, auth: { kind: 'token', token: 'ghp_big' } }));
  const ref = { owner: 'acme', name: 'mono' };
  const head = await source.head(ref);
  const view = await RepoView.open(source, ref, head.sha);
  t.notOk(view.treeComplete, 'the truncated tree is not trusted');
  const c = await classifyRepo(view, { repo: 'acme/mono' });
  t.match(c, { language: 'node', framework: 'express', root: 'apps/api' });
  const listed = big.requests.filter((r) => /\/contents(\/[^?]*)?\?ref=/.test(r.path) && !/\.(json|md)\?/.test(r.path)).map((r) => r.path);
  t.notOk(listed.some((p) => p.includes('/contents/docs?')), 'docs/ is never listed');
  t.ok(listed.some((p) => p.includes('/contents/apps?')), 'apps/ is listed');
  t.notOk(listed.some((p) => /\/contents\/(config|services|src)\?/.test(p)), 'directories absent from their parent listing are never asked for');
});

t.test('GitHub Enterprise Server: the API base URL may carry a path', async (t) => {
  const ghes = await FakeGitHub.start({ app: { id: APP_ID, publicKey }, basePath: '/api/v3', repos: [{ owner: 'corp', name: 'svc', files: fastapi, installationId: 3 }] });
  t.teardown(() => ghes.close());
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: `${ghes.url}/api/v3/`, auth: { kind: 'app', appId: APP_ID, privateKey: appPem } }));
  const head = await source.head({ owner: 'corp', name: 'svc' });
  t.equal(head.sha, ghes.shaOf('corp/svc'));
  t.ok(ghes.requests.every((r) => r.path.startsWith('/api/v3/')));
});

t.test('a GitHub that cannot be reached is github_unavailable, not a crash', async (t) => {
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: 'http://127.0.0.1:9', auth: { kind: 'token', token: 'x' }, timeoutMs: 2000 }));
  await rejectsWith(t, source.head(repo), 'github_unavailable');
});

t.test('a renamed repository is followed through GitHub\'s 301, but never to another origin', async (t) => {
  const moved = await FakeGitHub.start({
    tokens: ['ghp_m'],
    renamed: { 'acme/old-name': 'acme/new-name', 'acme/evil': 'http://127.0.0.2:9/repos/x/y' },
    repos: [{ owner: 'acme', name: 'new-name', files: fastapi }],
  });
  t.teardown(() => moved.close());
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: moved.url, auth: { kind: 'token', token: 'ghp_m' } }));
  const ref = { owner: 'acme', name: 'old-name' };
  const head = await source.head(ref);
  t.equal(head.sha, moved.shaOf('acme/new-name'));
  t.match(await source.readFile(ref, head.sha, 'requirements.txt'), /fastapi/);
  const err = await rejectsWith(t, source.head({ owner: 'acme', name: 'evil' }), 'github_unavailable');
  t.match(err?.message, /which VMKit does not follow/);
});

t.test('the fake GitHub really checks the App JWT: expired or over-long tokens are refused', async (t) => {
  const key = loadAppPrivateKey(appPem);
  const lookup = (jwt: string) =>
    fetch(`${fake.url}/repos/badri/my-fastapi-app/installation`, { headers: { authorization: `Bearer ${jwt}`, accept: 'application/vnd.github+json' } });
  t.equal((await lookup(createAppJwt(APP_ID, key, Date.now()).jwt)).status, 200, 'a fresh JWT is accepted');
  const expired = await lookup(createAppJwt(APP_ID, key, Date.now() - 20 * 60_000).jwt);
  t.equal(expired.status, 401, 'an expired JWT is refused');
  t.match(((await expired.json()) as { message: string }).message, /Expiration time/);
  const [h, p] = createAppJwt(APP_ID, key, Date.now()).jwt.split('.');
  t.equal((await lookup(`${h}.${p}.AAAA`)).status, 401, 'a forged signature is refused');
  t.throws(() => loadAppPrivateKey(generateKeyPairSync('ed25519').privateKey), /RSA/, 'only RSA keys sign App JWTs');
});

import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { ERRORS } from '@vmkit/protocol';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import { GitHubClient } from '../../control-plane/src/providers/github/client.ts';
import { GitHubRepoSource } from '../../control-plane/src/providers/repo-source/github.ts';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { ScanService } from '../../control-plane/src/services/scan/service.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { FakeGitHub, filesOf } from '../helpers/fake-github.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';
import { FIXTURE_REPOS, commitFixture, git, tempReposDir } from './fixture-repos.ts';

interface ScanBody {
  scan_id: string;
  language: string;
  framework: string | null;
  buildpack: string;
  procfile_detected: boolean;
  dockerfile_detected: boolean;
  sha: string;
  root: string;
  evidence: { file: string; reason: string }[];
  confidence: number;
  reason: string;
  cached?: boolean;
  status: string;
}

const repos = await tempReposDir();
t.teardown(repos.cleanup);
const fastapiSha = await commitFixture(repos.dir, 'python-fastapi', 'badri', 'my-fastapi-app');
await commitFixture(repos.dir, 'monorepo-workspaces', 'acme', 'platform');

const cp = await startTestControlPlane();
t.teardown(() => cp.close());
// The embedded default: local checkouts (here a temp reposDir instead of <dataDir>/repos).
cp.ctx.scanService = new ScanService({ db: cp.ctx.db, sourceFor: () => new LocalRepoSource({ reposDir: repos.dir }), now: cp.ctx.now });

async function connect(repo: string, key = cp.adminKey): Promise<void> {
  const res = await cp.api('POST', '/api/repos', { body: { repo }, key });
  if (res.status !== 201 && res.status !== 200) throw new Error(`connect ${repo}: ${res.status}`);
}
await connect('badri/my-fastapi-app');
await connect('acme/platform');

t.test('POST /api/scans answers the contract fields plus evidence, and stores the scan', async (t) => {
  const res = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  t.equal(res.status, 201);
  const b = res.body;
  t.match(b, { language: 'python', framework: 'fastapi', buildpack: 'gcr.io/buildpacks/builder:v1', procfile_detected: true, dockerfile_detected: false });
  t.match(b.scan_id, /^sc_[0-9a-z]{26}$/);
  t.equal(b.sha, fastapiSha, 'the head sha is recorded');
  t.equal(b.root, '.');
  t.ok(b.evidence.some((e) => e.file === 'requirements.txt'), 'evidence names the manifest');
  t.ok(b.confidence > 0.9 && b.confidence <= 1);
  t.equal(b.cached, false);
  t.equal(b.status, 'succeeded');

  const got = await cp.api<ScanBody>('GET', `/api/scans/${b.scan_id}`);
  t.equal(got.status, 200);
  const { cached: _c, ...posted } = b;
  const { cached: _g, ...stored } = got.body;
  t.same(stored, posted, 'GET answers the stored scan in the same shape');
});

t.test('a repeat scan at an unchanged head answers from the stored record', async (t) => {
  const first = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  const again = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'BADRI/My-FastAPI-App' } });
  t.equal(again.status, 200);
  t.equal(again.body.cached, true);
  t.equal(again.body.scan_id, first.body.scan_id, 'same record');
});

t.test('a new commit is scanned again', async (t) => {
  const before = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  const dir = join(repos.dir, 'badri', 'my-fastapi-app');
  await writeFile(join(dir, 'Dockerfile'), 'FROM python:3.12-slim\n');
  const uncommitted = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  t.equal(uncommitted.body.dockerfile_detected, false, 'uncommitted files do not count');
  t.equal(uncommitted.body.cached, true);
  await git(dir, 'add', 'Dockerfile');
  await git(dir, 'commit', '-q', '-m', 'add Dockerfile');
  const after = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  t.equal(after.status, 201);
  t.not(after.body.scan_id, before.body.scan_id);
  t.not(after.body.sha, before.body.sha);
  t.equal(after.body.dockerfile_detected, true);
});

t.test('concurrent scans of one commit share one classification and one record', async (t) => {
  await commitFixture(repos.dir, 'go-gin', 'acme', 'api');
  await connect('acme/api');
  const [a, b] = await Promise.all([
    cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'acme/api' } }),
    cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'acme/api' } }),
  ]);
  t.equal(a.body.scan_id, b.body.scan_id);
  t.same([a.status, b.status].sort(), [200, 201], 'one made it, the other shared it');
});

t.test('a monorepo scan says which root it chose and why', async (t) => {
  const res = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'acme/platform' } });
  t.equal(res.status, 201);
  t.match(res.body, { language: 'node', framework: 'express', root: 'apps/api' });
  t.match(res.body.reason, /first deployable candidate/);
});

t.test('a repo not connected to the workspace is repo_not_found in the contract shape', async (t) => {
  const res = await cp.api('POST', '/api/scans', { body: { repo: 'someone/else' } });
  t.equal(res.status, 404);
  t.same(res.body, { error: 'repo_not_found', message: 'No repo someone/else found in this workspace.' });
});

t.test('another workspace cannot scan or read this workspace’s repos and scans', async (t) => {
  const other = await cp.createWorkspace('other');
  const scan = await cp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' } });
  const res = await cp.api('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' }, key: other.adminKey });
  t.equal(res.status, 404);
  t.match(res.body, { error: 'repo_not_found' });
  const get = await cp.api('GET', `/api/scans/${scan.body.scan_id}`, { key: other.adminKey });
  t.equal(get.status, 404);
  t.match(get.body, { error: 'scan_not_found' });
});

t.test('a connected repo without a checkout is repo_not_found', async (t) => {
  await connect('ghost/repo');
  const res = await cp.api('POST', '/api/scans', { body: { repo: 'ghost/repo' } });
  t.equal(res.status, 404);
  t.match(res.body, { error: 'repo_not_found', message: /No local checkout of ghost\/repo/ });
});

t.test('scanning needs repos:read; a malformed repo name is invalid_request', async (t) => {
  const narrow = await cp.createKey(['instances:read']);
  const forbidden = await cp.api('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' }, key: narrow.secret });
  t.equal(forbidden.status, 403);
  const reader = await cp.createKey(['repos:read']);
  const ok = await cp.api('POST', '/api/scans', { body: { repo: 'badri/my-fastapi-app' }, key: reader.secret });
  t.equal(ok.status, 200);
  for (const repo of ['../etc', 'a/b/c', 'badri/..', 'noslash']) {
    const bad = await cp.api('POST', '/api/scans', { body: { repo } });
    t.equal(bad.status, 400, repo);
    t.match(bad.body, { error: 'invalid_request' });
  }
});

t.test('MCP scan_repo answers exactly the contract fields first, then the additions', async (t) => {
  const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  t.teardown(() => client.close());
  const { tools } = await client.listTools();
  const tool = tools.find((x) => x.name === 'scan_repo');
  t.ok(tool, 'scan_repo is listed');
  t.same(tool?.inputSchema.required, ['repo']);
  t.equal(tool?.annotations?.readOnlyHint, true, 'scanning changes nothing');
  const res = await client.callTool({ name: 'scan_repo', arguments: { repo: 'badri/my-fastapi-app' } });
  t.notOk(res.isError, textOf(res));
  const s = res.structuredContent as Record<string, unknown>;
  t.same(Object.keys(s).slice(0, 6), ['language', 'framework', 'buildpack', 'procfile_detected', 'dockerfile_detected', 'scan_id']);
  t.match(s, { language: 'python', framework: 'fastapi', buildpack: 'gcr.io/buildpacks/builder:v1', procfile_detected: true });
  t.ok(Array.isArray(s.evidence), 'evidence rides along');
  t.notOk('details' in s, 'internal details stay out of the tool answer');
  t.same(JSON.parse(textOf(res)), s, 'text carries the same JSON');
});

t.test('MCP scan_repo with a key lacking repos:read gets the contract authentication sentence', async (t) => {
  const narrow = await cp.createKey(['instances:read']);
  const client = await connectMcp(`${cp.url}/mcp`, narrow.secret);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'scan_repo', arguments: { repo: 'badri/my-fastapi-app' } });
  t.equal(res.isError, true);
  t.equal(textOf(res), AUTH_FAILED_TEXT);
});

t.test('MCP scan_repo wraps repo_not_found as the backend JSON error', async (t) => {
  const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  t.teardown(() => client.close());
  const res = await client.callTool({ name: 'scan_repo', arguments: { repo: 'someone/else' } });
  t.equal(res.isError, true);
  t.same(JSON.parse(textOf(res)), { error: 'repo_not_found', message: 'No repo someone/else found in this workspace.' });
});

t.test('through a GitHub App: not installed → github_app_not_installed; rate limited → reset time', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const fake = await FakeGitHub.start({
    app: { id: '77', publicKey },
    repos: [
      { owner: 'gh', name: 'app', files: await filesOf(join(FIXTURE_REPOS, 'rust-axum')), installationId: 5 },
      { owner: 'gh', name: 'uninstalled', files: { 'index.html': 'x' } },
    ],
  });
  t.teardown(() => fake.close());
  const ghCp = await startTestControlPlane();
  t.teardown(() => ghCp.close());
  const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: '77', privateKey } }));
  ghCp.ctx.scanService = new ScanService({ db: ghCp.ctx.db, sourceFor: () => source });
  for (const repo of ['gh/app', 'gh/uninstalled']) await ghCp.api('POST', '/api/repos', { body: { repo } });

  const ok = await ghCp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'gh/app' } });
  t.equal(ok.status, 201);
  t.match(ok.body, { language: 'rust', framework: 'axum', sha: fake.shaOf('gh/app') });
  const tokens = fake.tokenRequests;
  const again = await ghCp.api<ScanBody>('POST', '/api/scans', { body: { repo: 'gh/app' } });
  t.equal(again.body.cached, true);
  t.equal(fake.tokenRequests, tokens, 'the cached installation token served the repeat scan');

  const missing = await ghCp.api('POST', '/api/scans', { body: { repo: 'gh/uninstalled' } });
  t.equal(missing.status, ERRORS.github_app_not_installed.status);
  t.same(missing.body, { error: 'github_app_not_installed', message: 'The GitHub App is not installed on gh/uninstalled.' });

  const reset = Math.floor(Date.now() / 1000) + 600;
  fake.rateLimitResetAt = reset;
  const limited = await ghCp.api<{ error: string; message: string; reset_at: string }>('POST', '/api/scans', { body: { repo: 'gh/app' } });
  fake.rateLimitResetAt = null;
  t.equal(limited.status, 503);
  t.equal(limited.body.error, 'github_rate_limited');
  t.match(limited.body.message, new Date(reset * 1000).toISOString());
  t.equal(limited.body.reset_at, new Date(reset * 1000).toISOString());
});

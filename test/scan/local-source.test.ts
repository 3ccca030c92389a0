import { execFile } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import type { Test } from 'tap';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { isSafeRepoPath, parseRepoRef } from '../../control-plane/src/providers/repo-source/ref.ts';
import { RepoSourceError } from '../../control-plane/src/providers/repo-source/types.ts';
import { commitFixture, git, tempReposDir } from './fixture-repos.ts';

const run = promisify(execFile);

/** The promise rejects with a RepoSourceError of this key (and message, if given). */
async function rejectsKey(t: Test, p: Promise<unknown>, key: string, message?: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected ${key}`);
  } catch (err) {
    t.type(err, RepoSourceError);
    t.equal((err as RepoSourceError).key, key);
    if (message) t.match((err as Error).message, message);
  }
}
const repos = await tempReposDir();
t.teardown(repos.cleanup);
const source = new LocalRepoSource({ reposDir: join(repos.dir, 'checkouts') });
const base = join(repos.dir, 'checkouts');
const sha = await commitFixture(base, 'node-express', 'acme', 'web');
const ref = { owner: 'acme', name: 'web' };

t.test('head is the checkout’s HEAD commit and its branch', async (t) => {
  const head = await source.head(ref);
  t.equal(head.sha, sha);
  t.equal(head.defaultBranch, 'main');
});

t.test('only committed files are listed and read', async (t) => {
  const dir = join(base, 'acme', 'web');
  await writeFile(join(dir, 'Dockerfile'), 'FROM node:20\n');
  await writeFile(join(dir, 'package.json'), '{"changed": true}\n');
  const tree = await source.listTree(ref, sha);
  t.notOk(tree.truncated);
  t.ok(tree.entries.some((e) => e.path === 'package.json' && e.type === 'file'));
  t.notOk(tree.entries.some((e) => e.path === 'Dockerfile'), 'an untracked file is not in the tree');
  t.match(await source.readFile(ref, sha, 'package.json'), /"express"/, 'the committed bytes, not the work tree');
  t.equal(await source.readFile(ref, sha, 'Dockerfile'), null);
  await git(dir, 'checkout', '--', 'package.json');
});

t.test('directories list their direct children', async (t) => {
  const s2 = await commitFixture(base, 'monorepo-workspaces', 'acme', 'mono');
  const m = { owner: 'acme', name: 'mono' };
  const apps = await source.listDir(m, s2, 'apps');
  t.same(apps.map((e) => `${e.type}:${e.path}`), ['dir:apps/api', 'dir:apps/web']);
  const root = await source.listDir(m, s2, '');
  t.ok(root.some((e) => e.path === 'package.json' && e.type === 'file' && typeof e.size === 'number'));
  t.same(await source.listDir(m, s2, 'nope'), [], 'a missing directory is empty');
  t.same(await source.listDir(m, s2, '../x'), [], 'an unsafe path is empty');
});

t.test('files larger than the limit are not read', async (t) => {
  const dir = join(base, 'acme', 'web');
  await writeFile(join(dir, 'big.txt'), 'x'.repeat(4096));
  await git(dir, 'add', 'big.txt');
  await git(dir, 'commit', '-q', '-m', 'big');
  const head = await source.head(ref);
  t.equal(await source.readFile(ref, head.sha, 'big.txt', 1024), null);
  t.equal((await source.readFile(ref, head.sha, 'big.txt', 8192))?.length, 4096);
  t.equal(await source.readFile(ref, head.sha, 'node_modules', 8192), null, 'a directory is not a file');
});

t.test('owner/name can never leave the repositories directory', async (t) => {
  for (const bad of [
    { owner: '..', name: 'etc' },
    { owner: 'acme', name: '..' },
    { owner: 'acme/../..', name: 'x' },
    { owner: '', name: 'web' },
    { owner: 'acme', name: 'web/../../x' },
  ]) {
    await rejectsKey(t, source.head(bad), 'repo_not_found');
  }
  t.equal(parseRepoRef('../etc'), null);
  t.equal(parseRepoRef('acme/..'), null);
  t.equal(parseRepoRef('acme/web/x'), null);
  t.equal(parseRepoRef('-acme/web'), null);
  t.same(parseRepoRef('Acme-1/web.site_x'), { owner: 'Acme-1', name: 'web.site_x' });
  t.notOk(isSafeRepoPath('../x'));
  t.notOk(isSafeRepoPath('/etc/passwd'));
  t.notOk(isSafeRepoPath('a//b'));
  t.ok(isSafeRepoPath('apps/web/package.json'));
});

t.test('file paths cannot escape the commit', async (t) => {
  t.equal(await source.readFile(ref, sha, '../../../etc/passwd'), null);
  t.equal(await source.readFile(ref, sha, '/etc/passwd'), null);
  await rejectsKey(t, source.readFile(ref, 'HEAD; rm -rf /', 'package.json'), 'invalid_request');
});

t.test('a missing or empty checkout is repo_not_found', async (t) => {
  await t.rejects(source.head({ owner: 'acme', name: 'missing' }), RepoSourceError);
  await mkdir(join(base, 'acme', 'plain-dir'), { recursive: true });
  await rejectsKey(t, source.head({ owner: 'acme', name: 'plain-dir' }), 'repo_not_found');
  const empty = join(base, 'acme', 'empty');
  await mkdir(empty, { recursive: true });
  await git(empty, 'init', '-q', '-b', 'main');
  await rejectsKey(t, source.head({ owner: 'acme', name: 'empty' }), 'repo_not_found', /no commits/);
});

t.test('a clone reports its remote’s default branch; a bare mirror works too', async (t) => {
  const clone = join(base, 'acme', 'clone');
  await run('git', ['clone', '-q', join(base, 'acme', 'web'), clone]);
  await git(clone, 'checkout', '-q', '-b', 'feature');
  const head = await source.head({ owner: 'acme', name: 'clone' });
  t.equal(head.defaultBranch, 'main', 'origin/HEAD, not the checked-out feature branch');
  const bare = join(base, 'acme', 'bare');
  await run('git', ['clone', '-q', '--bare', join(base, 'acme', 'web'), bare]);
  const b = await source.head({ owner: 'acme', name: 'bare' });
  t.equal(b.sha, (await source.head(ref)).sha);
});

t.test('a detached checkout has no default branch', async (t) => {
  const dir = join(base, 'acme', 'web');
  await git(dir, 'checkout', '-q', '--detach');
  t.teardown(() => git(dir, 'checkout', '-q', 'main'));
  const head = await source.head(ref);
  t.equal(head.defaultBranch, null);
});

t.test('a symlinked owner directory pointing outside is still confined to its own checkout', async (t) => {
  // The operator may symlink checkouts in; the name itself can still not climb out.
  await symlink(join(base, 'acme'), join(base, 'alias'));
  const head = await source.head({ owner: 'alias', name: 'web' });
  t.equal(head.sha, (await source.head(ref)).sha);
});

t.test('a missing git binary is a clear error', async (t) => {
  const broken = new LocalRepoSource({ reposDir: base, gitBinary: '/nonexistent/git' });
  await t.rejects(broken.head(ref), /git is not installed/);
});

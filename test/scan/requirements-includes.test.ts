import t from 'tap';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { classifyRepo } from '../../control-plane/src/services/scan/classify.ts';
import { readRequirementIncludes } from '../../control-plane/src/services/scan/manifests.ts';
import { RepoView } from '../../control-plane/src/services/scan/repo-view.ts';
import { git, tempReposDir } from './fixture-repos.ts';

const repos = await tempReposDir();
t.teardown(repos.cleanup);
const source = new LocalRepoSource({ reposDir: join(repos.dir, 'checkouts') });

/** Commits `files` as checkouts/acme/<name> and classifies it as the scan does. */
async function scan(name: string, files: Record<string, string>) {
  const dir = join(repos.dir, 'checkouts', 'acme', name);
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), text);
  }
  await git(dir, 'init', '-q', '-b', 'main');
  await git(dir, 'add', '-A');
  await git(dir, 'commit', '-q', '-m', name);
  const ref = { owner: 'acme', name };
  const view = await RepoView.open(source, ref, (await source.head(ref)).sha);
  return { c: await classifyRepo(view, { repo: `acme/${name}`, fallback: null }), view };
}

const MANAGE = 'import os\nimport sys\n\nif __name__ == "__main__":\n    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")\n';

t.test('every include form pip accepts is read', async (t) => {
  t.same(
    readRequirementIncludes('-r base.txt\n--requirement=dev.txt\n--requirement  more.txt  # comment\n-rtight.txt\n-c constraints.txt\n--constraint c2.txt\n-e .\nDjango==5.0\n-r https://example.com/r.txt\n'),
    ['base.txt', 'dev.txt', 'more.txt', 'tight.txt', 'constraints.txt', 'c2.txt'],
  );
});

t.test('a Django app whose requirements.txt includes requirements/base.txt is detected as django', async (t) => {
  const { c, view } = await scan('django-included', {
    'manage.py': MANAGE,
    'requirements.txt': '-r requirements/base.txt\n',
    'requirements/base.txt': '-r common.txt\ngunicorn==22.0\n',
    'requirements/common.txt': 'Django==5.0.6\n',
  });
  t.equal(c.language, 'python');
  t.equal(c.framework, 'django', 'the framework comes from the included file');
  t.ok(c.evidence.some((e) => e.file === 'requirements/common.txt'), 'the evidence names the included file that declares Django');
  t.ok(view.filesRead.includes('requirements/base.txt') && view.filesRead.includes('requirements/common.txt'), 'both levels were read');
});

t.test('include cycles end, and includes outside the repository are never read', async (t) => {
  const { c, view } = await scan('django-cycle', {
    'manage.py': MANAGE,
    'requirements.txt': '-r a.txt\n-r ../../etc/passwd\n-r /etc/passwd\n-c ../outside.txt\n',
    'a.txt': '-r b.txt\n',
    'b.txt': '-r a.txt\n-r requirements.txt\nDjango>=5\n',
  });
  t.equal(c.framework, 'django', 'found through a -> b despite the cycle');
  t.same(view.filesRead.filter((p) => p.endsWith('.txt')).sort(), ['a.txt', 'b.txt', 'requirements.txt'], 'each file read once, nothing outside');
  t.notOk(view.filesRead.some((p) => p.includes('..') || p.startsWith('/')), 'no path leaves the repository');
});

t.test('includes are bounded in depth', async (t) => {
  const files: Record<string, string> = { 'manage.py': MANAGE, 'requirements.txt': '-r r1.txt\n' };
  for (let i = 1; i <= 9; i++) files[`r${i}.txt`] = i === 9 ? 'Django==5.0\n' : `-r r${i + 1}.txt\n`;
  const { c, view } = await scan('django-deep', files);
  t.equal(c.framework, null, 'a dependency nine includes deep is not reached');
  t.ok(view.filesRead.filter((p) => /^r\d\.txt$/.test(p)).length <= 5, 'at most five levels were read');
});

/**
 * Scan benchmark: how long one classification takes and how much it reads.
 *
 *   node --import tsx scripts/bench/scan.ts [--rounds 5] [--big-files 20000]
 *
 * 1. every fixture repo (test/fixtures/repos) as a local git checkout: median and p95 ms per
 *    scan (tree listing + manifest reads + rules), files read per scan;
 * 2. a large local repo (a monorepo plus --big-files files under docs/): ms per scan;
 * 3. the GitHub source against the fake GitHub on loopback (App auth): ms and HTTP requests
 *    per scan, with a complete tree and with a truncated one.
 * Figures are printed, never asserted.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GitHubClient } from '../../control-plane/src/providers/github/client.ts';
import { GitHubRepoSource } from '../../control-plane/src/providers/repo-source/github.ts';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import type { RepoRef, RepoSource } from '../../control-plane/src/providers/repo-source/types.ts';
import { classifyRepo } from '../../control-plane/src/services/scan/classify.ts';
import { RepoView } from '../../control-plane/src/services/scan/repo-view.ts';
import { FakeGitHub, filesOf } from '../../test/helpers/fake-github.ts';
import { FIXTURE_REPOS, commitFixture, git, tempReposDir } from '../../test/scan/fixture-repos.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, 'big-files': { type: 'string', default: '20000' } } });
const rounds = Number(values.rounds);
const bigFiles = Number(values['big-files']);

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))] ?? 0;
}

async function scanOnce(source: RepoSource, ref: RepoRef): Promise<{ ms: number; filesRead: number }> {
  const t0 = performance.now();
  const head = await source.head(ref);
  const view = await RepoView.open(source, ref, head.sha);
  await classifyRepo(view, { repo: `${ref.owner}/${ref.name}` });
  return { ms: performance.now() - t0, filesRead: view.filesRead.length };
}

const repos = await tempReposDir();
try {
  console.log(`scan benchmark: ${cpus().length} cpus, node ${process.version}, ${rounds} rounds`);
  const local = new LocalRepoSource({ reposDir: repos.dir });
  const fixtures = (await readdir(FIXTURE_REPOS)).sort();
  for (const f of fixtures) await commitFixture(repos.dir, f, 'fx', f);
  const times: number[] = [];
  let reads = 0;
  for (let r = 0; r < rounds; r++) {
    for (const f of fixtures) {
      const s = await scanOnce(local, { owner: 'fx', name: f });
      times.push(s.ms);
      reads += s.filesRead;
    }
  }
  times.sort((a, b) => a - b);
  console.log(`local fixtures (${fixtures.length} repos): median ${pct(times, 0.5).toFixed(1)} ms, p95 ${pct(times, 0.95).toFixed(1)} ms per scan, ${(reads / times.length).toFixed(1)} files read per scan`);

  const bigDir = join(repos.dir, 'fx', 'big');
  await commitFixture(repos.dir, 'monorepo-workspaces', 'fx', 'big');
  for (let i = 0; i < bigFiles; i += 500) {
    const d = join(bigDir, 'docs', `d${i / 500}`);
    await mkdir(d, { recursive: true });
    await Promise.all(Array.from({ length: Math.min(500, bigFiles - i) }, (_, j) => writeFile(join(d, `p${j}.md`), `# ${i + j}\n`)));
  }
  await git(bigDir, 'add', '-A');
  await git(bigDir, 'commit', '-q', '-m', 'docs');
  const big: number[] = [];
  let bigReads = 0;
  for (let r = 0; r < rounds; r++) {
    const s = await scanOnce(local, { owner: 'fx', name: 'big' });
    big.push(s.ms);
    bigReads = s.filesRead;
  }
  big.sort((a, b) => a - b);
  console.log(`local large repo (${bigFiles + 5} files): median ${pct(big, 0.5).toFixed(1)} ms per scan, ${bigReads} files read`);

  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const files = await filesOf(join(FIXTURE_REPOS, 'monorepo-workspaces'));
  for (let i = 0; i < 2000; i++) files[`docs/p${i}.md`] = `# ${i}`;
  for (const truncate of [undefined, 50]) {
    const fake = await FakeGitHub.start({ app: { id: '1', publicKey }, ...(truncate !== undefined && { truncateTreesOver: truncate }), repos: [{ owner: 'o', name: 'r', files, installationId: 1 }] });
    const source = new GitHubRepoSource(new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: '1', privateKey } }));
    await scanOnce(source, { owner: 'o', name: 'r' }); // warm: installation lookup and token
    const before = fake.requests.length;
    const gh: number[] = [];
    for (let r = 0; r < rounds; r++) gh.push((await scanOnce(source, { owner: 'o', name: 'r' })).ms);
    gh.sort((a, b) => a - b);
    const perScan = (fake.requests.length - before) / rounds;
    console.log(
      `github (fake, loopback, ${Object.keys(files).length} files, ${truncate === undefined ? 'complete tree' : 'truncated tree'}): median ${pct(gh, 0.5).toFixed(1)} ms, ${perScan.toFixed(1)} HTTP requests per scan (token cached), ${fake.tokenRequests} token request(s) in total`,
    );
    await fake.close();
  }
} finally {
  await repos.cleanup();
}

import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const FIXTURE_REPOS = join(import.meta.dirname, '..', 'fixtures', 'repos');

const GIT_ENV = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: tmpdir(),
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'VMKit Test',
  GIT_AUTHOR_EMAIL: 'test@vmkit.invalid',
  GIT_COMMITTER_NAME: 'VMKit Test',
  GIT_COMMITTER_EMAIL: 'test@vmkit.invalid',
  GIT_AUTHOR_DATE: '2026-01-01T00:00:00Z',
  GIT_COMMITTER_DATE: '2026-01-01T00:00:00Z',
  // No background gc/maintenance writing into .git while a test removes it.
  GIT_CONFIG_COUNT: '2',
  GIT_CONFIG_KEY_0: 'gc.auto',
  GIT_CONFIG_VALUE_0: '0',
  GIT_CONFIG_KEY_1: 'maintenance.auto',
  GIT_CONFIG_VALUE_1: 'false',
};

export async function git(dir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('git', ['-C', dir, ...args], { env: GIT_ENV });
  return stdout.trim();
}

/** A temp directory laid out as `<reposDir>/<owner>/<name>`; removed by the returned cleanup. */
export async function tempReposDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-repos-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 }) };
}

/** Copies test/fixtures/repos/<fixture> to <reposDir>/<owner>/<name> and commits it; returns the head sha. */
export async function commitFixture(reposDir: string, fixture: string, owner: string, name: string): Promise<string> {
  const dir = join(reposDir, owner, name);
  await mkdir(dir, { recursive: true });
  await cp(join(FIXTURE_REPOS, fixture), dir, { recursive: true });
  await git(dir, 'init', '-q', '-b', 'main');
  await git(dir, 'add', '-A');
  await git(dir, 'commit', '-q', '-m', `fixture ${fixture}`);
  return git(dir, 'rev-parse', 'HEAD');
}

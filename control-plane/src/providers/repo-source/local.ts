import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { isSafeRepoPath, repoFullName } from './ref.ts';
import { DEFAULT_MAX_FILE_BYTES, RepoSourceError } from './types.ts';
import type { RepoHead, RepoRef, RepoSource, RepoTree, TreeEntry } from './types.ts';

export interface LocalRepoSourceOptions {
  /** Holds `<owner>/<name>` git checkouts; default `<dataDir>/repos`. */
  reposDir: string;
  /** Which git to run; default `git` from PATH. */
  gitBinary?: string;
  /** Per git invocation. */
  timeoutMs?: number;
}

/** Trees larger than this are reported as truncated, like GitHub does. */
const MAX_TREE_ENTRIES = 100_000;
const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

interface GitResult {
  code: number;
  stdout: Buffer;
  stderr: string;
  overflow: boolean;
}

/**
 * Repositories in a directory of git checkouts: `owner/name` → `<reposDir>/owner/name`.
 * Only committed content counts (trees and blobs come from git objects, never the work
 * tree), and git always runs as an argument array, never through a shell.
 */
export class LocalRepoSource implements RepoSource {
  readonly kind = 'local' as const;
  readonly #root: string;
  readonly #git: string;
  readonly #timeoutMs: number;

  constructor(opts: LocalRepoSourceOptions) {
    this.#root = resolve(opts.reposDir);
    this.#git = opts.gitBinary ?? 'git';
    this.#timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /** The checkout directory of a repo; refuses anything that would leave reposDir. */
  pathOf(repo: RepoRef): string {
    const dir = resolve(this.#root, repo.owner, repo.name);
    const rel = relative(this.#root, dir);
    if (rel === '' || rel.startsWith('..') || rel.split(sep).length !== 2 || !isSafeRepoPath(`${repo.owner}/${repo.name}`)) {
      throw notFound(repo);
    }
    return dir;
  }

  async head(repo: RepoRef): Promise<RepoHead> {
    const dir = await this.#checkout(repo);
    const rev = await this.#run(dir, ['rev-parse', '--verify', '--quiet', 'HEAD^{commit}']);
    const sha = rev.stdout.toString('utf8').trim();
    if (rev.stderr.includes('dubious ownership')) {
      // An operator problem, not a missing repo: git refuses checkouts owned by another user.
      throw new Error(`git refuses the checkout of ${repoFullName(repo)} (owned by another user); add it to safe.directory or fix its owner`);
    }
    if (rev.code !== 0 || !SHA.test(sha)) {
      throw new RepoSourceError('repo_not_found', `The local checkout of ${repoFullName(repo)} has no commits.`);
    }
    return { sha, defaultBranch: await this.#defaultBranch(dir) };
  }

  async listTree(repo: RepoRef, sha: string): Promise<RepoTree> {
    const dir = await this.#checkout(repo);
    // No --long here: sizes would cost an object lookup per blob; reads are capped anyway.
    const res = await this.#run(dir, ['ls-tree', '-r', '-t', '-z', '--full-tree', checkSha(sha)], 64 * 1024 * 1024);
    if (res.code !== 0 && !res.overflow) throw gitFailed(repo, res);
    const entries = parseLsTree(res.stdout.toString('utf8'), '');
    const truncated = res.overflow || entries.length > MAX_TREE_ENTRIES;
    return { entries: truncated ? entries.slice(0, MAX_TREE_ENTRIES) : entries, truncated };
  }

  async listDir(repo: RepoRef, sha: string, dirPath: string): Promise<TreeEntry[]> {
    if (!isSafeRepoPath(dirPath)) return [];
    const dir = await this.#checkout(repo);
    const treeish = dirPath === '' ? checkSha(sha) : `${checkSha(sha)}:${dirPath}`;
    const res = await this.#run(dir, ['ls-tree', '-z', '--long', treeish]);
    if (res.code !== 0) return [];
    return parseLsTree(res.stdout.toString('utf8'), dirPath);
  }

  async readFile(repo: RepoRef, sha: string, path: string, maxBytes = DEFAULT_MAX_FILE_BYTES): Promise<string | null> {
    if (!isSafeRepoPath(path) || path === '') return null;
    const dir = await this.#checkout(repo);
    // One exec: cat-file fails on anything but a blob, and the buffer cap stops large files.
    // cat-file, not show: raw blob bytes, no textconv or filters from the repo's config.
    const res = await this.#run(dir, ['cat-file', 'blob', `${checkSha(sha)}:${path}`], maxBytes);
    if (res.code !== 0 || res.overflow) return null;
    return res.stdout.toString('utf8');
  }

  async #checkout(repo: RepoRef): Promise<string> {
    const dir = this.pathOf(repo);
    // A work-tree checkout has .git; a bare mirror has HEAD at its top.
    const isRepo = (await exists(join(dir, '.git'))) || (await exists(join(dir, 'HEAD')));
    if (!isRepo) throw notFound(repo);
    return dir;
  }

  async #defaultBranch(dir: string): Promise<string | null> {
    // A clone knows its remote's default branch; a plain checkout offers its current branch.
    const remote = await this.#run(dir, ['symbolic-ref', '--quiet', '--short', 'refs/remotes/origin/HEAD']);
    const remoteName = remote.stdout.toString('utf8').trim();
    if (remote.code === 0 && remoteName.startsWith('origin/')) return remoteName.slice('origin/'.length);
    const current = await this.#run(dir, ['symbolic-ref', '--quiet', '--short', 'HEAD']);
    const name = current.stdout.toString('utf8').trim();
    return current.code === 0 && name !== '' ? name : null;
  }

  #run(cwd: string, args: string[], maxBuffer = 4 * 1024 * 1024): Promise<GitResult> {
    return new Promise((resolvePromise, reject) => {
      execFile(
        this.#git,
        // No pager, no repo-configured fsmonitor hook, no prompts: reading objects only.
        ['-c', 'core.fsmonitor=false', '--no-pager', '-C', cwd, ...args],
        {
          encoding: 'buffer',
          maxBuffer,
          timeout: this.#timeoutMs,
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', HOME: process.env.HOME ?? '/' },
        },
        (err, stdout, stderr) => {
          if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
            reject(new Error(`git is not installed (looked for "${this.#git}")`));
            return;
          }
          const overflow = err?.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER';
          const code = err ? (typeof err.code === 'number' ? err.code : overflow ? 0 : 1) : 0;
          resolvePromise({ code, stdout, stderr: stderr.toString('utf8'), overflow });
        },
      );
    });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function checkSha(sha: string): string {
  if (!SHA.test(sha)) throw new RepoSourceError('invalid_request', `Not a commit sha: ${sha.slice(0, 80)}`);
  return sha;
}

function notFound(repo: RepoRef): RepoSourceError {
  return new RepoSourceError('repo_not_found', `No local checkout of ${repoFullName(repo)} exists in the repositories directory.`);
}

function gitFailed(repo: RepoRef, res: GitResult): Error {
  return new Error(`git failed on ${repoFullName(repo)}: ${res.stderr.trim().slice(0, 300)}`);
}

/** `<mode> SP <type> SP <object> [SP+ <size>] TAB <path> NUL` records of `ls-tree -z [--long]`. */
function parseLsTree(out: string, prefix: string): TreeEntry[] {
  const entries: TreeEntry[] = [];
  for (const record of out.split('\0')) {
    const tab = record.indexOf('\t');
    if (tab < 0) continue;
    const [, type, , size] = record.slice(0, tab).split(/ +/);
    const name = record.slice(tab + 1);
    const path = prefix === '' ? name : `${prefix}/${name}`;
    if (type === 'tree') entries.push({ path, type: 'dir' });
    else if (type === 'blob') entries.push({ path, type: 'file', size: size === undefined ? undefined : Number(size) });
    // commits (submodules) are neither: their contents are not in this repository.
  }
  return entries;
}

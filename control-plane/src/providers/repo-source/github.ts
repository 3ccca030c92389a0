import { GitHubError } from '../github/errors.ts';
import type { GitHubClient } from '../github/client.ts';
import { isSafeRepoPath, repoFullName } from './ref.ts';
import { DEFAULT_MAX_FILE_BYTES, RepoSourceError } from './types.ts';
import type { RepoHead, RepoRef, RepoSource, RepoTree, TreeEntry } from './types.ts';

/**
 * Repositories read through GitHub's REST API: the default branch from the repo, its
 * head commit, one recursive tree call (falling back to per-directory contents listings
 * when GitHub truncates it), and single files through the contents API.
 */
export class GitHubRepoSource implements RepoSource {
  readonly kind = 'github' as const;
  readonly client: GitHubClient;
  constructor(client: GitHubClient) {
    this.client = client;
  }

  async head(repo: RepoRef): Promise<RepoHead> {
    return guard(repo, async () => {
      const info = await this.client.getRepo(repo);
      const sha = await this.client.getCommitSha(repo, info.default_branch);
      return { defaultBranch: info.default_branch, sha };
    });
  }

  async listTree(repo: RepoRef, sha: string): Promise<RepoTree> {
    return guard(repo, async () => {
      const tree = await this.client.getTree(repo, sha, true);
      const entries: TreeEntry[] = [];
      for (const item of tree.tree) {
        if (!isSafeRepoPath(item.path)) continue;
        if (item.type === 'blob') entries.push({ path: item.path, type: 'file', size: item.size });
        else if (item.type === 'tree') entries.push({ path: item.path, type: 'dir' });
      }
      return { entries, truncated: tree.truncated };
    });
  }

  async listDir(repo: RepoRef, sha: string, dir: string): Promise<TreeEntry[]> {
    if (!isSafeRepoPath(dir)) return [];
    return guard(repo, async () => {
      const items = await this.client.listDirectory(repo, dir, sha);
      return items
        .filter((i) => (i.type === 'file' || i.type === 'dir') && isSafeRepoPath(i.path))
        .map((i) => ({ path: i.path, type: i.type === 'dir' ? ('dir' as const) : ('file' as const), size: i.type === 'file' ? i.size : undefined }));
    });
  }

  async readFile(repo: RepoRef, sha: string, path: string, maxBytes = DEFAULT_MAX_FILE_BYTES): Promise<string | null> {
    if (!isSafeRepoPath(path) || path === '') return null;
    return guard(repo, async () => {
      const bytes = await this.client.getFile(repo, path, sha, maxBytes);
      return bytes === null ? null : bytes.toString('utf8');
    });
  }
}

/** GitHub failures → the error keys of the contract (and two of our own). */
async function guard<T>(repo: RepoRef, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof GitHubError)) throw err;
    switch (err.failure) {
      case 'not_found':
        throw new RepoSourceError('repo_not_found', `GitHub has no repository ${repoFullName(repo)} visible to VMKit.`);
      case 'app_not_installed':
        throw new RepoSourceError('github_app_not_installed', `The GitHub App is not installed on ${repoFullName(repo)}.`);
      case 'rate_limited':
        throw new RepoSourceError('github_rate_limited', err.message, { reset_at: err.resetAt?.toISOString() ?? null });
      default:
        throw new RepoSourceError('github_unavailable', err.message);
    }
  }
}

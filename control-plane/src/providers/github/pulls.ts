/** Pull requests: find-or-create by head branch, and whether one was merged. */
import type { GitHubClient, RepoCoords } from './client.ts';
import { GitHubError } from './errors.ts';
import { ok, writeFailure } from './failures.ts';

const READ = { pull_requests: 'read', metadata: 'read' } as const;
const WRITE = { pull_requests: 'write', metadata: 'read' } as const;

export interface PullRequest {
  number: number;
  state: 'open' | 'closed';
  merged: boolean;
  html_url: string;
  head: string;
  base: string;
  merge_commit_sha: string | null;
}

interface RawPull {
  number: number;
  state: 'open' | 'closed';
  merged?: boolean;
  merged_at?: string | null;
  html_url: string;
  head: { ref: string };
  base: { ref: string };
  merge_commit_sha?: string | null;
}

function view(p: RawPull): PullRequest {
  // The list endpoint has no `merged`; merged_at says the same.
  const merged = p.merged ?? (typeof p.merged_at === 'string' && p.merged_at !== '');
  return { number: p.number, state: p.state, merged, html_url: p.html_url, head: p.head.ref, base: p.base.ref, merge_commit_sha: p.merge_commit_sha ?? null };
}

function pullsPath(repo: RepoCoords, rest = ''): string {
  return `/repos/${encodeURIComponent(repo.owner)}/${encodeURIComponent(repo.name)}/pulls${rest}`;
}

/** Pull requests from `head` (a branch of this repo) into `base`, newest first; `state` open, closed or all. */
export async function listPulls(client: GitHubClient, repo: RepoCoords, head: string, base: string, state: 'open' | 'closed' | 'all'): Promise<PullRequest[]> {
  const q = new URLSearchParams({ state, head: `${repo.owner}:${head}`, base, per_page: '30', sort: 'created', direction: 'desc' });
  const res = await client.repoRequest<RawPull[]>(repo, 'GET', pullsPath(repo, `?${q.toString()}`), READ);
  if (!ok(res) || !Array.isArray(res.body)) throw writeFailure(res, 'list pull requests', 'Pull requests');
  return res.body.map(view);
}

export async function findOpenPull(client: GitHubClient, repo: RepoCoords, head: string, base: string): Promise<PullRequest | null> {
  return (await listPulls(client, repo, head, base, 'open'))[0] ?? null;
}

/** The open pull request from `head` into `base`, created when there is none. */
export async function ensurePull(
  client: GitHubClient,
  repo: RepoCoords,
  pr: { head: string; base: string; title: string; body: string },
): Promise<{ pull: PullRequest; created: boolean }> {
  const open = await findOpenPull(client, repo, pr.head, pr.base);
  if (open) return { pull: open, created: false };
  const res = await client.repoRequest<RawPull>(repo, 'POST', pullsPath(repo), WRITE, pr);
  if (res.status === 201) return { pull: view(res.body), created: true };
  if (res.status === 422) {
    // "A pull request already exists for owner:branch": a concurrent attempt opened it.
    const raced = await findOpenPull(client, repo, pr.head, pr.base);
    if (raced) return { pull: raced, created: false };
  }
  throw writeFailure(res, `open a pull request from ${pr.head} into ${pr.base}`, 'Pull requests');
}

export async function getPull(client: GitHubClient, repo: RepoCoords, number: number): Promise<PullRequest> {
  const res = await client.repoRequest<RawPull>(repo, 'GET', pullsPath(repo, `/${number}`), READ);
  if (res.status === 404) throw new GitHubError('not_found', `${repo.owner}/${repo.name} has no pull request #${number}.`, 404);
  if (!ok(res)) throw writeFailure(res, `read pull request #${number}`, 'Pull requests');
  return view(res.body);
}

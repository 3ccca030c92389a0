/**
 * Branches and files through the REST API (git refs and contents), each call
 * idempotent so a deploy retried after a crash finds what it already did.
 */
import { githubMessage } from './client.ts';
import type { GitHubClient, RepoCoords } from './client.ts';
import { GitHubError } from './errors.ts';
import { ok, writeFailure } from './failures.ts';

type Permissions = Readonly<Record<string, 'read' | 'write'>>;
const READ: Permissions = { contents: 'read', metadata: 'read' };
const WRITE: Permissions = { contents: 'write', metadata: 'read' };
/** Files under .github/workflows/ need the Workflows permission on top of Contents. */
const WRITE_WORKFLOW: Permissions = { contents: 'write', workflows: 'write', metadata: 'read' };

export interface RepoFile {
  path: string;
  /** The blob sha, which a later PUT of the same path must name. */
  sha: string;
  text: string;
}

function repoPath(repo: RepoCoords, rest: string): string {
  return `/repos/${encodeURIComponent(repo.owner)}/${encodeURIComponent(repo.name)}${rest}`;
}

function filePath(path: string): string {
  return path.split('/').filter(Boolean).map(encodeURIComponent).join('/');
}

/** The default branch and the commit it points at; repo_empty when there is none yet. */
export async function defaultBranchHead(client: GitHubClient, repo: RepoCoords): Promise<{ branch: string; sha: string }> {
  const info = await client.repoRequest<{ default_branch?: string }>(repo, 'GET', repoPath(repo, ''), READ);
  if (info.status === 404) throw new GitHubError('not_found', `GitHub has no repository ${repo.owner}/${repo.name} visible to VMKit.`, 404);
  if (!ok(info) || typeof info.body.default_branch !== 'string') throw writeFailure(info, 'read the repository', 'Metadata');
  const branch = info.body.default_branch;
  const sha = await getBranchSha(client, repo, branch);
  if (sha === null) {
    throw new GitHubError('repo_empty', `${repo.owner}/${repo.name} has no commit on its default branch ${branch}; push a first commit, then deploy again.`, 404);
  }
  return { branch, sha };
}

/** The commit a branch points at; null when there is no such branch. */
export async function getBranchSha(client: GitHubClient, repo: RepoCoords, branch: string): Promise<string | null> {
  const res = await client.repoRequest<{ object?: { sha?: string } }>(repo, 'GET', repoPath(repo, `/git/ref/heads/${filePath(branch)}`), READ);
  if (res.status === 404) return null;
  if (!ok(res)) throw writeFailure(res, `read branch ${branch}`, 'Contents');
  const sha = res.body.object?.sha;
  if (typeof sha !== 'string') throw new GitHubError('upstream', `GitHub answered branch ${branch} without a sha.`, res.status);
  return sha;
}

/** Creates `branch` at `fromSha`, or finds it when it already exists (its current sha). */
export async function ensureBranch(client: GitHubClient, repo: RepoCoords, branch: string, fromSha: string): Promise<{ sha: string; created: boolean }> {
  const res = await client.repoRequest<{ object?: { sha?: string } }>(repo, 'POST', repoPath(repo, '/git/refs'), WRITE, { ref: `refs/heads/${branch}`, sha: fromSha });
  if (res.status === 201) return { sha: res.body.object?.sha ?? fromSha, created: true };
  if (res.status === 422) {
    // "Reference already exists": an earlier attempt made it.
    const existing = await getBranchSha(client, repo, branch);
    if (existing !== null) return { sha: existing, created: false };
  }
  throw writeFailure(res, `create branch ${branch}`, 'Contents');
}

/** A file's text and blob sha on `ref`; null when it does not exist. */
export async function getContent(client: GitHubClient, repo: RepoCoords, path: string, ref: string): Promise<RepoFile | null> {
  const res = await client.repoRequest<{ type?: string; sha?: string; encoding?: string; content?: string } | unknown[]>(
    repo,
    'GET',
    repoPath(repo, `/contents/${filePath(path)}?ref=${encodeURIComponent(ref)}`),
    READ,
  );
  if (res.status === 404) return null;
  if (!ok(res)) throw writeFailure(res, `read ${path}`, 'Contents');
  const body = res.body;
  if (Array.isArray(body) || body.type !== 'file' || typeof body.sha !== 'string') {
    throw new GitHubError('validation', `${path} on ${ref} is not a file.`, res.status);
  }
  if (body.encoding !== 'base64' || typeof body.content !== 'string') throw new GitHubError('upstream', `GitHub answered ${path} without base64 content (over 1 MB?).`, res.status);
  return { path, sha: body.sha, text: Buffer.from(body.content.replace(/\s+/g, ''), 'base64').toString('utf8') };
}

export interface PutFile {
  path: string;
  text: string;
  message: string;
  branch: string;
  /** The blob sha of the file being replaced; required by GitHub when the file exists. */
  sha?: string;
}

/** Creates or replaces one file with one commit; 409 (changed meanwhile) is github_conflict. */
export async function putContent(client: GitHubClient, repo: RepoCoords, file: PutFile): Promise<{ commitSha: string; blobSha: string }> {
  const workflow = file.path.startsWith('.github/workflows/');
  if (workflow) await explainMissingWorkflows(client, repo, file.path);
  const res = await client.repoRequest<{ content?: { sha?: string }; commit?: { sha?: string } }>(
    repo,
    'PUT',
    repoPath(repo, `/contents/${filePath(file.path)}`),
    workflow ? WRITE_WORKFLOW : WRITE,
    { message: file.message, content: Buffer.from(file.text, 'utf8').toString('base64'), branch: file.branch, ...(file.sha ? { sha: file.sha } : {}) },
  );
  if (res.status === 200 || res.status === 201) {
    const commitSha = res.body.commit?.sha;
    const blobSha = res.body.content?.sha;
    if (typeof commitSha !== 'string' || typeof blobSha !== 'string') throw new GitHubError('upstream', `GitHub answered the write of ${file.path} without shas.`, res.status);
    return { commitSha, blobSha };
  }
  if (res.status === 422 && /"?sha"? wasn't supplied/i.test(githubMessage(res.body))) {
    throw new GitHubError('conflict', `${file.path} already exists on ${file.branch}; read it again (its blob sha) and retry.`, res.status);
  }
  throw writeFailure(res, `write ${file.path} on ${file.branch}`, workflow ? 'Workflows' : 'Contents');
}

/**
 * Makes `path` on `branch` hold `text`: nothing when it already does, otherwise a PUT
 * naming the current blob sha. Idempotent, so a retried deploy adds no empty commits.
 */
export async function upsertFile(client: GitHubClient, repo: RepoCoords, file: Omit<PutFile, 'sha'>): Promise<{ changed: boolean; blobSha: string }> {
  const current = await getContent(client, repo, file.path, file.branch);
  if (current?.text === file.text) return { changed: false, blobSha: current.sha };
  const put = await putContent(client, repo, { ...file, ...(current ? { sha: current.sha } : {}) });
  return { changed: true, blobSha: put.blobSha };
}

/**
 * An App token asking for Workflows is refused at creation (422 "permissions requested
 * are not granted") when the installation lacks it. When a Contents-only token still
 * comes, Workflows is the missing one: say so instead of the generic refusal.
 */
async function explainMissingWorkflows(client: GitHubClient, repo: RepoCoords, path: string): Promise<void> {
  try {
    await client.installationToken(repo, WRITE_WORKFLOW);
  } catch (err) {
    if (!(err instanceof GitHubError) || err.failure !== 'permission_missing') throw err;
    await client.installationToken(repo, WRITE);
    throw new GitHubError(
      'permission_missing',
      `GitHub refused to write ${path}: the GitHub App lacks the "Workflows" repository permission (read and write), which files under .github/workflows/ need. Add it in the App's settings (Permissions & events); every existing installation must then approve the new permission.`,
      err.status,
    );
  }
}

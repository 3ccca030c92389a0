import type { RepoRef } from './types.ts';

// GitHub's own limits: owners are 1-39 alphanumerics or single inner hyphens; repo
// names are up to 100 of [A-Za-z0-9._-]. "." and ".." are refused so a ref can never
// name a parent directory when it becomes a path.
const OWNER = /^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$/;
const NAME = /^[A-Za-z0-9._-]{1,100}$/;

/** `owner/name` → RepoRef, or null when it is not a well-formed GitHub repository name. */
export function parseRepoRef(value: string): RepoRef | null {
  const parts = value.split('/');
  if (parts.length !== 2) return null;
  const [owner, name] = parts as [string, string];
  if (!OWNER.test(owner) || !NAME.test(name) || name === '.' || name === '..') return null;
  return { owner, name };
}

export function repoFullName(ref: RepoRef): string {
  return `${ref.owner}/${ref.name}`;
}

/**
 * A relative path inside a repository: no leading slash, no empty, `.` or `..`
 * segments, no NUL. Paths come from trees we listed, but a source checks anyway.
 */
export function isSafeRepoPath(path: string): boolean {
  if (path === '') return true;
  if (path.includes('\0') || path.startsWith('/') || path.includes('\\')) return false;
  return path.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

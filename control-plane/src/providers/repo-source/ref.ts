import { parseRepoFullName } from '@vmkit/protocol';
import type { RepoRef } from './types.ts';

/** `owner/name` → RepoRef, or null when it is not a well-formed GitHub repository name (@vmkit/protocol's rule). */
export function parseRepoRef(value: string): RepoRef | null {
  return parseRepoFullName(value);
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

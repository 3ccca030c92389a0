import { z } from 'zod';

/**
 * GitHub's rules for `owner/name`, the one parser every side uses (connect, scan, MCP):
 * an owner is 1-39 alphanumerics or single hyphens between them (no leading, trailing
 * or doubled hyphen); a repository name is 1-100 of [A-Za-z0-9._-] and never `.` or
 * `..`, so a name can never climb out of a directory once it becomes a path.
 */
const OWNER = /^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$/;
const NAME = /^[A-Za-z0-9._-]{1,100}$/;

export interface RepoFullName {
  owner: string;
  name: string;
}

/** Why `value` is not `owner/name`, or null when it is. */
export function repoFullNameProblem(value: string): string | null {
  const parts = value.split('/');
  if (parts.length !== 2) return 'must be owner/name';
  const [owner, name] = parts as [string, string];
  if (!OWNER.test(owner)) return 'the owner must be 1-39 letters, digits or single hyphens, not starting or ending with a hyphen';
  if (!NAME.test(name) || name === '.' || name === '..') return 'the repository name must be 1-100 letters, digits, ".", "_" or "-", and not "." or ".."';
  return null;
}

/** `owner/name` split in two, or null when it is not a well-formed GitHub repository name. */
export function parseRepoFullName(value: string): RepoFullName | null {
  if (repoFullNameProblem(value) !== null) return null;
  const [owner, name] = value.split('/') as [string, string];
  return { owner, name };
}

export const repoFullNameSchema = z
  .string()
  .max(140)
  .superRefine((value, ctx) => {
    const problem = repoFullNameProblem(value);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });

/** Why a GitHub call failed, in the terms the scan service maps to error keys. */
export type GitHubFailure =
  /** 404: the repository (or path) does not exist or the credentials cannot see it. */
  | 'not_found'
  /** The GitHub App has no installation on the repository. */
  | 'app_not_installed'
  /** Primary or secondary rate limit; `resetAt` says when to retry. */
  | 'rate_limited'
  /** 401, or 403 without a rate limit: the configured credentials are wrong or lack access. */
  | 'auth_failed'
  /** The App (or token) lacks a permission the call needs; the message names it. */
  | 'permission_missing'
  /** 409 on a write: the file, branch or pull request changed meanwhile. */
  | 'conflict'
  /** 409 "Git Repository is empty": nothing to branch from. */
  | 'repo_empty'
  /** 422 that is not one of the above: GitHub refused the request as invalid. */
  | 'validation'
  /** Anything else: 5xx, timeouts, malformed answers. */
  | 'upstream';

export class GitHubError extends Error {
  override name = 'GitHubError';
  readonly failure: GitHubFailure;
  readonly status: number | null;
  /** When a rate limit lifts (rate_limited only). */
  readonly resetAt: Date | null;
  constructor(
    failure: GitHubFailure,
    message: string,
    status: number | null = null,
    /** When a rate limit lifts (rate_limited only). */
    resetAt: Date | null = null,
  ) {
    super(message);
    this.failure = failure;
    this.status = status;
    this.resetAt = resetAt;
  }
}

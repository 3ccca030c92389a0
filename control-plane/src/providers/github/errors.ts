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
  /** Anything else: 5xx, timeouts, malformed answers. */
  | 'upstream';

export class GitHubError extends Error {
  override name = 'GitHubError';
  constructor(
    readonly failure: GitHubFailure,
    message: string,
    readonly status: number | null = null,
    /** When a rate limit lifts (rate_limited only). */
    readonly resetAt: Date | null = null,
  ) {
    super(message);
  }
}

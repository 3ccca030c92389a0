import type { ErrorKey } from '@vmkit/protocol';
import { githubMessage } from './client.ts';
import type { GitHubResponse } from './client.ts';
import { GitHubError } from './errors.ts';

/**
 * A refused write, classified in GitHub's own words: the Workflows permission, an empty
 * repository, a conflict, a permission the token does not carry. `permission` names
 * what the call needs, for the message.
 */
export function writeFailure(res: GitHubResponse<unknown>, what: string, permission: string): GitHubError {
  const message = githubMessage(res.body);
  if (/refusing to allow a GitHub App to create or update workflow/i.test(message) || /without `?workflows?`? (permission|scope)/i.test(message)) {
    return new GitHubError(
      'permission_missing',
      `GitHub refused to ${what}: the GitHub App lacks the "Workflows" repository permission (read and write), which files under .github/workflows/ need. Add it in the App's settings (Permissions & events); every existing installation must then approve the new permission. (GitHub said: ${message})`,
      res.status,
    );
  }
  if (res.status === 409 && /repository is empty/i.test(message)) {
    return new GitHubError('repo_empty', `GitHub refused to ${what}: the repository is empty. Push a first commit to its default branch, then deploy again.`, res.status);
  }
  if (res.status === 409) return new GitHubError('conflict', `GitHub refused to ${what}: it changed meanwhile (${message}); read it again and retry.`, res.status);
  if (res.status === 403 && /not accessible by integration/i.test(message)) {
    return new GitHubError(
      'permission_missing',
      `GitHub refused to ${what}: the GitHub App lacks the "${permission}" repository permission. Add it in the App's settings; existing installations must then approve it.`,
      res.status,
    );
  }
  if (res.status === 401 || res.status === 403) return new GitHubError('auth_failed', `GitHub refused to ${what} (${res.status}: ${message}).`, res.status);
  if (res.status === 404) return new GitHubError('not_found', `GitHub found nothing to ${what} (${message}).`, res.status);
  if (res.status === 422) return new GitHubError('validation', `GitHub refused to ${what}: ${message}`, res.status);
  return new GitHubError('upstream', `GitHub answered ${res.status} when asked to ${what}: ${message}`, res.status);
}

/**
 * The registered error key a GitHubError from the deploy calls answers with; `fallback`
 * for GitHub refusing the request itself (a step names its own, e.g.
 * workflow_dispatch_failed).
 */
export function githubErrorKey(err: GitHubError, fallback: ErrorKey = 'invalid_request'): ErrorKey {
  switch (err.failure) {
    case 'not_found':
      return 'repo_not_found';
    case 'app_not_installed':
      return 'github_app_not_installed';
    case 'rate_limited':
      return 'github_rate_limited';
    case 'permission_missing':
      return 'github_permission_missing';
    case 'repo_empty':
      return 'github_repo_empty';
    case 'conflict':
      return 'github_conflict';
    case 'validation':
      return fallback;
    default:
      return 'github_unavailable';
  }
}

export function ok(res: GitHubResponse<unknown>): boolean {
  return res.status >= 200 && res.status < 300;
}

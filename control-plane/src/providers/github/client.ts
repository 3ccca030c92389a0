import type { KeyObject } from 'node:crypto';
import { createAppJwt, loadAppPrivateKey } from './app-jwt.ts';
import { GitHubError } from './errors.ts';

/** Either a GitHub App (preferred: per-repo, short-lived, least-privilege tokens) or one token. */
export type GitHubAuth =
  | { kind: 'app'; appId: string; privateKey: string | KeyObject }
  | { kind: 'token'; token: string };

export interface GitHubClientOptions {
  auth: GitHubAuth;
  /** https://api.github.com, or `https://<host>/api/v3` for GitHub Enterprise Server. */
  apiBaseUrl?: string;
  userAgent?: string;
  /** Per HTTP request. */
  timeoutMs?: number;
  /** An installation token is renewed this long before GitHub says it expires. */
  tokenRefreshMarginMs?: number;
  /** How long a repo → installation id lookup is reused. */
  installationCacheTtlMs?: number;
  /** Upper bound on pages one `paginate` call follows. */
  maxPages?: number;
  now?: () => number;
}

/** What installation tokens for repository reads ask for: nothing more. */
export const READ_ONLY_PERMISSIONS: Readonly<Record<string, 'read' | 'write'>> = { contents: 'read', metadata: 'read' };

export interface RepoCoords {
  owner: string;
  name: string;
}

export interface GitHubRepo {
  full_name: string;
  default_branch: string;
  private: boolean;
}

export interface GitHubTreeItem {
  path: string;
  type: 'blob' | 'tree' | 'commit';
  sha: string;
  size?: number;
}

export interface GitHubTree {
  sha: string;
  tree: GitHubTreeItem[];
  truncated: boolean;
}

export interface GitHubContentItem {
  type: 'file' | 'dir' | 'symlink' | 'submodule';
  name: string;
  path: string;
  size: number;
}

interface GitHubFile extends GitHubContentItem {
  encoding?: string;
  content?: string;
}

interface CachedToken {
  token: string;
  /** When we stop using it (GitHub's expiry minus the margin). */
  renewAtMs: number;
}

interface Response<T> {
  status: number;
  body: T;
  headers: Headers;
}

export type GitHubResponse<T> = Response<T>;
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

const API_VERSION = '2022-11-28';

/**
 * A small GitHub REST client over the built-in fetch: App JWT → installation token
 * (cached, per repository, read-only by default) or a plain token, pagination through
 * Link headers with the origin pinned to the API base, and every failure classified
 * as a GitHubError (not_found, app_not_installed, rate_limited with the reset time,
 * auth_failed, upstream).
 */
export class GitHubClient {
  readonly apiBaseUrl: string;
  readonly #auth: { kind: 'app'; appId: string; key: KeyObject } | { kind: 'token'; token: string };
  readonly #userAgent: string;
  readonly #timeoutMs: number;
  readonly #marginMs: number;
  readonly #installationTtlMs: number;
  readonly #maxPages: number;
  readonly #now: () => number;
  readonly #origin: string;
  #jwt: { jwt: string; expiresAtMs: number } | null = null;
  readonly #installations = new Map<string, { id: number; untilMs: number }>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #pendingTokens = new Map<string, Promise<string>>();

  constructor(opts: GitHubClientOptions) {
    const base = new URL(opts.apiBaseUrl ?? 'https://api.github.com');
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new Error('the GitHub API base URL must be http(s)');
    this.apiBaseUrl = base.toString().replace(/\/+$/, '');
    this.#origin = base.origin;
    this.#auth =
      opts.auth.kind === 'app'
        ? { kind: 'app', appId: opts.auth.appId, key: loadAppPrivateKey(opts.auth.privateKey) }
        : { kind: 'token', token: opts.auth.token };
    this.#userAgent = opts.userAgent ?? 'vmkit-control-plane';
    this.#timeoutMs = opts.timeoutMs ?? 15_000;
    this.#marginMs = opts.tokenRefreshMarginMs ?? 5 * 60_000;
    this.#installationTtlMs = opts.installationCacheTtlMs ?? 10 * 60_000;
    this.#maxPages = opts.maxPages ?? 50;
    this.#now = opts.now ?? Date.now;
  }

  get authKind(): 'app' | 'token' {
    return this.#auth.kind;
  }

  // ---- repository reads -------------------------------------------------------------

  async getRepo(repo: RepoCoords): Promise<GitHubRepo> {
    const res = await this.#repoCall<GitHubRepo>(repo, `/repos/${seg(repo.owner)}/${seg(repo.name)}`);
    if (res.status === 404) throw repoNotFound(repo);
    return res.body;
  }

  /** The commit sha a branch, tag or sha points at. */
  async getCommitSha(repo: RepoCoords, ref: string): Promise<string> {
    const res = await this.#repoCall<{ sha: string }>(repo, `/repos/${seg(repo.owner)}/${seg(repo.name)}/commits/${seg(ref)}`);
    if (res.status === 404 || res.status === 422) throw repoNotFound(repo);
    if (typeof res.body.sha !== 'string') throw new GitHubError('upstream', 'GitHub answered a commit without a sha.', res.status);
    return res.body.sha;
  }

  async getTree(repo: RepoCoords, sha: string, recursive: boolean): Promise<GitHubTree> {
    const q = recursive ? '?recursive=1' : '';
    const res = await this.#repoCall<GitHubTree>(repo, `/repos/${seg(repo.owner)}/${seg(repo.name)}/git/trees/${seg(sha)}${q}`);
    if (res.status === 404) throw repoNotFound(repo);
    return res.body;
  }

  /** Entries of a directory through the contents API; [] when it does not exist. */
  async listDirectory(repo: RepoCoords, path: string, ref: string): Promise<GitHubContentItem[]> {
    const res = await this.#repoCall<GitHubContentItem[] | GitHubFile>(repo, contentsPath(repo, path, ref));
    if (res.status === 404) return [];
    return Array.isArray(res.body) ? res.body : [];
  }

  /** A file's bytes through the contents API; null when it does not exist or is not a file. */
  async getFile(repo: RepoCoords, path: string, ref: string, maxBytes: number): Promise<Buffer | null> {
    const res = await this.#repoCall<GitHubContentItem[] | GitHubFile>(repo, contentsPath(repo, path, ref));
    if (res.status === 404 || Array.isArray(res.body) || res.body.type !== 'file') return null;
    if (res.body.size > maxBytes) return null;
    // Files over 1 MB come back with encoding "none"; we never read those for classification.
    if (res.body.encoding !== 'base64' || typeof res.body.content !== 'string') return null;
    return Buffer.from(res.body.content.replace(/\s+/g, ''), 'base64');
  }

  /**
   * Every item of a paginated list endpoint, following `Link: <...>; rel="next"` up to
   * `maxPages`. `pick` extracts the array when the endpoint wraps it in an object.
   */
  async paginate<T>(repo: RepoCoords | null, path: string, pick?: (body: unknown) => T[]): Promise<T[]> {
    const items: T[] = [];
    let url: string | null = this.#url(path);
    for (let page = 0; url !== null && page < this.#maxPages; page++) {
      const res: Response<unknown> = repo === null ? await this.#appScopedCall<unknown>('GET', url) : await this.#repoCall<unknown>(repo, url);
      if (res.status === 404) throw repo ? repoNotFound(repo) : new GitHubError('not_found', `GitHub has no ${path}.`, 404);
      const batch = pick ? pick(res.body) : (res.body as T[]);
      if (!Array.isArray(batch)) throw new GitHubError('upstream', `GitHub answered ${path} with something other than a list.`, res.status);
      items.push(...batch);
      url = this.#nextLink(res.headers.get('link'));
    }
    return items;
  }

  /** Branch names of a repository (paginated). */
  async listBranches(repo: RepoCoords, perPage = 100): Promise<string[]> {
    const branches = await this.paginate<{ name: string }>(repo, `/repos/${seg(repo.owner)}/${seg(repo.name)}/branches?per_page=${perPage}`);
    return branches.map((b) => b.name);
  }

  /**
   * Any call on a repository's behalf, with an installation token limited to
   * `permissions`. Every answer comes back for the caller to judge, except rate limits,
   * which throw `rate_limited` with the reset time.
   */
  async repoRequest<T>(
    repo: RepoCoords,
    method: HttpMethod,
    path: string,
    permissions: Readonly<Record<string, 'read' | 'write'>>,
    body?: unknown,
  ): Promise<Response<T>> {
    const url = this.#url(path);
    let res = await this.#send<T>(method, url, await this.installationToken(repo, permissions), body);
    if (res.status === 401 && this.#auth.kind === 'app') {
      this.forgetCredentials();
      res = await this.#send<T>(method, url, await this.installationToken(repo, permissions), body);
    }
    const limited = this.#rateLimitError(res, `${method} ${new URL(url).pathname}`);
    if (limited) throw limited;
    return res;
  }

  /**
   * Who the credentials are: the App's slug (GET /app with the App's JWT) or the token's
   * login (GET /user). auth_failed when GitHub refuses them; a cheap check of settings.
   */
  async whoAmI(): Promise<string> {
    const res = await this.#appScopedCall<{ slug?: unknown; login?: unknown }>('GET', this.#url(this.#auth.kind === 'app' ? '/app' : '/user'));
    if (res.status === 404) throw new GitHubError('auth_failed', `GitHub at ${this.apiBaseUrl} does not know these credentials (404).`, 404);
    const name = this.#auth.kind === 'app' ? res.body.slug : res.body.login;
    return typeof name === 'string' ? name : 'unknown';
  }

  // ---- authentication ----------------------------------------------------------------

  /** The installation that covers `repo`; github_app_not_installed when there is none. */
  async installationId(repo: RepoCoords): Promise<number> {
    const key = `${repo.owner}/${repo.name}`.toLowerCase();
    const hit = this.#installations.get(key);
    if (hit && hit.untilMs > this.#now()) return hit.id;
    const res = await this.#send<{ id: number }>('GET', this.#url(`/repos/${seg(repo.owner)}/${seg(repo.name)}/installation`), this.#appJwt());
    if (res.status === 404) {
      throw new GitHubError(
        'app_not_installed',
        `The GitHub App is not installed on ${repo.owner}/${repo.name} (or the repository does not exist).`,
        404,
      );
    }
    this.#expectOk(res, 'installation lookup');
    if (typeof res.body.id !== 'number') throw new GitHubError('upstream', 'GitHub answered an installation without an id.', res.status);
    this.#installations.set(key, { id: res.body.id, untilMs: this.#now() + this.#installationTtlMs });
    return res.body.id;
  }

  /**
   * An installation access token limited to `repo` and `permissions`, reused until
   * `tokenRefreshMarginMs` before it expires; concurrent callers share one request.
   */
  async installationToken(repo: RepoCoords, permissions: Readonly<Record<string, 'read' | 'write'>> = READ_ONLY_PERMISSIONS): Promise<string> {
    if (this.#auth.kind === 'token') return this.#auth.token;
    const id = await this.installationId(repo);
    const perms = Object.keys(permissions).sort().map((k) => `${k}:${permissions[k]}`).join(',');
    const key = `${id}|${repo.name.toLowerCase()}|${perms}`;
    const cached = this.#tokens.get(key);
    if (cached && cached.renewAtMs > this.#now()) return cached.token;
    const pending = this.#pendingTokens.get(key);
    if (pending) return pending;
    const p = this.#createToken(id, repo, permissions, key).finally(() => this.#pendingTokens.delete(key));
    this.#pendingTokens.set(key, p);
    return p;
  }

  /** Forgets cached tokens and installations (after GitHub refused one). */
  forgetCredentials(): void {
    this.#tokens.clear();
    this.#installations.clear();
    this.#jwt = null;
  }

  async #createToken(id: number, repo: RepoCoords, permissions: Readonly<Record<string, 'read' | 'write'>>, key: string): Promise<string> {
    const res = await this.#send<{ token?: string; expires_at?: string }>(
      'POST',
      this.#url(`/app/installations/${id}/access_tokens`),
      this.#appJwt(),
      { repositories: [repo.name], permissions },
    );
    if (res.status === 422 && /permissions requested are not granted/i.test(githubMessage(res.body))) {
      const asked = Object.entries(permissions).map(([k, v]) => `${k}: ${v}`).join(', ');
      throw new GitHubError(
        'permission_missing',
        `The GitHub App installation on ${repo.owner}/${repo.name} does not grant the permissions VMKit asked for (${asked}). Add them in the App's settings (Permissions & events); existing installations must then approve the new permissions.`,
        res.status,
      );
    }
    if (res.status === 404 || res.status === 422) {
      // The installation no longer covers the repo (removed from its selection, or uninstalled).
      this.#installations.delete(`${repo.owner}/${repo.name}`.toLowerCase());
      throw new GitHubError('app_not_installed', `The GitHub App installation does not cover ${repo.owner}/${repo.name}.`, res.status);
    }
    this.#expectOk(res, 'installation token');
    const { token, expires_at: expiresAt } = res.body;
    const expiresMs = typeof expiresAt === 'string' ? Date.parse(expiresAt) : NaN;
    if (typeof token !== 'string' || Number.isNaN(expiresMs)) {
      throw new GitHubError('upstream', 'GitHub answered an installation token without token or expires_at.', res.status);
    }
    this.#tokens.set(key, { token, renewAtMs: expiresMs - this.#marginMs });
    return token;
  }

  #appJwt(): string {
    if (this.#auth.kind !== 'app') throw new GitHubError('auth_failed', 'App endpoints need GitHub App credentials, not a token.');
    const now = this.#now();
    // Re-sign a minute before the JWT would expire.
    if (this.#jwt === null || this.#jwt.expiresAtMs - 60_000 <= now) this.#jwt = createAppJwt(this.#auth.appId, this.#auth.key, now);
    return this.#jwt.jwt;
  }

  // ---- HTTP ----------------------------------------------------------------------------

  /** A call on a repository's behalf: 2xx and 404 come back, everything else throws. */
  async #repoCall<T>(repo: RepoCoords, pathOrUrl: string): Promise<Response<T>> {
    const url = pathOrUrl.startsWith('/') ? this.#url(pathOrUrl) : pathOrUrl;
    let res = await this.#send<T>('GET', url, await this.installationToken(repo));
    if (res.status === 401 && this.#auth.kind === 'app') {
      // A cached token was revoked early: start over once with fresh credentials.
      this.forgetCredentials();
      res = await this.#send<T>('GET', url, await this.installationToken(repo));
    }
    if (res.status !== 404) this.#expectOk(res, new URL(url).pathname);
    return res;
  }

  /** A call authenticated as the App itself, or with the plain token. */
  async #appScopedCall<T>(method: 'GET', url: string): Promise<Response<T>> {
    const credential = this.#auth.kind === 'app' ? this.#appJwt() : this.#auth.token;
    const res = await this.#send<T>(method, url, credential);
    if (res.status !== 404) this.#expectOk(res, new URL(url).pathname);
    return res;
  }

  #expectOk(res: Response<unknown>, what: string): void {
    if (res.status >= 200 && res.status < 300) return;
    const message = githubMessage(res.body);
    const limited = this.#rateLimitError(res, what);
    if (limited) throw limited;
    if (res.status === 401 || res.status === 403) {
      throw new GitHubError('auth_failed', `GitHub refused the configured credentials (${what}, ${res.status}: ${message}).`, res.status);
    }
    throw new GitHubError('upstream', `GitHub answered ${res.status} to ${what}: ${message}`, res.status);
  }

  /** Primary (x-ratelimit-remaining: 0) or secondary (retry-after) rate limit, as GitHub documents them. */
  #rateLimitError(res: Response<unknown>, what: string): GitHubError | null {
    const remaining = res.headers.get('x-ratelimit-remaining');
    const retryAfter = res.headers.get('retry-after');
    if ((res.status !== 403 && res.status !== 429) || (remaining !== '0' && retryAfter === null)) return null;
    const resetAt = rateLimitReset(res.headers, this.#now());
    return new GitHubError(
      'rate_limited',
      `GitHub's API rate limit is exhausted (${what}: ${githubMessage(res.body)}); it resets at ${resetAt.toISOString()}.`,
      res.status,
      resetAt,
    );
  }

  #url(path: string): string {
    return `${this.apiBaseUrl}${path}`;
  }

  /** The next page's URL, only if it stays on the API's origin (credentials never leave it). */
  #nextLink(link: string | null): string | null {
    if (!link) return null;
    for (const part of link.split(',')) {
      const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(part);
      if (!m?.[1]) continue;
      try {
        const next = new URL(m[1], this.apiBaseUrl);
        if (next.origin !== this.#origin) throw new GitHubError('upstream', `GitHub's next-page link points off the API origin: ${next.origin}`);
        return next.toString();
      } catch (err) {
        if (err instanceof GitHubError) throw err;
        return null;
      }
    }
    return null;
  }

  /**
   * One request; GET redirects (GitHub answers 301 for renamed or transferred repos) are
   * followed up to 3 hops, and only on the API's own origin, so the token never leaves it.
   */
  async #send<T>(method: HttpMethod, url: string, credential: string, body?: unknown): Promise<Response<T>> {
    let current = url;
    for (let hop = 0; ; hop++) {
      const res = await this.#sendOnce<T>(method, current, credential, body);
      const location = res.headers.get('location');
      if (method !== 'GET' || ![301, 302, 307, 308].includes(res.status) || location === null) return res;
      const next = new URL(location, current);
      if (next.origin !== this.#origin || hop >= 3) {
        throw new GitHubError('upstream', `GitHub redirected ${new URL(url).pathname} to ${next.origin}${next.pathname}, which VMKit does not follow.`, res.status);
      }
      current = next.toString();
    }
  }

  async #sendOnce<T>(method: HttpMethod, url: string, credential: string, body?: unknown): Promise<Response<T>> {
    const headers: Record<string, string> = {
      accept: 'application/vnd.github+json',
      'x-github-api-version': API_VERSION,
      'user-agent': this.#userAgent,
      authorization: `Bearer ${credential}`,
    };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: globalThis.Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw new GitHubError('upstream', `GitHub could not be reached at ${this.#origin}: ${(err as Error).message}`);
    }
    const text = await res.text();
    let parsed: unknown = null;
    if (text !== '') {
      try {
        parsed = JSON.parse(text) as unknown;
      } catch {
        if (res.ok) throw new GitHubError('upstream', `GitHub answered ${method} ${new URL(url).pathname} with non-JSON.`, res.status);
        parsed = { message: text.slice(0, 200) };
      }
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

function contentsPath(repo: RepoCoords, path: string, ref: string): string {
  const p = path.split('/').filter(Boolean).map(seg).join('/');
  return `/repos/${seg(repo.owner)}/${seg(repo.name)}/contents${p ? `/${p}` : ''}?ref=${seg(ref)}`;
}

function repoNotFound(repo: RepoCoords): GitHubError {
  return new GitHubError('not_found', `GitHub has no repository ${repo.owner}/${repo.name} visible to these credentials.`, 404);
}

export function githubMessage(body: unknown): string {
  const m = (body as { message?: unknown } | null)?.message;
  return typeof m === 'string' ? m.slice(0, 300) : 'no message';
}

/** x-ratelimit-reset (epoch seconds) for the primary limit, retry-after (seconds) for the secondary one. */
function rateLimitReset(headers: Headers, nowMs: number): Date {
  const reset = Number(headers.get('x-ratelimit-reset'));
  if (headers.get('x-ratelimit-remaining') === '0' && Number.isFinite(reset) && reset > 0) return new Date(reset * 1000);
  const after = Number(headers.get('retry-after'));
  if (Number.isFinite(after) && after >= 0) return new Date(nowMs + after * 1000);
  return new Date(nowMs + 60_000);
}

import { createHash, randomBytes, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakeGitHubWrites } from './fake-github-writes.ts';
import { readJsonBody, sendJson } from './http-json.ts';

/**
 * A local stand-in for api.github.com on 127.0.0.1 that answers the documented REST
 * endpoints VMKit uses, with GitHub's shapes, statuses and headers:
 *
 *   GET  /repos/{o}/{r}/installation                 (App JWT, RS256 verified)
 *   POST /app/installations/{id}/access_tokens       (App JWT) → 201 {token, expires_at}
 *   GET  /repos/{o}/{r}                              → {default_branch, ...}
 *   GET  /repos/{o}/{r}/commits/{ref}                → {sha}, 422 for an unknown ref
 *   GET  /repos/{o}/{r}/git/trees/{sha}?recursive=1  → {tree, truncated}
 *   GET  /repos/{o}/{r}/contents/{path}?ref=         → base64 file or directory array
 *   GET  /repos/{o}/{r}/branches?per_page=&page=     → paginated with Link headers
 *
 * Failures as GitHub sends them: 401 Bad credentials, 404 Not Found, 403 with
 * x-ratelimit-remaining: 0 and x-ratelimit-reset, 429 with retry-after.
 *
 * Refs, contents writes, pulls, Actions secrets, dispatch and runs: `writes`
 * (fake-github-writes.ts).
 */

export interface FakeRepo {
  owner: string;
  name: string;
  defaultBranch?: string;
  files: Record<string, string>;
  /** Installation id of the App on this repo; undefined = the App is not installed. */
  installationId?: number;
  /** Extra branch names (all pointing at the same commit), for pagination. */
  branches?: string[];
  /** What the App's installation grants; a token asking for more is refused (422). Default: anything. */
  appPermissions?: Record<string, 'read' | 'write'>;
}

export interface FakeGitHubOptions {
  app?: { id: string; publicKey: KeyObject };
  /** Plain tokens (PATs) that may read every repo. */
  tokens?: string[];
  repos: FakeRepo[];
  /** Recursive trees longer than this come back cut with `truncated: true`. */
  truncateTreesOver?: number;
  tokenLifetimeMs?: number;
  /** Serve this (possibly foreign) URL as the branches endpoint's next link. */
  nextLinkOverride?: string;
  /** Serve under a path prefix, as GitHub Enterprise Server does (`/api/v3`). */
  basePath?: string;
  /** Renamed repositories: old `owner/name` → new `owner/name`, answered with 301 as GitHub does. */
  renamed?: Record<string, string>;
  /** What the plain `tokens` may do (a fine-grained PAT's permissions); default everything. */
  tokenPermissions?: Record<string, 'read' | 'write'>;
}

interface IssuedToken {
  installationId: number;
  repositories: string[] | null;
  permissions: Record<string, string>;
  expiresAtMs: number;
}

interface Built {
  repo: FakeRepo;
  sha: string;
  files: Map<string, string>;
  dirs: Set<string>;
}

export interface RequestLogEntry {
  method: string;
  path: string;
  authorization: string | undefined;
  apiVersion: string | undefined;
}

const DOCS = 'https://docs.github.com/rest';

export class FakeGitHub {
  readonly url: string;
  readonly requests: RequestLogEntry[] = [];
  tokenRequests = 0;
  installationLookups = 0;
  /** Set to make every request answer the primary rate limit (epoch seconds of the reset). */
  rateLimitResetAt: number | null = null;
  /** Set to make every request answer a secondary rate limit with this retry-after. */
  secondaryRetryAfter: number | null = null;
  /** The write side: refs, contents PUT, pulls, secrets, dispatch, runs. */
  writes!: FakeGitHubWrites;
  readonly #server: Server;
  readonly #opts: FakeGitHubOptions;
  readonly #repos = new Map<string, Built>();
  readonly #tokens = new Map<string, IssuedToken>();

  private constructor(server: Server, opts: FakeGitHubOptions) {
    this.#server = server;
    this.#opts = opts;
    const { port } = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    for (const repo of opts.repos) this.#repos.set(`${repo.owner}/${repo.name}`.toLowerCase(), build(repo));
  }

  static async start(opts: FakeGitHubOptions): Promise<FakeGitHub> {
    const holder: { fake?: FakeGitHub } = {};
    const server = createServer((req, res) => {
      holder.fake?.handle(req, res).catch((err: unknown) => send(res, 500, { message: String(err) }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const fake = new FakeGitHub(server, opts);
    fake.writes = await FakeGitHubWrites.create({
      url: `${fake.url}${opts.basePath ?? ''}`,
      defaultBranch: (n) => fake.#built(n).repo.defaultBranch ?? 'main',
      headSha: (n) => fake.shaOf(n),
      files: (n) => fake.#built(n).files,
      push: (n, files) => fake.push(n, files),
    });
    holder.fake = fake;
    return fake;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** The head commit sha of a fake repo. */
  shaOf(fullName: string): string {
    const b = this.#repos.get(fullName.toLowerCase());
    if (!b) throw new Error(`no fake repo ${fullName}`);
    return b.sha;
  }

  /** Replaces a repo's files (a new commit). */
  push(fullName: string, files: Record<string, string>): void {
    const b = this.#repos.get(fullName.toLowerCase());
    if (!b) throw new Error(`no fake repo ${fullName}`);
    this.#repos.set(fullName.toLowerCase(), build({ ...b.repo, files }));
  }

  #built(fullName: string): Built {
    const b = this.#repos.get(fullName.toLowerCase());
    if (!b) throw new Error(`no fake repo ${fullName}`);
    return b;
  }

  /** The permissions behind an Authorization header: an issued token's, a PAT's, or null. */
  #permissionsOf(auth: string | undefined): Record<string, string> | 'all' {
    const token = /^(?:Bearer|token) (.+)$/.exec(auth ?? '')?.[1] ?? '';
    if (this.#opts.tokens?.includes(token)) return this.#opts.tokenPermissions ?? 'all';
    return this.#tokens.get(token)?.permissions ?? {};
  }

  revokeAllTokens(): void {
    this.#tokens.clear();
  }

  /** The permissions and repositories the last issued token was limited to. */
  lastIssuedToken(): IssuedToken | undefined {
    return [...this.#tokens.values()].at(-1);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const base = this.#opts.basePath ?? '';
    if (base !== '') {
      if (!url.pathname.startsWith(`${base}/`)) return notFound(res);
      url.pathname = url.pathname.slice(base.length);
    }
    const auth = req.headers.authorization;
    this.requests.push({ method: req.method ?? '', path: req.url ?? '/', authorization: auth, apiVersion: header(req, 'x-github-api-version') });
    const body = await readJsonBody(req);

    if (this.rateLimitResetAt !== null) {
      res.setHeader('x-ratelimit-limit', '5000');
      res.setHeader('x-ratelimit-remaining', '0');
      res.setHeader('x-ratelimit-used', '5000');
      res.setHeader('x-ratelimit-reset', String(this.rateLimitResetAt));
      res.setHeader('x-ratelimit-resource', 'core');
      return send(res, 403, { message: 'API rate limit exceeded for installation ID 1.', documentation_url: `${DOCS}/overview/rate-limits-for-the-rest-api` });
    }
    if (this.secondaryRetryAfter !== null) {
      res.setHeader('retry-after', String(this.secondaryRetryAfter));
      return send(res, 429, { message: 'You have exceeded a secondary rate limit.', documentation_url: `${DOCS}/overview/rate-limits-for-the-rest-api` });
    }
    res.setHeader('x-ratelimit-limit', '5000');
    res.setHeader('x-ratelimit-remaining', '4999');
    res.setHeader('x-ratelimit-reset', String(Math.floor(Date.now() / 1000) + 3600));

    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    // App endpoints: the JWT.
    if (req.method === 'GET' && parts.length === 4 && parts[0] === 'repos' && parts[3] === 'installation') {
      const bad = this.#checkJwt(auth);
      if (bad) return send(res, 401, { message: bad, documentation_url: DOCS });
      this.installationLookups++;
      const repo = this.#repos.get(`${parts[1]}/${parts[2]}`.toLowerCase());
      if (!repo || repo.repo.installationId === undefined) return notFound(res);
      return send(res, 200, { id: repo.repo.installationId, account: { login: repo.repo.owner }, app_id: Number(this.#opts.app?.id), target_type: 'User' });
    }
    if (req.method === 'POST' && parts.length === 4 && parts[0] === 'app' && parts[1] === 'installations' && parts[3] === 'access_tokens') {
      const bad = this.#checkJwt(auth);
      if (bad) return send(res, 401, { message: bad, documentation_url: DOCS });
      this.tokenRequests++;
      const id = Number(parts[2]);
      const covered = [...this.#repos.values()].filter((b) => b.repo.installationId === id).map((b) => b.repo.name);
      if (covered.length === 0) return notFound(res);
      const wanted = (body as { repositories?: string[]; permissions?: Record<string, string> } | null) ?? {};
      if (wanted.repositories?.some((r) => !covered.includes(r))) {
        return send(res, 422, { message: 'There is at least one repository that does not exist or is not accessible to the parent installation.', documentation_url: DOCS });
      }
      const granted = [...this.#repos.values()].find((b) => b.repo.installationId === id)?.repo.appPermissions;
      if (granted && Object.entries(wanted.permissions ?? {}).some(([k, v]) => granted[k] !== 'write' && !(v === 'read' && granted[k] === 'read'))) {
        return send(res, 422, { message: 'The permissions requested are not granted to this installation.', documentation_url: DOCS });
      }
      const token = `ghs_${randomBytes(18).toString('base64url')}`;
      const expiresAtMs = Date.now() + (this.#opts.tokenLifetimeMs ?? 3600_000);
      this.#tokens.set(token, { installationId: id, repositories: wanted.repositories ?? null, permissions: wanted.permissions ?? { contents: 'read', metadata: 'read' }, expiresAtMs });
      return send(res, 201, {
        token,
        expires_at: new Date(expiresAtMs).toISOString().replace(/\.\d{3}Z$/, 'Z'),
        permissions: wanted.permissions ?? { contents: 'read', metadata: 'read' },
        repository_selection: wanted.repositories ? 'selected' : 'all',
      });
    }

    // Who the credentials are: GET /app (the App's JWT), GET /user (a plain token).
    if (req.method === 'GET' && parts.length === 1 && parts[0] === 'app') {
      const bad = this.#checkJwt(auth);
      if (bad) return send(res, 401, { message: bad, documentation_url: DOCS });
      return send(res, 200, { id: Number(this.#opts.app?.id), slug: 'vmkit-test', name: 'VMKit test' });
    }
    if (req.method === 'GET' && parts.length === 1 && parts[0] === 'user') {
      const token = /^Bearer (.+)$/.exec(auth ?? '')?.[1];
      if (token === undefined || !(this.#opts.tokens ?? []).includes(token)) return send(res, 401, { message: 'Bad credentials', documentation_url: DOCS });
      return send(res, 200, { login: 'vmkit-user', id: 1, type: 'User' });
    }
    if (parts[0] !== 'repos' || parts.length < 3) return notFound(res);
    const movedTo = this.#opts.renamed?.[`${parts[1]}/${parts[2]}`.toLowerCase()];
    if (movedTo !== undefined) {
      const target = movedTo.startsWith('http') ? movedTo : `${this.url}${base}/repos/${movedTo}/${parts.slice(3).map(encodeURIComponent).join('/')}`;
      res.setHeader('location', `${target.replace(/\/$/, '')}${url.search}`);
      return send(res, 301, { message: 'Moved Permanently', url: target, documentation_url: DOCS });
    }
    const built = this.#repos.get(`${parts[1]}/${parts[2]}`.toLowerCase());
    const access = this.#checkToken(auth, built);
    if (access === 'bad') return send(res, 401, { message: 'Bad credentials', documentation_url: DOCS });
    if (access === 'hidden' || !built) return notFound(res);
    const rest = parts.slice(3);

    if (this.writes.handle(req.method ?? 'GET', `${built.repo.owner}/${built.repo.name}`, rest, url, body, this.#permissionsOf(auth), res)) return;
    if (req.method !== 'GET') return notFound(res);
    if (rest.length === 0) {
      return send(res, 200, {
        id: 1,
        name: built.repo.name,
        full_name: `${built.repo.owner}/${built.repo.name}`,
        private: true,
        default_branch: built.repo.defaultBranch ?? 'main',
        owner: { login: built.repo.owner },
      });
    }
    if (rest[0] === 'commits' && rest.length >= 2) {
      const ref = rest.slice(1).join('/');
      if (!this.#branches(built).includes(ref) && ref !== built.sha) {
        return send(res, 422, { message: `No commit found for SHA: ${ref}`, documentation_url: DOCS });
      }
      return send(res, 200, { sha: built.sha, commit: { message: 'fixture', tree: { sha: treeSha('') } } });
    }
    if (rest[0] === 'git' && rest[1] === 'trees' && rest.length === 3) {
      if (rest[2] !== built.sha) return notFound(res);
      const recursive = url.searchParams.has('recursive');
      const tree = this.#tree(built, recursive);
      const cut = this.#opts.truncateTreesOver;
      const truncated = recursive && cut !== undefined && tree.length > cut;
      return send(res, 200, { sha: built.sha, url: `${this.url}${url.pathname}`, tree: truncated ? tree.slice(0, cut) : tree, truncated });
    }
    if (rest[0] === 'contents') {
      const ref = url.searchParams.get('ref') ?? built.repo.defaultBranch ?? 'main';
      if (ref !== built.sha && !this.#branches(built).includes(ref)) return notFound(res);
      const path = rest.slice(1).join('/');
      const text = built.files.get(path);
      if (text !== undefined) {
        const bytes = Buffer.from(text, 'utf8');
        return send(res, 200, {
          type: 'file',
          encoding: 'base64',
          size: bytes.length,
          name: path.slice(path.lastIndexOf('/') + 1),
          path,
          sha: blobSha(text),
          // GitHub wraps base64 content at 60 characters.
          content: (bytes.toString('base64').match(/.{1,60}/g) ?? []).join('\n') + '\n',
        });
      }
      if (path === '' || built.dirs.has(path)) return send(res, 200, this.#listing(built, path));
      return notFound(res);
    }
    if (rest[0] === 'branches' && rest.length === 1) {
      const perPage = Math.min(100, Number(url.searchParams.get('per_page') ?? 30));
      const page = Math.max(1, Number(url.searchParams.get('page') ?? 1));
      const all = this.#branches(built);
      const items = all.slice((page - 1) * perPage, page * perPage).map((name) => ({ name, commit: { sha: built.sha }, protected: false }));
      const last = Math.max(1, Math.ceil(all.length / perPage));
      const link = (p: number): string => `<${this.url}${base}${url.pathname}?per_page=${perPage}&page=${p}>`;
      const links: string[] = [];
      if (page < last) links.push(`${this.#opts.nextLinkOverride ? `<${this.#opts.nextLinkOverride}>` : link(page + 1)}; rel="next"`, `${link(last)}; rel="last"`);
      if (page > 1) links.push(`${link(1)}; rel="first"`, `${link(page - 1)}; rel="prev"`);
      if (links.length > 0) res.setHeader('link', links.join(', '));
      return send(res, 200, items);
    }
    return notFound(res);
  }

  #branches(b: Built): string[] {
    return [b.repo.defaultBranch ?? 'main', ...(b.repo.branches ?? [])];
  }

  #tree(b: Built, recursive: boolean): { path: string; mode: string; type: string; sha: string; size?: number }[] {
    const out: { path: string; mode: string; type: string; sha: string; size?: number }[] = [];
    for (const d of [...b.dirs].sort()) if (recursive || !d.includes('/')) out.push({ path: d, mode: '040000', type: 'tree', sha: treeSha(d) });
    for (const [p, text] of [...b.files].sort(([a], [c]) => (a < c ? -1 : 1))) {
      if (recursive || !p.includes('/')) out.push({ path: p, mode: '100644', type: 'blob', sha: blobSha(text), size: Buffer.byteLength(text) });
    }
    return out.sort((x, y) => (x.path < y.path ? -1 : 1));
  }

  #listing(b: Built, dir: string): { type: string; name: string; path: string; size: number; sha: string }[] {
    const prefix = dir === '' ? '' : `${dir}/`;
    const out: { type: string; name: string; path: string; size: number; sha: string }[] = [];
    for (const d of b.dirs) if (d.startsWith(prefix) && !d.slice(prefix.length).includes('/')) out.push({ type: 'dir', name: d.slice(prefix.length), path: d, size: 0, sha: treeSha(d) });
    for (const [p, text] of b.files) {
      if (p.startsWith(prefix) && !p.slice(prefix.length).includes('/')) out.push({ type: 'file', name: p.slice(prefix.length), path: p, size: Buffer.byteLength(text), sha: blobSha(text) });
    }
    return out.sort((x, y) => (x.path < y.path ? -1 : 1));
  }

  /** null when the JWT is a valid RS256 App JWT; otherwise GitHub's complaint. */
  #checkJwt(auth: string | undefined): string | null {
    const app = this.#opts.app;
    if (!app) return 'A JSON web token could not be decoded';
    const jwt = /^Bearer (.+)$/.exec(auth ?? '')?.[1];
    const parts = jwt?.split('.');
    if (!parts || parts.length !== 3) return 'A JSON web token could not be decoded';
    const [h, p, s] = parts as [string, string, string];
    let header: { alg?: string };
    let payload: { iat?: number; exp?: number; iss?: string | number };
    try {
      header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as typeof header;
      payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as typeof payload;
    } catch {
      return 'A JSON web token could not be decoded';
    }
    if (header.alg !== 'RS256') return 'A JSON web token could not be decoded';
    if (!verify('sha256', Buffer.from(`${h}.${p}`), app.publicKey, Buffer.from(s, 'base64url'))) {
      return "A JSON web token could not be decoded";
    }
    const now = Math.floor(Date.now() / 1000);
    if (String(payload.iss) !== app.id) return "'Issuer' claim ('iss') must be an Integer";
    if (typeof payload.iat !== 'number' || payload.iat > now + 60) return "'Issued at' claim ('iat') must be an Integer representing a time in the past";
    if (typeof payload.exp !== 'number' || payload.exp <= now) return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
    if (payload.exp - payload.iat > 600) return "'Expiration time' claim ('exp') is too far in the future";
    return null;
  }

  #checkToken(auth: string | undefined, repo: Built | undefined): 'ok' | 'bad' | 'hidden' {
    const token = /^(?:Bearer|token) (.+)$/.exec(auth ?? '')?.[1];
    if (!token) return 'hidden';
    if (this.#opts.tokens?.includes(token)) return 'ok';
    const issued = this.#tokens.get(token);
    if (!issued || issued.expiresAtMs <= Date.now()) return 'bad';
    if (!repo || repo.repo.installationId !== issued.installationId) return 'hidden';
    if (issued.repositories && !issued.repositories.includes(repo.repo.name)) return 'hidden';
    return 'ok';
  }
}

function build(repo: FakeRepo): Built {
  const files = new Map(Object.entries(repo.files));
  const dirs = new Set<string>();
  for (const p of files.keys()) {
    const segs = p.split('/');
    for (let i = 1; i < segs.length; i++) dirs.add(segs.slice(0, i).join('/'));
  }
  const sha = createHash('sha1').update(JSON.stringify([...files].sort())).digest('hex');
  return { repo, sha, files, dirs };
}

function blobSha(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

function treeSha(path: string): string {
  return createHash('sha1').update(`tree:${path}`).digest('hex');
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}


function send(res: ServerResponse, status: number, body: unknown): void {
  sendJson(res, status, body, 'application/json; charset=utf-8');
}

function notFound(res: ServerResponse): void {
  send(res, 404, { message: 'Not Found', documentation_url: DOCS, status: '404' });
}

/** Reads a fixture directory into the `files` map of a FakeRepo. */
export async function filesOf(dir: string): Promise<Record<string, string>> {
  const { readdir, readFile } = await import('node:fs/promises');
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const full = `${e.parentPath}/${e.name}`;
    out[full.slice(dir.length + 1)] = await readFile(full, 'utf8');
  }
  return out;
}

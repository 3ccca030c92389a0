import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from '../../db/index.ts';
import { findRepoByName } from '../../db/repos.ts';
import { createScan, findScanAtSha, getScan, updateScan } from '../../db/scans.ts';
import type { ScanRow } from '../../db/scans.ts';
import { ApiError } from '../../errors.ts';
import { GitHubClient } from '../../providers/github/client.ts';
import type { GitHubAuth } from '../../providers/github/client.ts';
import { GitHubRepoSource } from '../../providers/repo-source/github.ts';
import { LocalRepoSource } from '../../providers/repo-source/local.ts';
import { parseRepoRef, repoFullName } from '../../providers/repo-source/ref.ts';
import { RepoSourceError } from '../../providers/repo-source/types.ts';
import type { RepoSource } from '../../providers/repo-source/types.ts';
import { classifyRepo } from './classify.ts';
import type { FallbackClassifier } from './classify.ts';
import { modelClassifierFromEnv } from './model-classifier.ts';
import { RepoView } from './repo-view.ts';
import { RULES_VERSION } from './rules.ts';

export interface ScanServiceOptions {
  db: Db;
  /** The source a workspace's repositories are read from (GitHub when configured, else local checkouts). */
  sourceFor: (workspaceId: string) => RepoSource | Promise<RepoSource>;
  /** The optional model classifier, asked only when the rules cannot decide. */
  fallback?: FallbackClassifier | null;
  now?: () => number;
}

export interface ScanOutcome {
  scan: ScanRow;
  /** True when an earlier scan of the same commit answered. */
  cached: boolean;
}

/**
 * scan_repo's domain logic: the repo must be connected to the workspace; its head
 * commit is resolved; a stored scan of that commit (same source kind, same rules
 * version) answers directly; otherwise the repo is classified and the result stored.
 * Concurrent scans of one commit share one classification.
 */
export class ScanService {
  readonly #db: Db;
  readonly #sourceFor: (workspaceId: string) => RepoSource | Promise<RepoSource>;
  readonly #fallback: FallbackClassifier | null;
  readonly #now: () => number;
  readonly #inflight = new Map<string, Promise<ScanRow>>();

  constructor(opts: ScanServiceOptions) {
    this.#db = opts.db;
    this.#sourceFor = opts.sourceFor;
    this.#fallback = opts.fallback ?? null;
    this.#now = opts.now ?? Date.now;
  }

  async scan(workspaceId: string, repo: string): Promise<ScanOutcome> {
    const ref = parseRepoRef(repo);
    if (!ref) throw new ApiError('invalid_request', 'Invalid request: repo must be owner/name.');
    const row = await findRepoByName(this.#db, workspaceId, ref.owner, ref.name);
    if (!row) throw new ApiError('repo_not_found', `No repo ${repoFullName(ref)} found in this workspace.`);
    // Read with the connected row's spelling: GitHub names are case-insensitive, checkouts are not.
    const canonical = { owner: row.owner, name: row.name };
    const source = await this.#sourceFor(workspaceId);
    const head = await asApiError(source.head(canonical));

    const hit = await findScanAtSha(this.#db, { workspaceId, repoId: row.id, sha: head.sha, source: source.kind, rulesVersion: RULES_VERSION });
    if (hit) return { scan: hit, cached: true };

    const key = `${workspaceId}|${row.id}|${head.sha}|${source.kind}`;
    const pending = this.#inflight.get(key);
    if (pending) return { scan: await pending, cached: true };
    const run = this.#classifyAndStore(workspaceId, row.id, canonical, source, head).finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, run);
    return { scan: await run, cached: false };
  }

  get(workspaceId: string, id: string): Promise<ScanRow | undefined> {
    return getScan(this.#db, workspaceId, id);
  }

  async #classifyAndStore(
    workspaceId: string,
    repoId: string,
    ref: { owner: string; name: string },
    source: RepoSource,
    head: { sha: string; defaultBranch: string | null },
  ): Promise<ScanRow> {
    const name = repoFullName(ref);
    const view = await asApiError(RepoView.open(source, ref, head.sha));
    const c = await asApiError(classifyRepo(view, { repo: name, fallback: this.#fallback }));
    const scan = await createScan(this.#db, { workspaceId, repo: name, repoId, status: 'running' }, this.#now());
    const patch = {
      status: 'succeeded',
      language: c.language,
      framework: c.framework,
      buildpack: c.buildpack,
      procfileDetected: c.procfile_detected,
      dockerfileDetected: c.dockerfile_detected,
      details: {
        sha: head.sha,
        default_branch: head.defaultBranch,
        source: source.kind,
        root: c.root,
        evidence: c.evidence,
        confidence: c.confidence,
        reason: c.reason,
        classifier: c.classifier,
        rule: c.rule,
        buildpack_note: c.buildpack_note,
        rules_version: RULES_VERSION,
        tree_complete: view.treeComplete,
        files_read: view.filesRead.length,
      },
      finishedAt: this.#now(),
    } satisfies Parameters<typeof updateScan>[2];
    await updateScan(this.#db, scan.id, patch);
    return { ...scan, ...patch };
  }
}

/** Source failures become the REST error of their key (repo_not_found, github_app_not_installed, ...). */
async function asApiError<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof RepoSourceError) throw new ApiError(err.key, err.message, Object.keys(err.detail).length > 0 ? err.detail : undefined);
    throw err;
  }
}

export interface RepoSourceConfig {
  /** `<dataDir>/repos` unless VMKIT_REPOS_DIR says otherwise. */
  reposDir: string;
  github: { apiBaseUrl: string | undefined; auth: GitHubAuth } | null;
}

/**
 * Where repositories come from, from the environment:
 * - VMKIT_GITHUB_APP_ID + VMKIT_GITHUB_APP_PRIVATE_KEY (PEM) or VMKIT_GITHUB_APP_PRIVATE_KEY_FILE → GitHub App;
 * - else VMKIT_GITHUB_TOKEN → GitHub with that token;
 * - VMKIT_GITHUB_API_URL → GitHub Enterprise Server (`https://<host>/api/v3`);
 * - neither → local checkouts under VMKIT_REPOS_DIR (default `<dataDir>/repos/<owner>/<name>`).
 */
export function repoSourceConfigFromEnv(dataDir: string, env: NodeJS.ProcessEnv = process.env): RepoSourceConfig {
  const reposDir = env.VMKIT_REPOS_DIR || join(dataDir, 'repos');
  const apiBaseUrl = env.VMKIT_GITHUB_API_URL || undefined;
  const appId = env.VMKIT_GITHUB_APP_ID;
  const keyFile = env.VMKIT_GITHUB_APP_PRIVATE_KEY_FILE;
  const key = env.VMKIT_GITHUB_APP_PRIVATE_KEY || (keyFile ? readFileSync(keyFile, 'utf8') : undefined);
  if (appId && key) return { reposDir, github: { apiBaseUrl, auth: { kind: 'app', appId, privateKey: key } } };
  if (env.VMKIT_GITHUB_TOKEN) return { reposDir, github: { apiBaseUrl, auth: { kind: 'token', token: env.VMKIT_GITHUB_TOKEN } } };
  return { reposDir, github: null };
}

export function repoSourceFrom(config: RepoSourceConfig): RepoSource {
  if (config.github) {
    return new GitHubRepoSource(new GitHubClient({ auth: config.github.auth, ...(config.github.apiBaseUrl && { apiBaseUrl: config.github.apiBaseUrl }) }));
  }
  return new LocalRepoSource({ reposDir: config.reposDir });
}

/**
 * The service as the control plane runs it: one global source from the environment, the
 * model classifier if configured. With `githubFor`, a workspace that configured its own
 * GitHub (PUT /api/workspace/github) reads through that instead.
 */
export function scanServiceFromEnv(
  opts: { db: Db; dataDir: string; now?: () => number; githubFor?: (workspaceId: string) => Promise<GitHubClient | null> },
  env: NodeJS.ProcessEnv = process.env,
): ScanService {
  const source = repoSourceFrom(repoSourceConfigFromEnv(opts.dataDir, env));
  const githubFor = opts.githubFor;
  const sourceFor = githubFor
    ? async (workspaceId: string): Promise<RepoSource> => {
        const own = await githubFor(workspaceId);
        return own ? new GitHubRepoSource(own) : source;
      }
    : () => source;
  return new ScanService({ db: opts.db, sourceFor, fallback: modelClassifierFromEnv(env), ...(opts.now && { now: opts.now }) });
}

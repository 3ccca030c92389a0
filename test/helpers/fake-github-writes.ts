import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import sodium from 'libsodium-wrappers';

/**
 * The write side of the fake GitHub (fake-github.ts hands these requests over), with
 * GitHub's documented answers:
 *
 *   GET  /repos/{o}/{r}/git/ref/heads/{branch}      → {ref, object: {sha}}; 409 "Git Repository is empty."
 *   POST /repos/{o}/{r}/git/refs                    → 201; 422 "Reference already exists"
 *   GET  /repos/{o}/{r}/contents/{path}?ref=<branch> (branches made here)
 *   PUT  /repos/{o}/{r}/contents/{path}             → 201/200; 422 "sha" wasn't supplied; 409 on a stale sha;
 *                                                     403 "refusing to allow a GitHub App to create or update workflow"
 *   GET/POST /repos/{o}/{r}/pulls, GET /pulls/{n}   → 422 "A pull request already exists for ..."
 *   GET  /repos/{o}/{r}/actions/secrets/public-key, PUT /actions/secrets/{name} (sealed box, opened here)
 *   POST /repos/{o}/{r}/actions/workflows/{wf}/dispatches (200 with return_run_details, 204, or 422 for the field)
 *   GET  /repos/{o}/{r}/actions/workflows/{wf}/runs?event=&created=>=, /actions/runs/{id}, /actions/runs/{id}/jobs
 */

/** What the fake's repository side lets this module read and change. */
export interface WriteHost {
  readonly url: string;
  defaultBranch(fullName: string): string;
  headSha(fullName: string): string;
  files(fullName: string): Map<string, string>;
  push(fullName: string, files: Record<string, string>): void;
}

interface Branch {
  sha: string;
  files: Map<string, string>;
}

export interface FakePull {
  number: number;
  state: 'open' | 'closed';
  merged: boolean;
  title: string;
  body: string;
  head: string;
  base: string;
}

export interface FakeRun {
  id: number;
  workflow: string;
  display_title: string;
  event: string;
  status: 'queued' | 'in_progress' | 'completed';
  conclusion: string | null;
  created_at: string;
  head_sha: string;
  inputs: Record<string, string>;
  jobs: { name: string; conclusion: string | null; steps: { name: string; conclusion: string | null }[] }[];
}

/** How the dispatch endpoint treats `return_run_details`: today's GitHub, an old one (204), or a server that refuses the field (422). */
export type DispatchMode = 'details' | 'no_content' | 'reject_field';

interface RepoState {
  branches: Map<string, Branch>;
  pulls: FakePull[];
  secrets: Map<string, { sealed: string; keyId: string }>;
  runs: FakeRun[];
}

type Perms = Record<string, string> | 'all';

const DOCS = 'https://docs.github.com/rest';
let nextRunId = 9_000_000;

export class FakeGitHubWrites {
  dispatchMode: DispatchMode = 'details';
  /** The runs list leaves out new runs for this many reads (GitHub lists a dispatched run after a delay). */
  runsListedAfterReads = 0;
  /** Repositories without a single commit. */
  readonly emptyRepos = new Set<string>();
  /**
   * How a dispatched run moves on: null (default) = only when the test says so
   * (`startRun`, `completeRun`); a conclusion = by itself, one state per read of the run
   * (queued → in_progress → completed with that conclusion), for tests that only need it to end.
   */
  autoRun: 'success' | 'failure' | null = null;
  readonly #dispatched = new Map<string, FakeRun[]>();
  readonly #dispatchWaiters = new Set<() => void>();
  readonly #host: WriteHost;
  readonly #state = new Map<string, RepoState>();
  readonly #keyPair: { publicKey: Uint8Array; privateKey: Uint8Array };
  readonly #keyId: string;

  private constructor(host: WriteHost, keyPair: { publicKey: Uint8Array; privateKey: Uint8Array }) {
    this.#host = host;
    this.#keyPair = keyPair;
    this.#keyId = createHash('sha256').update(keyPair.publicKey).digest('hex').slice(0, 20);
  }

  static async create(host: WriteHost): Promise<FakeGitHubWrites> {
    await sodium.ready;
    return new FakeGitHubWrites(host, sodium.crypto_box_keypair());
  }

  // ---- for tests -------------------------------------------------------------------

  pulls(fullName: string): FakePull[] {
    return this.#repo(fullName).pulls;
  }

  runs(fullName: string): FakeRun[] {
    return this.#repo(fullName).runs;
  }

  branchFiles(fullName: string, branch: string): Map<string, string> | undefined {
    return branch === this.#host.defaultBranch(fullName) ? this.#host.files(fullName) : this.#repo(fullName).branches.get(branch)?.files;
  }

  /** Opens a stored secret with the repository's private key, as GitHub would. */
  secret(fullName: string, name: string): string | null {
    const s = this.#repo(fullName).secrets.get(name.toUpperCase());
    if (!s) return null;
    const opened = sodium.crypto_box_seal_open(sodium.from_base64(s.sealed, sodium.base64_variants.ORIGINAL), this.#keyPair.publicKey, this.#keyPair.privateKey);
    return sodium.to_string(opened);
  }

  /** Merges a pull request: the head branch's files land on the base branch. */
  mergePull(fullName: string, number: number): void {
    const pr = this.pulls(fullName).find((p) => p.number === number);
    const branch = pr && this.#repo(fullName).branches.get(pr.head);
    if (!pr || !branch) throw new Error(`no open pull request #${number} with a branch`);
    this.#host.push(fullName, Object.fromEntries(branch.files));
    Object.assign(pr, { state: 'closed', merged: true });
  }

  closePull(fullName: string, number: number): void {
    const pr = this.pulls(fullName).find((p) => p.number === number);
    if (pr) pr.state = 'closed';
  }

  completeRun(fullName: string, runId: number, conclusion: 'success' | 'failure' | 'cancelled' | 'timed_out', failing?: { job: string; step: string }): void {
    const run = this.runs(fullName).find((r) => r.id === runId);
    if (!run) throw new Error(`no run ${runId}`);
    run.status = 'completed';
    run.conclusion = conclusion;
    run.jobs = failing
      ? [{ name: failing.job, conclusion, steps: [{ name: 'Set up job', conclusion: 'success' }, { name: failing.step, conclusion }] }]
      : [{ name: 'deploy', conclusion, steps: [{ name: 'Set up job', conclusion }] }];
  }

  /** The runs the dispatch endpoint started for this repo, in order (a run somebody else added is not among them). */
  dispatched(fullName: string): FakeRun[] {
    return this.#dispatched.get(fullName.toLowerCase()) ?? [];
  }

  /** Resolves with the repo's n-th dispatched run (1-based) as soon as it exists. */
  waitForDispatch(fullName: string, n = 1, timeoutMs = 300_000): Promise<FakeRun> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const run = this.dispatched(fullName)[n - 1];
        if (!run) return false;
        clearTimeout(timer);
        this.#dispatchWaiters.delete(check);
        resolve(run);
        return true;
      };
      const timer = setTimeout(() => {
        this.#dispatchWaiters.delete(check);
        reject(new Error(`no dispatch #${n} of ${fullName} within ${timeoutMs} ms`));
      }, timeoutMs);
      if (!check()) this.#dispatchWaiters.add(check);
    });
  }

  /** The run starts (a runner picked it up). */
  startRun(fullName: string, runId: number): void {
    const run = this.runs(fullName).find((r) => r.id === runId);
    if (!run) throw new Error(`no run ${runId}`);
    run.status = 'in_progress';
  }

  /** A run somebody else started (to prove runs are matched by name, not taken blindly). */
  addRun(fullName: string, workflow: string, displayTitle: string): FakeRun {
    const run = this.#newRun(fullName, workflow, displayTitle, {});
    return run;
  }

  // ---- requests --------------------------------------------------------------------

  /** Answers the request when it is one of the write side's; false hands it back. */
  handle(method: string, fullName: string, rest: string[], url: URL, body: unknown, perms: Perms, res: ServerResponse): boolean {
    const fn = fullName.toLowerCase();
    const reply = (status: number, payload?: unknown): true => {
      res.statusCode = status;
      if (payload !== undefined) res.setHeader('content-type', 'application/json; charset=utf-8');
      res.end(payload === undefined ? undefined : JSON.stringify(payload));
      return true;
    };
    const message = (status: number, text: string): true => reply(status, { message: text, documentation_url: DOCS, status: String(status) });
    const need = (perm: string, level: 'read' | 'write'): boolean => {
      if (perms === 'all') return true;
      const have = perms[perm];
      return have === 'write' || (level === 'read' && have === 'read');
    };
    const denied = (): true => message(403, 'Resource not accessible by integration');
    const [a, b, c, d] = rest;

    // git refs
    if (method === 'GET' && a === 'git' && b === 'ref' && c === 'heads' && rest.length >= 4) {
      if (this.emptyRepos.has(fn)) return message(409, 'Git Repository is empty.');
      const name = rest.slice(3).join('/');
      const sha = this.#branchSha(fn, name);
      if (sha === null) return message(404, 'Not Found');
      return reply(200, { ref: `refs/heads/${name}`, url: `${this.#host.url}/repos/${fn}/git/refs/heads/${name}`, object: { sha, type: 'commit' } });
    }
    if (method === 'POST' && a === 'git' && b === 'refs' && rest.length === 2) {
      if (!need('contents', 'write')) return denied();
      if (this.emptyRepos.has(fn)) return message(409, 'Git Repository is empty.');
      const { ref, sha } = (body ?? {}) as { ref?: string; sha?: string };
      if (typeof ref !== 'string' || !ref.startsWith('refs/heads/')) return message(422, 'Reference name must start with refs/');
      const name = ref.slice('refs/heads/'.length);
      if (this.#branchSha(fn, name) !== null) return message(422, 'Reference already exists');
      const from = [this.#host.defaultBranch(fn), ...this.#repo(fn).branches.keys()].find((br) => this.#branchSha(fn, br) === sha);
      if (from === undefined) return message(422, 'Object does not exist');
      this.#repo(fn).branches.set(name, { sha: sha ?? '', files: new Map(this.branchFiles(fn, from)) });
      return reply(201, { ref, object: { sha, type: 'commit' } });
    }

    // contents on branches made here, and writes
    if (a === 'contents') {
      const path = rest.slice(1).join('/');
      if (method === 'GET') {
        const ref = url.searchParams.get('ref');
        const branch = ref === null ? undefined : this.#repo(fn).branches.get(ref);
        if (!branch) return false;
        const text = branch.files.get(path);
        if (text === undefined) return message(404, 'Not Found');
        return reply(200, { type: 'file', encoding: 'base64', size: Buffer.byteLength(text), name: path.split('/').at(-1), path, sha: blobSha(text), content: Buffer.from(text).toString('base64') });
      }
      if (method === 'PUT') {
        const put = (body ?? {}) as { message?: string; content?: string; branch?: string; sha?: string };
        if (!need('contents', 'write')) return denied();
        if (path.startsWith('.github/workflows/') && !need('workflows', 'write')) {
          return message(403, `refusing to allow a GitHub App to create or update workflow \`${path}\` without \`workflows\` permission`);
        }
        const branchName = put.branch ?? this.#host.defaultBranch(fn);
        const files = this.branchFiles(fn, branchName);
        if (!files) return message(404, `Branch ${branchName} not found`);
        const existing = files.get(path);
        if (existing !== undefined && put.sha === undefined) return message(422, 'Invalid request.\n\n"sha" wasn\'t supplied.');
        if (existing !== undefined && put.sha !== blobSha(existing)) return message(409, `${path} does not match ${put.sha ?? ''}`);
        if (typeof put.content !== 'string' || typeof put.message !== 'string') return message(422, 'Invalid request.\n\n"content", "message" are required.');
        const text = Buffer.from(put.content, 'base64').toString('utf8');
        const next = new Map(files).set(path, text);
        const commitSha = this.#commit(fn, branchName, next);
        return reply(existing === undefined ? 201 : 200, { content: { name: path.split('/').at(-1), path, sha: blobSha(text) }, commit: { sha: commitSha, message: put.message } });
      }
    }

    // pulls
    if (a === 'pulls') {
      const pulls = this.#repo(fn).pulls;
      if (method === 'GET' && rest.length === 1) {
        if (!need('pull_requests', 'read')) return denied();
        const state = url.searchParams.get('state') ?? 'open';
        const head = url.searchParams.get('head');
        const base = url.searchParams.get('base');
        const owner = fn.split('/')[0];
        const list = pulls
          .filter((p) => (state === 'all' || p.state === state) && (head === null || head.toLowerCase() === `${owner}:${p.head}`.toLowerCase()) && (base === null || p.base === base))
          .sort((x, y) => y.number - x.number);
        return reply(200, list.map((p) => this.#pullView(fn, p, false)));
      }
      if (method === 'POST' && rest.length === 1) {
        if (!need('pull_requests', 'write')) return denied();
        const pr = (body ?? {}) as { title?: string; head?: string; base?: string; body?: string };
        if (pulls.some((p) => p.state === 'open' && p.head === pr.head && p.base === pr.base)) {
          return reply(422, { message: 'Validation Failed', errors: [{ resource: 'PullRequest', code: 'custom', message: `A pull request already exists for ${fn.split('/')[0]}:${pr.head}.` }], documentation_url: DOCS });
        }
        if (typeof pr.head !== 'string' || !this.#repo(fn).branches.has(pr.head)) {
          return reply(422, { message: 'Validation Failed', errors: [{ resource: 'PullRequest', field: 'head', code: 'invalid' }], documentation_url: DOCS });
        }
        const created: FakePull = { number: pulls.length + 1, state: 'open', merged: false, title: pr.title ?? '', body: pr.body ?? '', head: pr.head, base: pr.base ?? this.#host.defaultBranch(fn) };
        pulls.push(created);
        return reply(201, this.#pullView(fn, created, true));
      }
      if (method === 'GET' && rest.length === 2) {
        const pr = pulls.find((p) => p.number === Number(b));
        return pr ? reply(200, this.#pullView(fn, pr, true)) : message(404, 'Not Found');
      }
    }

    // actions
    if (a === 'actions' && b === 'secrets') {
      if (method === 'GET' && c === 'public-key') {
        if (!need('secrets', 'read')) return denied();
        return reply(200, { key_id: this.#keyId, key: sodium.to_base64(this.#keyPair.publicKey, sodium.base64_variants.ORIGINAL) });
      }
      if (method === 'PUT' && c !== undefined && rest.length === 3) {
        if (!need('secrets', 'write')) return denied();
        const { encrypted_value: sealed, key_id: keyId } = (body ?? {}) as { encrypted_value?: string; key_id?: string };
        if (keyId !== this.#keyId || typeof sealed !== 'string') return message(422, 'Invalid request.\n\nkey_id does not match the repository public key.');
        try {
          sodium.crypto_box_seal_open(sodium.from_base64(sealed, sodium.base64_variants.ORIGINAL), this.#keyPair.publicKey, this.#keyPair.privateKey);
        } catch {
          return message(422, 'Bad request: encrypted_value could not be decrypted with the repository public key.');
        }
        const secrets = this.#repo(fn).secrets;
        const existed = secrets.has(c.toUpperCase());
        secrets.set(c.toUpperCase(), { sealed, keyId });
        return reply(existed ? 204 : 201, existed ? undefined : {});
      }
    }
    if (a === 'actions' && b === 'workflows' && c !== undefined) {
      if (method === 'POST' && d === 'dispatches') return this.#dispatch(fn, c, body, need('actions', 'write'), reply, message);
      if (method === 'GET' && d === 'runs') {
        if (this.runsListedAfterReads > 0) {
          this.runsListedAfterReads--;
          return reply(200, { total_count: 0, workflow_runs: [] });
        }
        const created = /^>=(.+)$/.exec(url.searchParams.get('created') ?? '')?.[1];
        const event = url.searchParams.get('event');
        const runs = this.runs(fn)
          .filter((r) => r.workflow === c && (event === null || r.event === event) && (created === undefined || Date.parse(r.created_at) >= Date.parse(created)))
          .sort((x, y) => y.id - x.id);
        return reply(200, { total_count: runs.length, workflow_runs: runs.map((r) => this.#runView(fn, r)) });
      }
    }
    if (a === 'actions' && b === 'runs' && c !== undefined && method === 'GET') {
      const run = this.runs(fn).find((r) => r.id === Number(c));
      if (!run) return message(404, 'Not Found');
      if (d === undefined) {
        const view = this.#runView(fn, run);
        if (this.autoRun !== null && this.dispatched(fn).includes(run)) this.#moveOn(fn, run, this.autoRun);
        return reply(200, view);
      }
      if (d === 'jobs') {
        return reply(200, {
          total_count: run.jobs.length,
          jobs: run.jobs.map((j, i) => ({ id: run.id * 10 + i, run_id: run.id, name: j.name, status: run.status, conclusion: j.conclusion, html_url: `https://github.com/${fn}/actions/runs/${run.id}/job/${run.id * 10 + i}`, steps: j.steps.map((s, n) => ({ ...s, number: n + 1, status: run.status })) })),
        });
      }
    }
    return false;
  }

  /** One state on: queued → in_progress → completed. */
  #moveOn(fn: string, run: FakeRun, conclusion: 'success' | 'failure'): void {
    if (run.status === 'queued') run.status = 'in_progress';
    else if (run.status === 'in_progress') this.completeRun(fn, run.id, conclusion, conclusion === 'failure' ? { job: 'deploy', step: 'kamal deploy' } : undefined);
  }

  #dispatch(fn: string, workflow: string, body: unknown, allowed: boolean, reply: (s: number, p?: unknown) => true, message: (s: number, t: string) => true): true {
    if (!allowed) return message(403, 'Resource not accessible by integration');
    const req = (body ?? {}) as { ref?: string; inputs?: Record<string, string>; return_run_details?: boolean };
    if (this.dispatchMode === 'reject_field' && 'return_run_details' in req) {
      return reply(422, { message: 'Invalid request.\n\n"return_run_details" is not a permitted key.', documentation_url: DOCS });
    }
    const files = this.branchFiles(fn, req.ref ?? '');
    const text = files?.get(`.github/workflows/${workflow}`);
    if (text === undefined) return message(404, 'Not Found');
    if (!/^\s*workflow_dispatch\s*:/m.test(text)) return message(422, "Workflow does not have 'workflow_dispatch' trigger");
    const inputs = req.inputs ?? {};
    // The run name is the workflow's `run-name:` with ${{ inputs.x }} filled in.
    const template = /^run-name:\s*(.+)$/m.exec(text)?.[1]?.trim().replace(/^["']|["']$/g, '') ?? workflow;
    const title = template.replace(/\$\{\{\s*inputs\.([A-Za-z0-9_-]+)\s*\}\}/g, (_m, k: string) => inputs[k] ?? '');
    const run = this.#newRun(fn, workflow, title, inputs);
    this.#dispatched.set(fn, [...this.dispatched(fn), run]);
    for (const check of [...this.#dispatchWaiters]) check();
    if (this.dispatchMode === 'details' && req.return_run_details === true) {
      return reply(200, { workflow_run_id: run.id, run_url: `${this.#host.url}/repos/${fn}/actions/runs/${run.id}`, html_url: `https://github.com/${fn}/actions/runs/${run.id}` });
    }
    return reply(204);
  }

  #newRun(fn: string, workflow: string, title: string, inputs: Record<string, string>): FakeRun {
    const run: FakeRun = { id: nextRunId++, workflow, display_title: title, event: 'workflow_dispatch', status: 'queued', conclusion: null, created_at: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'), head_sha: this.#host.headSha(fn), inputs, jobs: [] };
    this.runs(fn).push(run);
    return run;
  }

  #runView(fn: string, r: FakeRun): Record<string, unknown> {
    return {
      id: r.id,
      name: 'VMKit deploy',
      display_title: r.display_title,
      event: r.event,
      status: r.status,
      conclusion: r.conclusion,
      created_at: r.created_at,
      head_sha: r.head_sha,
      path: `.github/workflows/${r.workflow}`,
      html_url: `https://github.com/${fn}/actions/runs/${r.id}`,
      url: `${this.#host.url}/repos/${fn}/actions/runs/${r.id}`,
      jobs_url: `${this.#host.url}/repos/${fn}/actions/runs/${r.id}/jobs`,
    };
  }

  #pullView(fn: string, p: FakePull, single: boolean): Record<string, unknown> {
    const merged = p.merged ? { merged_at: new Date().toISOString(), merge_commit_sha: this.#host.headSha(fn) } : { merged_at: null, merge_commit_sha: null };
    return {
      number: p.number,
      state: p.state,
      title: p.title,
      body: p.body,
      html_url: `https://github.com/${fn}/pull/${p.number}`,
      head: { ref: p.head, sha: this.#branchSha(fn, p.head) },
      base: { ref: p.base },
      ...merged,
      // Only the single-pull endpoint carries `merged`, as on GitHub.
      ...(single ? { merged: p.merged } : {}),
    };
  }

  #branchSha(fn: string, name: string): string | null {
    if (name === this.#host.defaultBranch(fn)) return this.#host.headSha(fn);
    return this.#repo(fn).branches.get(name)?.sha ?? null;
  }

  #commit(fn: string, branch: string, files: Map<string, string>): string {
    if (branch === this.#host.defaultBranch(fn)) {
      this.#host.push(fn, Object.fromEntries(files));
      return this.#host.headSha(fn);
    }
    const sha = createHash('sha1').update(JSON.stringify([...files].sort())).update(branch).digest('hex');
    this.#repo(fn).branches.set(branch, { sha, files });
    return sha;
  }

  #repo(fullName: string): RepoState {
    const key = fullName.toLowerCase();
    let s = this.#state.get(key);
    if (!s) {
      s = { branches: new Map(), pulls: [], secrets: new Map(), runs: [] };
      this.#state.set(key, s);
    }
    return s;
  }
}

function blobSha(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

/**
 * A control plane set up to deploy `acme/shop` to `staging`: the local GitHub stand-in
 * with the App installed, the workspace's providers injected before start-up (so a
 * restarted control plane resumes with the same ones), local DNS records that outlive
 * a restart, and short poll intervals. Sandboxes the local provider made are destroyed
 * at teardown.
 *
 *   const rig = await deployRig(t, { files: APP_FILES });
 *   const first = await rig.deploy();                       // POST /api/deploys
 *   const done = await rig.until(id, (d) => d.status !== 'running');
 */
import { generateKeyPairSync } from 'node:crypto';
import type { ApiPlugin, AppContext } from '../../control-plane/src/app.ts';
import { ROUTES } from '../../control-plane/src/app.ts';
import { freePort } from './cp-process.ts';
import { localProviderFor } from '../../control-plane/src/providers/compute/local.ts';
import { MemoryDnsRecordStore, LocalDnsProvider } from '../../control-plane/src/providers/dns/local.ts';
import { GitHubClient } from '../../control-plane/src/providers/github/client.ts';
import { computeProviderOf } from '../../control-plane/src/services/instances.ts';
import type { ComputeProvider } from '../../control-plane/src/providers/compute/types.ts';
import type { DeployTimings } from '../../control-plane/src/services/deploy/timings.ts';
import { startTestControlPlane } from './control-plane.ts';
import type { ApiResponse, TestControlPlane } from './control-plane.ts';
import { FakeGitHub } from './fake-github.ts';
import type { FakeRepo } from './fake-github.ts';

export const OWNER = 'acme';
export const NAME = 'shop';
export const FULL = `${OWNER}/${NAME}`;
export const DEST = 'staging';
const APP_ID = '424242';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const APP_PEM = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();

/** An Express app, as the scan sees it. */
export const APP_FILES: Record<string, string> = {
  'package.json': JSON.stringify({ name: 'shop', scripts: { start: 'node server.js' }, dependencies: { express: '4.21.2' } }, null, 2) + '\n',
  'server.js': "const app = require('express')();\napp.get('/up', (_req, res) => res.send('ok'));\napp.listen(3000);\n",
  'Dockerfile': 'FROM node:22-slim\nCOPY . .\nRUN npm ci\nCMD ["npm", "start"]\n',
};

/** Everything the App may be granted for deploy. */
export const ALL_PERMISSIONS: NonNullable<FakeRepo['appPermissions']> = {
  contents: 'write',
  workflows: 'write',
  pull_requests: 'write',
  actions: 'write',
  secrets: 'write',
  metadata: 'read',
};

export interface DeployStep {
  seq: number;
  name: string;
  state: string;
  attempts: number;
  detail: Record<string, unknown> | null;
  error_key: string | null;
  error_message: string | null;
}

export interface DeployBody {
  deploy_id: string | null;
  id: string;
  status: string;
  pr_url: string | null;
  app_url: string | null;
  run_url: string | null;
  instance_id: string | null;
  repo: string;
  dest: string;
  sha: string | null;
  current_step: string | null;
  failed_step: string | null;
  error_key: string | null;
  error_message: string | null;
  steps: DeployStep[];
  updated_at: string;
}

export interface DeployRigOptions {
  files?: Record<string, string>;
  appPermissions?: FakeRepo['appPermissions'];
  /** No GitHub configured for the workspace (local checkouts only). */
  noGitHub?: boolean;
  /** No compute configured for the workspace. */
  noCompute?: boolean;
  timings?: Partial<Omit<DeployTimings, 'stepTimeoutMs'>> & { stepTimeoutMs?: Partial<DeployTimings['stepTimeoutMs']> };
  /** Wraps the workspace's compute provider (e.g. to hold a create); called again after a restart. */
  wrapCompute?: (provider: ComputeProvider) => ComputeProvider;
}

export interface DeployRig {
  cp: TestControlPlane;
  fake: FakeGitHub;
  dnsStore: MemoryDnsRecordStore;
  repoId: string;
  envId: string;
  /** POST /api/deploys for acme/shop → staging unless told otherwise. */
  deploy(body?: Record<string, unknown>, key?: string): Promise<ApiResponse<DeployBody>>;
  get(id: string, query?: string): Promise<ApiResponse<DeployBody>>;
  /** Long-polls GET /api/deploys/{id} (after=updated_at) until `done` holds. */
  until(id: string, done: (d: DeployBody) => boolean, what?: string, timeoutMs?: number): Promise<DeployBody>;
  /** Sandboxes the local provider lists (the VMs made). */
  vms(): Promise<{ ref: string }[]>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function deployRig(t: Teardown, opts: DeployRigOptions = {}): Promise<DeployRig> {
  const fake = await FakeGitHub.start({
    app: { id: APP_ID, publicKey },
    repos: [{ owner: OWNER, name: NAME, files: opts.files ?? APP_FILES, installationId: 7, appPermissions: opts.appPermissions ?? ALL_PERMISSIONS }],
  });
  t.teardown(() => fake.close());
  const dnsStore = new MemoryDnsRecordStore();
  const github = new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: APP_ID, privateKey: APP_PEM } });
  // Before every other route, so the resume at start-up sees the same providers.
  const inject: ApiPlugin = (_app, { ctx }) => {
    ctx.deployTimings = { runPollMs: 100, findRunPollMs: 100, ...opts.timings };
    let compute: ComputeProvider | null | undefined;
    const computeOf = (): ComputeProvider | null => {
      if (compute !== undefined) return compute;
      const local = opts.noCompute ? undefined : computeProviderOf(ctx, 'local');
      return (compute = local === undefined ? null : (opts.wrapCompute?.(local) ?? local));
    };
    ctx.deployProviders = (): ReturnType<NonNullable<AppContext['deployProviders']>> =>
      Promise.resolve({
        compute: computeOf(),
        dns: new LocalDnsProvider({ store: dnsStore }),
        github: opts.noGitHub ? null : github,
      });
  };
  // A fixed port: agents in the sandboxes dial it again after a restart.
  const cp = await startTestControlPlane({ routes: [inject, ...ROUTES], config: { port: await freePort() } });
  const sandboxes = localProviderFor(cp.dataDir);
  t.teardown(async () => {
    // Before the data dir (which holds their state) goes with the control plane.
    for (const s of await sandboxes.list()) await sandboxes.destroy(s.ref).catch(() => undefined);
    await cp.close().catch(() => undefined);
  });
  const repo = await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: FULL } });
  const env = await cp.api<{ id: string }>('POST', `/api/repos/${repo.body.id}/environments`, { body: { name: DEST } });

  // After a restart on the same port, fetch's pool may still hold a keep-alive socket the
  // old server closed: that request is sent once more on a fresh connection.
  const call = async <T>(method: string, path: string, o: Parameters<TestControlPlane['api']>[2]): Promise<ApiResponse<T>> => {
    try {
      return await cp.api<T>(method, path, o);
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw err;
      return cp.api<T>(method, path, o);
    }
  };
  const rig: DeployRig = {
    cp,
    fake,
    dnsStore,
    repoId: repo.body.id,
    envId: env.body.id,
    deploy: (body = {}, key) => call<DeployBody>('POST', '/api/deploys', { body: { repo: FULL, dest: DEST, ...body }, ...(key === undefined ? {} : { key }) }),
    get: (id, query = '') => call<DeployBody>('GET', `/api/deploys/${id}${query}`, {}),
    async until(id, done, what = 'the deploy to move', timeoutMs = 300_000) {
      const deadline = Date.now() + timeoutMs;
      let after = '';
      for (;;) {
        const res = await rig.get(id, `?wait_ms=20000${after ? `&after=${encodeURIComponent(after)}` : ''}`);
        if (res.status !== 200) throw new Error(`GET /api/deploys/${id} answered ${res.status}: ${JSON.stringify(res.body)}`);
        if (done(res.body)) return res.body;
        if (Date.now() > deadline) throw new Error(`waited in vain for ${what}; last: ${JSON.stringify(res.body)}`);
        after = res.body.updated_at;
      }
    },
    vms: () => sandboxes.list(),
  };
  return rig;
}

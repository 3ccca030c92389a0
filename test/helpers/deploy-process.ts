/**
 * The control plane as its own process, set up to deploy `acme/shop` to `staging` the way
 * an operator would: GitHub (the local stand-in, as an App) and DNS (the Cloudflare
 * stand-in) configured through `PUT /api/workspace/{github,dns}`, compute the embedded
 * local sandbox. The stand-ins live in the test process, so they outlive a SIGKILL of the
 * control plane and count what it did across restarts.
 *
 *   const rig = await deployProcess(t);
 *   const first = await rig.deploy();                 // scaffolding_pr_open
 *   rig.github.writes.mergePull(FULL, 1);
 *   const started = await rig.deploy();               // running
 *   await rig.until(id, atStep('hardening'));         // long-poll until the step runs
 *   await rig.crash();                                // SIGKILL, start again on the same data dir
 */
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { ALL_PERMISSIONS, APP_FILES, DEST, FULL, NAME, OWNER } from './deploy-rig.ts';
import type { DeployBody } from './deploy-rig.ts';
import { crashRig } from './crash-rig.ts';
import type { ControlPlaneProcess } from './cp-process.ts';
import { serverRows } from './cp-process.ts';
import type { ApiResponse } from './control-plane.ts';
import { FakeCloudflare } from './fake-cloudflare.ts';
import { FakeGitHub } from './fake-github.ts';

export { DEST, FULL };
export type { DeployBody };

const APP_ID = '515151';
const CF_TOKEN = 'cf-test-token-0123456789abcdef0123456789';
export const ZONE = 'apps.example.com';

export interface DeployProcess {
  github: FakeGitHub;
  cloudflare: FakeCloudflare;
  dataDir: string;
  /** The control plane now running. */
  cp: () => ControlPlaneProcess;
  deploy(body?: Record<string, unknown>): Promise<ApiResponse<DeployBody>>;
  get(id: string, query?: string): Promise<ApiResponse<DeployBody>>;
  /** Long-polls GET /api/deploys/{id} (after=updated_at) until `done` holds. */
  until(id: string, done: (d: DeployBody) => boolean, what: string, timeoutMs?: number): Promise<DeployBody>;
  /** SIGKILL, then (after `whileDown`, which sees the data as the dead process left it) the same control plane again on the same data dir and port. */
  crash(whileDown?: () => unknown): Promise<void>;
  /** A step's state as the database holds it (read from the test, also while no process runs). */
  stepState(deployId: string, step: string): Promise<string | undefined>;
  /** Sandbox VMs on this machine; instances rows not destroyed or failed; VMKit's DNS records; dispatched runs. */
  counts(): Promise<{ vms: number; instances: number; dnsRecords: number; dispatches: number }>;
}

/** True once the deploy has ended or `step` is under way. */
export const atStep = (step: string) => (d: DeployBody) => d.status !== 'running' || d.steps.some((s) => s.name === step && s.state === 'running');

/** The local GitHub App and Cloudflare stand-ins a deploy talks to, closed at teardown. */
export interface DeployFakes {
  github: FakeGitHub;
  cloudflare: FakeCloudflare;
  /** The GitHub App's private key (its public half is the fake's). */
  privateKey: KeyObject;
}

export async function startDeployFakes(t: { teardown(fn: () => unknown): void }): Promise<DeployFakes> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const github = await FakeGitHub.start({
    app: { id: APP_ID, publicKey },
    repos: [{ owner: OWNER, name: NAME, files: APP_FILES, installationId: 9, appPermissions: ALL_PERMISSIONS }],
  });
  t.teardown(() => github.close());
  const cloudflare = await FakeCloudflare.start({ token: CF_TOKEN, zoneId: 'a'.repeat(32), zoneName: ZONE });
  t.teardown(() => cloudflare.close());
  return { github, cloudflare, privateKey };
}

/** Gives the workspace the fakes as its GitHub App and DNS provider. */
export async function configureDeployProviders(
  cp: { api<T = unknown>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> },
  fakes: DeployFakes,
): Promise<void> {
  const puts: [string, Record<string, unknown>][] = [
    [
      '/api/workspace/github',
      { provider: 'github', app_id: APP_ID, private_key: fakes.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), api_url: fakes.github.url },
    ],
    ['/api/workspace/dns', { provider: 'cloudflare', token: CF_TOKEN, zone_id: 'a'.repeat(32), zone: ZONE, api_url: fakes.cloudflare.url }],
  ];
  for (const [path, body] of puts) {
    const r = await cp.api('PUT', path, body);
    if (r.status >= 300) throw new Error(`PUT ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  }
}

export async function deployProcess(t: { teardown(fn: () => unknown): void }, env: NodeJS.ProcessEnv = {}): Promise<DeployProcess> {
  const fakes = await startDeployFakes(t);
  const { github, cloudflare } = fakes;

  const rig = crashRig(t, env);
  const { dataDir, provider, start } = await rig;
  let cp = await start();
  const must = async <T>(res: Promise<ApiResponse<T>>, what: string): Promise<ApiResponse<T>> => {
    const r = await res;
    if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
    return r;
  };
  await configureDeployProviders(cp, fakes);
  const repo = await must(cp.api<{ id: string }>('POST', '/api/repos', { repo: FULL }), 'POST /api/repos');
  await must(cp.api('POST', `/api/repos/${repo.body.id}/environments`, { name: DEST }), 'POST environments');

  // After a restart on the same port, fetch's pool may still hold a keep-alive socket the
  // old process had: such a request is sent once more on a fresh connection.
  const call = async <T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<ApiResponse<T>> => {
    try {
      return await cp.api<T>(method, path, body, timeoutMs);
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw err;
      return cp.api<T>(method, path, body, timeoutMs);
    }
  };

  const self: DeployProcess = {
    github,
    cloudflare,
    dataDir,
    cp: () => cp,
    deploy: (body = {}) => call<DeployBody>('POST', '/api/deploys', { repo: FULL, dest: DEST, ...body }),
    get: (id, query = '') => call<DeployBody>('GET', `/api/deploys/${id}${query}`),
    async until(id, done, what, timeoutMs = 600_000) {
      const deadline = Date.now() + timeoutMs;
      let after = '';
      for (;;) {
        const res = await call<DeployBody>('GET', `/api/deploys/${id}?wait_ms=20000${after ? `&after=${encodeURIComponent(after)}` : ''}`, undefined, 60_000);
        if (res.status !== 200) throw new Error(`GET /api/deploys/${id} answered ${res.status}: ${JSON.stringify(res.body)}`);
        if (done(res.body)) return res.body;
        if (Date.now() > deadline) throw new Error(`waited in vain for ${what}; last: ${JSON.stringify(res.body)}`);
        after = res.body.updated_at;
      }
    },
    async crash(whileDown) {
      cp.kill('SIGKILL');
      await cp.exited;
      await whileDown?.();
      cp = await start();
    },
    async stepState(deployId, step) {
      const rows = await serverRows<{ state: string }>(dataDir, 'SELECT state FROM deploy_steps WHERE deploy_id = ? AND name = ?', [deployId, step]);
      return rows[0]?.state;
    },
    async counts() {
      const [live] = await serverRows<{ n: number }>(dataDir, "SELECT count(*) AS n FROM instances WHERE status NOT IN ('destroyed', 'failed')");
      return {
        vms: (await provider.list()).length,
        instances: live?.n ?? 0,
        dnsRecords: cloudflare.records().length,
        dispatches: github.writes.dispatched(FULL).length,
      };
    },
  };
  return self;
}

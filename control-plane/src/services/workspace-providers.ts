/**
 * Which compute, DNS and GitHub providers a workspace deploys (and scans) with: its own
 * settings (`PUT /api/workspace/{compute,dns,github}`, rows of `workspace_providers`),
 * or else the defaults. The first workspace (the one bootstrap made) gets today's
 * environment: the local sandbox, local DNS, GitHub from VMKIT_GITHUB_*. Any other
 * workspace gets no compute and no GitHub (deploy answers compute_target_missing and
 * github_app_not_installed) and local DNS.
 *
 * Resolved sets are cached per workspace (clients keep their token caches) and dropped
 * when the workspace's settings change.
 */
import type { AppContext } from '../app.ts';
import type { Db } from '../db/index.ts';
import { DbDnsRecordStore } from '../db/dns-records.ts';
import { firstWorkspaceId, getWorkspaceProvider } from '../db/workspace-providers.ts';
import type { ProviderKind, WorkspaceProviderRow } from '../db/workspace-providers.ts';
import { ApiError } from '../errors.ts';
import { SecretBox, SecretBoxError } from '../auth/secret-box.ts';
import { HetznerComputeProvider } from '../providers/compute/hetzner.ts';
import type { HetznerProviderOptions } from '../providers/compute/hetzner.ts';
import type { ComputeProvider, CreateVmSpec, CreatedVm, VmStatus } from '../providers/compute/types.ts';
import { CloudflareDnsProvider } from '../providers/dns/cloudflare.ts';
import { DEFAULT_LOCAL_ZONE, LocalDnsProvider } from '../providers/dns/local.ts';
import type { DnsProvider } from '../providers/dns/types.ts';
import { GitHubClient } from '../providers/github/client.ts';
import type { GitHubAuth } from '../providers/github/client.ts';
import type { WorkspaceProviderSet } from './deploy/providers.ts';
import { computeProviderOf } from './instances.ts';
import { repoSourceConfigFromEnv } from './scan/service.ts';

/** The GitHub the first workspace uses when it configured none (VMKIT_GITHUB_*), or null. */
export type DefaultGitHub = { apiBaseUrl: string | undefined; auth: GitHubAuth } | null;

export interface WorkspaceProvidersOptions {
  db: Db;
  box: SecretBox;
  /** The `local` compute provider (the sandbox); may throw when the sandbox cannot run here. */
  localCompute: () => ComputeProvider | undefined;
  /** The local DNS zone (VMKIT_DNS_ZONE, else vmkit.internal). */
  dnsZone?: string;
  defaultGitHub: DefaultGitHub;
  now?: () => number;
  /** Extra client options (tests: faster polls). */
  hetzner?: Partial<Omit<HetznerProviderOptions, 'token' | 'baseUrl' | 'serverType' | 'image' | 'location'>>;
}

/** What a sealed secret is, by kind and provider: part of the AES-GCM associated data. */
export function secretContext(workspaceId: string, kind: ProviderKind, provider: string, secretName: string): string {
  return `${workspaceId}/${kind}/${provider}/${secretName}`;
}

/** The name of the secret a row holds (`token`, or `private_key` for a GitHub App). */
export function secretNameOf(kind: ProviderKind, settings: Record<string, unknown>): string {
  return kind === 'github' && settings.auth === 'app' ? 'private_key' : 'token';
}

export class WorkspaceProviders {
  readonly #opts: WorkspaceProvidersOptions;
  readonly #now: () => number;
  readonly #cache = new Map<string, Promise<WorkspaceProviderSet>>();
  #first: string | null = null;
  #defaultGitHub: GitHubClient | null | undefined;

  constructor(opts: WorkspaceProvidersOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  get box(): SecretBox {
    return this.#opts.box;
  }

  get dnsZone(): string {
    return this.#opts.dnsZone ?? DEFAULT_LOCAL_ZONE;
  }

  get defaultGitHubConfig(): DefaultGitHub {
    return this.#opts.defaultGitHub;
  }

  /** The workspace's providers; the deploy service's port (ProvidersOf). */
  resolve(workspaceId: string): Promise<WorkspaceProviderSet> {
    const hit = this.#cache.get(workspaceId);
    if (hit) return hit;
    const built = this.#build(workspaceId);
    this.#cache.set(workspaceId, built);
    // A failure (a secret that no longer opens) is not kept: the next call tries again.
    built.catch(() => {
      if (this.#cache.get(workspaceId) === built) this.#cache.delete(workspaceId);
    });
    return built;
  }

  /** The workspace's own GitHub (set with PUT /api/workspace/github), or null: what scans read through. */
  async configuredGitHub(workspaceId: string): Promise<GitHubClient | null> {
    const { github } = await this.resolve(workspaceId);
    return github !== null && github !== this.#defaultGitHub ? github : null;
  }

  /** Forgets the workspace's resolved providers (its settings changed). */
  invalidate(workspaceId: string): void {
    this.#cache.delete(workspaceId);
  }

  /** True for the workspace bootstrap made: it gets the environment's defaults. */
  async isFirstWorkspace(workspaceId: string): Promise<boolean> {
    this.#first ??= await firstWorkspaceId(this.#opts.db);
    return this.#first === workspaceId;
  }

  /** The GitHub client of the environment (VMKIT_GITHUB_*), built once and shared. */
  defaultGitHub(): GitHubClient | null {
    if (this.#defaultGitHub === undefined) {
      const gh = this.#opts.defaultGitHub;
      this.#defaultGitHub = gh ? new GitHubClient({ auth: gh.auth, ...(gh.apiBaseUrl && { apiBaseUrl: gh.apiBaseUrl }) }) : null;
    }
    return this.#defaultGitHub;
  }

  /** Opens a row's sealed secret; a secret that does not open says how to fix it. */
  openSecret(row: WorkspaceProviderRow): string {
    if (row.secretSealed === null) throw new ApiError('provider_secret_unreadable', `The workspace's ${row.kind} settings (${row.provider}) hold no secret; set them again.`);
    const kind = row.kind as ProviderKind;
    try {
      return this.#opts.box.open(row.secretSealed, secretContext(row.workspaceId, kind, row.provider, secretNameOf(kind, row.settings)));
    } catch (err) {
      if (!(err instanceof SecretBoxError)) throw err;
      throw new ApiError(
        'provider_secret_unreadable',
        `The workspace's ${row.kind} secret (${row.provider}) cannot be opened: ${err.message}. Set it again with PUT /api/workspace/${row.kind}.`,
      );
    }
  }

  // ---- building providers from settings -------------------------------------------------

  /** A compute provider for these settings; `secret` is the opened token. */
  computeFrom(provider: string, settings: Record<string, unknown>, secret: string | null): ComputeProvider | null {
    if (provider === 'local') return this.#local();
    if (provider === 'hetzner' && secret !== null) {
      return new HetznerComputeProvider({
        ...this.#opts.hetzner,
        token: secret,
        ...(typeof settings.api_url === 'string' && { baseUrl: settings.api_url }),
        ...(typeof settings.server_type === 'string' && { serverType: settings.server_type }),
        ...(typeof settings.image === 'string' && { image: settings.image }),
        ...(typeof settings.location === 'string' && { location: settings.location }),
      });
    }
    return null;
  }

  dnsFrom(workspaceId: string, provider: string, settings: Record<string, unknown>, secret: string | null): DnsProvider {
    if (provider === 'cloudflare' && secret !== null) {
      return new CloudflareDnsProvider({
        apiToken: secret,
        zoneId: String(settings.zone_id),
        zoneName: String(settings.zone),
        proxied: settings.proxied === true,
        ...(typeof settings.api_url === 'string' && { baseUrl: settings.api_url }),
      });
    }
    const zone = typeof settings.zone === 'string' ? settings.zone : this.dnsZone;
    return new LocalDnsProvider({ zone, store: new DbDnsRecordStore(this.#opts.db, workspaceId, zone, this.#now) });
  }

  githubFrom(settings: Record<string, unknown>, secret: string): GitHubClient {
    const auth: GitHubAuth = settings.auth === 'app' ? { kind: 'app', appId: String(settings.app_id), privateKey: secret } : { kind: 'token', token: secret };
    return new GitHubClient({ auth, ...(typeof settings.api_url === 'string' && { apiBaseUrl: settings.api_url }) });
  }

  async #build(workspaceId: string): Promise<WorkspaceProviderSet> {
    const [compute, dns, github] = await Promise.all([
      getWorkspaceProvider(this.#opts.db, workspaceId, 'compute'),
      getWorkspaceProvider(this.#opts.db, workspaceId, 'dns'),
      getWorkspaceProvider(this.#opts.db, workspaceId, 'github'),
    ]);
    const first = await this.isFirstWorkspace(workspaceId);
    return {
      compute: compute ? this.computeFrom(compute.provider, compute.settings, this.#secretOf(compute)) : first ? this.#local() : null,
      dns: dns ? this.dnsFrom(workspaceId, dns.provider, dns.settings, this.#secretOf(dns)) : this.dnsFrom(workspaceId, 'local', {}, null),
      github: github ? this.githubFrom(github.settings, this.openSecret(github)) : first ? this.defaultGitHub() : null,
    };
  }

  #secretOf(row: WorkspaceProviderRow): string | null {
    return row.secretSealed === null ? null : this.openSecret(row);
  }

  /** The sandbox; when it cannot run here, a stand-in that says so when a VM is asked of it. */
  #local(): ComputeProvider | null {
    try {
      return this.#opts.localCompute() ?? null;
    } catch (err) {
      return new UnavailableCompute('local', err);
    }
  }
}

/**
 * A configured provider that cannot work on this machine (the sandbox without root):
 * the workspace still resolves (its GitHub and DNS work), and provisioning says why.
 */
class UnavailableCompute implements ComputeProvider {
  readonly name: string;
  readonly reason: unknown;
  constructor(
    name: string,
    reason: unknown,
  ) {
    this.name = name;
    this.reason = reason;
  }

  create(_spec: CreateVmSpec): Promise<CreatedVm> {
    return Promise.reject(this.reason instanceof Error ? this.reason : new Error(String(this.reason)));
  }

  status(_ref: string): Promise<VmStatus> {
    return Promise.reject(this.reason instanceof Error ? this.reason : new Error(String(this.reason)));
  }

  destroy(_ref: string): Promise<void> {
    return Promise.reject(this.reason instanceof Error ? this.reason : new Error(String(this.reason)));
  }
}

/**
 * The resolver as the control plane runs it: the sandbox from the instances service,
 * secrets under the control plane's secret-box key (SecretBox.forConfig), the first workspace's GitHub from
 * VMKIT_GITHUB_* and its DNS zone from VMKIT_DNS_ZONE.
 */
export function workspaceProvidersFor(ctx: AppContext, env: NodeJS.ProcessEnv = process.env): WorkspaceProviders {
  return new WorkspaceProviders({
    db: ctx.db,
    box: SecretBox.forConfig(ctx.config),
    localCompute: () => computeProviderOf(ctx, 'local'),
    dnsZone: env.VMKIT_DNS_ZONE || DEFAULT_LOCAL_ZONE,
    defaultGitHub: repoSourceConfigFromEnv(ctx.config.dataDir, env).github,
    now: ctx.now,
  });
}

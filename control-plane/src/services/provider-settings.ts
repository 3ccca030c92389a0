/**
 * A workspace's provider settings as the API writes and shows them: validated, the
 * credentials tried against the provider, the secret sealed (SecretBox, bound to the
 * workspace, kind and provider) and never shown again: a view carries its fingerprint
 * and when it was set. A PUT without the secret keeps the stored one when the provider
 * stays the same, so settings can change without pasting the token again.
 */
import { z } from 'zod';
import type { ErrorKey } from '@vmkit/protocol';
import type { Db } from '../db/index.ts';
import { deleteWorkspaceProvider, getWorkspaceProvider, putWorkspaceProvider } from '../db/workspace-providers.ts';
import type { ProviderKind, WorkspaceProviderRow } from '../db/workspace-providers.ts';
import { ApiError } from '../errors.ts';
import { ComputeError } from '../providers/compute/types.ts';
import { HetznerApi } from '../providers/compute/hetzner-api.ts';
import { CloudflareDnsProvider } from '../providers/dns/cloudflare.ts';
import { DnsError, hostFor } from '../providers/dns/types.ts';
import { GitHubError } from '../providers/github/errors.ts';
import { secretContext, secretNameOf } from './workspace-providers.ts';
import type { WorkspaceProviders } from './workspace-providers.ts';

/** Defaults for a small app: 2 vCPU / 4 GB, an image with Node.js >= 18.19 and docker.io, Falkenstein. */
export const HETZNER_DEFAULTS = { server_type: 'cx22', image: 'ubuntu-24.04', location: 'fsn1' } as const;

/** API tokens and keys: printable ASCII, no spaces (every provider's tokens are). */
const Token = z.string().min(8).max(4096).regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');
const ApiUrl = z
  .url({ protocol: /^https?$/ })
  .max(2048)
  .describe("The provider's API base URL (a proxy, GitHub Enterprise Server, a test stand-in)");
const Slug = z.string().regex(/^[a-z0-9][a-z0-9.-]{0,62}$/, 'must be a lowercase name such as fsn1, cx22 or ubuntu-24.04');
const Zone = z
  .string()
  .max(253)
  .regex(/^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a lowercase DNS zone such as example.com');

export const ComputeSettingsBody = z.discriminatedUnion('provider', [
  z.strictObject({ provider: z.literal('local').describe('The local VM sandbox on the control plane machine') }),
  z.strictObject({
    provider: z.literal('hetzner'),
    token: Token.optional().describe('Hetzner Cloud API token (Read & Write); omit to keep the stored one'),
    location: Slug.optional().describe(`Default ${HETZNER_DEFAULTS.location}`),
    server_type: Slug.optional().describe(`Default ${HETZNER_DEFAULTS.server_type}`),
    image: Slug.optional().describe(`Default ${HETZNER_DEFAULTS.image}`),
    api_url: ApiUrl.optional(),
  }),
]);

export const DnsSettingsBody = z.discriminatedUnion('provider', [
  z.strictObject({ provider: z.literal('local'), zone: Zone.optional().describe('Default vmkit.internal (or VMKIT_DNS_ZONE)') }),
  z.strictObject({
    provider: z.literal('cloudflare'),
    token: Token.optional().describe('Cloudflare API token with Zone → DNS → Edit on the zone; omit to keep the stored one'),
    zone_id: z.string().regex(/^[A-Za-z0-9]{1,64}$/, 'must be the zone id from the zone overview'),
    zone: Zone.describe("The zone's name, e.g. example.com"),
    proxied: z.boolean().optional().describe("Default false, so Kamal's Let's Encrypt challenge reaches the VM"),
    api_url: ApiUrl.optional(),
  }),
]);

export const GitHubSettingsBody = z.strictObject({
  provider: z.literal('github'),
  app_id: z
    .union([z.string().regex(/^[1-9][0-9]{0,19}$/, 'must be the numeric App id'), z.number().int().positive()])
    .optional()
    .describe('GitHub App id (with private_key)'),
  private_key: z.string().min(64).max(16_384).optional().describe("The App's private key (PEM); omit to keep the stored one"),
  token: Token.optional().describe('A token instead of an App (fine-grained PAT)'),
  api_url: ApiUrl.optional().describe('https://api.github.com, or https://<host>/api/v3 for GitHub Enterprise Server'),
});

export type ComputeSettings = z.output<typeof ComputeSettingsBody>;
export type DnsSettings = z.output<typeof DnsSettingsBody>;
export type GitHubSettings = z.output<typeof GitHubSettingsBody>;
export type SettingsBody = ComputeSettings | DnsSettings | GitHubSettings;

export const ProviderSettingsView = z.object({
  kind: z.enum(['compute', 'dns', 'github']),
  provider: z.string().nullable().describe('null: none configured (deploy answers compute_target_missing or github_app_not_installed)'),
  source: z.enum(['workspace', 'default']).describe("workspace: set with PUT; default: the control plane's defaults"),
  settings: z.record(z.string(), z.unknown()).describe('Non-secret settings'),
  secret_fingerprint: z.string().nullable().describe('Keyed hash of the secret, to tell which one is set; the secret itself is never returned'),
  secret_set_at: z.string().nullable(),
  updated_at: z.string().nullable(),
});
export type ProviderSettingsViewT = z.output<typeof ProviderSettingsView>;

interface Planned {
  provider: string;
  settings: Record<string, unknown>;
  /** A new secret, or null to keep the stored one (or none needed). */
  secret: string | null;
  needsSecret: boolean;
}

export class ProviderSettings {
  readonly db: Db;
  readonly providers: WorkspaceProviders;
  readonly now: () => number;
  constructor(
    db: Db,
    providers: WorkspaceProviders,
    now: () => number = Date.now,
  ) {
    this.db = db;
    this.providers = providers;
    this.now = now;
  }

  async view(workspaceId: string, kind: ProviderKind): Promise<ProviderSettingsViewT> {
    const row = await getWorkspaceProvider(this.db, workspaceId, kind);
    return row ? rowView(row) : this.#defaultView(workspaceId, kind);
  }

  /** Validates, checks the credentials with the provider, seals and stores; nothing changes on any failure. */
  async put(workspaceId: string, kind: ProviderKind, body: SettingsBody): Promise<ProviderSettingsViewT> {
    const existing = await getWorkspaceProvider(this.db, workspaceId, kind);
    const plan = planOf(kind, body, existing, this.providers.dnsZone);
    let secret = plan.secret;
    if (plan.needsSecret && secret === null) {
      if (!existing || existing.provider !== plan.provider || secretNameOf(kind, existing.settings) !== secretNameOf(kind, plan.settings)) {
        throw new ApiError('invalid_request', `Invalid request: body.${secretNameOf(kind, plan.settings)} is required to set up ${plan.provider} (only a change of settings of the same provider keeps the stored secret).`);
      }
      secret = this.providers.openSecret(existing);
    }
    await this.#check(workspaceId, kind, plan, secret);
    const name = secretNameOf(kind, plan.settings);
    const stored =
      secret === null
        ? { secretSealed: null, secretFingerprint: null, secretSetAt: null }
        : plan.secret === null && existing
          ? { secretSealed: existing.secretSealed, secretFingerprint: existing.secretFingerprint, secretSetAt: existing.secretSetAt }
          : { secretSealed: this.providers.box.seal(secret, secretContext(workspaceId, kind, plan.provider, name)), secretFingerprint: this.providers.box.fingerprint(secret), secretSetAt: this.now() };
    const row = await putWorkspaceProvider(this.db, { workspaceId, kind, provider: plan.provider, settings: plan.settings, ...stored }, this.now());
    this.providers.invalidate(workspaceId);
    return rowView(row);
  }

  /** Back to the defaults; deleting what is not set is fine. */
  async remove(workspaceId: string, kind: ProviderKind): Promise<ProviderSettingsViewT> {
    await deleteWorkspaceProvider(this.db, workspaceId, kind);
    this.providers.invalidate(workspaceId);
    return this.#defaultView(workspaceId, kind);
  }

  /** One cheap authenticated read per provider, so a wrong token or zone is refused now, not mid-deploy. */
  async #check(workspaceId: string, kind: ProviderKind, plan: Planned, secret: string | null): Promise<void> {
    const s = plan.settings;
    try {
      if (kind === 'compute' && plan.provider === 'hetzner' && secret !== null) {
        const api = new HetznerApi({ token: secret, ...(typeof s.api_url === 'string' && { baseUrl: s.api_url }), timeoutMs: 15_000, maxRetries: 1, maxWaitMs: 5_000 });
        await api.listServers({ label_selector: 'managed-by=vmkit' });
      } else if (kind === 'dns' && plan.provider === 'cloudflare' && secret !== null) {
        const dns = new CloudflareDnsProvider({
          apiToken: secret,
          zoneId: String(s.zone_id),
          zoneName: String(s.zone),
          ...(typeof s.api_url === 'string' && { baseUrl: s.api_url }),
          timeoutMs: 15_000,
          maxRetries: 1,
          maxWaitMs: 5_000,
        });
        // A lookup of a name in the zone: needs the token to reach this zone's DNS records.
        await dns.find(hostFor('vmkit', 'check', dns.zone), 'A');
      } else if (kind === 'github' && secret !== null) {
        await this.providers.githubFrom(s, secret).whoAmI();
      } else if (kind === 'dns') {
        hostFor('a', 'b', String(s.zone));
      }
    } catch (err) {
      throw refusal(kind, plan.provider, err, workspaceId);
    }
  }

  #defaultView(workspaceId: string, kind: ProviderKind): Promise<ProviderSettingsViewT> {
    return defaultViewOf(this.providers, workspaceId, kind);
  }
}

/** The body turned into what is stored: defaults filled in, the secret apart. */
function planOf(kind: ProviderKind, body: SettingsBody, existing: WorkspaceProviderRow | undefined, defaultZone: string): Planned {
  if (kind === 'compute') {
    const b = body as ComputeSettings;
    if (b.provider === 'local') return { provider: 'local', settings: {}, secret: null, needsSecret: false };
    return {
      provider: 'hetzner',
      settings: {
        location: b.location ?? HETZNER_DEFAULTS.location,
        server_type: b.server_type ?? HETZNER_DEFAULTS.server_type,
        image: b.image ?? HETZNER_DEFAULTS.image,
        ...(b.api_url !== undefined && { api_url: b.api_url }),
      },
      secret: b.token ?? null,
      needsSecret: true,
    };
  }
  if (kind === 'dns') {
    const b = body as DnsSettings;
    if (b.provider === 'local') return { provider: 'local', settings: { zone: b.zone ?? defaultZone }, secret: null, needsSecret: false };
    return {
      provider: 'cloudflare',
      settings: { zone_id: b.zone_id, zone: b.zone, proxied: b.proxied ?? false, ...(b.api_url !== undefined && { api_url: b.api_url }) },
      secret: b.token ?? null,
      needsSecret: true,
    };
  }
  const b = body as GitHubSettings;
  if (b.token !== undefined && (b.private_key !== undefined || b.app_id !== undefined)) {
    throw new ApiError('invalid_request', 'Invalid request: give either app_id with private_key (a GitHub App) or token, not both.');
  }
  const api = b.api_url !== undefined ? { api_url: b.api_url } : {};
  if (b.token !== undefined) return { provider: 'github', settings: { auth: 'token', ...api }, secret: b.token, needsSecret: true };
  if (b.private_key !== undefined) {
    if (b.app_id === undefined) throw new ApiError('invalid_request', 'Invalid request: body.app_id is required with body.private_key.');
    return { provider: 'github', settings: { auth: 'app', app_id: String(b.app_id), ...api }, secret: b.private_key, needsSecret: true };
  }
  // No secret: keep the stored one, with the same kind of authentication.
  const storedAuth = existing?.provider === 'github' ? existing.settings.auth : undefined;
  if (b.app_id !== undefined && storedAuth !== 'app') {
    throw new ApiError('invalid_request', 'Invalid request: body.private_key is required to set up a GitHub App (the stored credentials are not an App).');
  }
  if (storedAuth === 'app') {
    return { provider: 'github', settings: { auth: 'app', app_id: String(b.app_id ?? existing?.settings.app_id), ...api }, secret: null, needsSecret: true };
  }
  if (storedAuth === 'token') return { provider: 'github', settings: { auth: 'token', ...api }, secret: null, needsSecret: true };
  throw new ApiError('invalid_request', 'Invalid request: give app_id with private_key (a GitHub App) or token.');
}

/** Why the provider refused, as an error that says nothing was saved. */
function refusal(kind: ProviderKind, provider: string, err: unknown, workspaceId: string): unknown {
  if (err instanceof ApiError) return err;
  let key: ErrorKey | null = null;
  if (err instanceof ComputeError || err instanceof DnsError) key = err.key;
  else if (err instanceof GitHubError) {
    key = err.failure === 'rate_limited' ? 'provider_rate_limited' : err.failure === 'upstream' && (err.status === null || err.status >= 500) ? 'provider_unavailable' : 'provider_auth_failed';
  } else if (err instanceof Error && /private key|PEM|DECODER|asn1/i.test(err.message)) {
    return new ApiError('invalid_request', 'Invalid request: body.private_key is not a PEM private key of a GitHub App.');
  }
  if (key === null) return err;
  const message = `${(err as Error).message} Nothing was saved; the ${kind} settings of ${workspaceId} are as they were.`;
  // Unreachable or throttled: the credentials may be fine, say so with the provider's own key.
  if (key === 'provider_unavailable' || key === 'provider_rate_limited') return new ApiError(key, `Could not check the ${provider} credentials: ${message}`);
  return new ApiError('provider_credentials_refused', `${provider} refused the settings: ${message}`);
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function rowView(row: WorkspaceProviderRow): ProviderSettingsViewT {
  return {
    kind: row.kind as ProviderKind,
    provider: row.provider,
    source: 'workspace',
    settings: row.settings,
    secret_fingerprint: row.secretFingerprint,
    secret_set_at: iso(row.secretSetAt),
    updated_at: iso(row.updatedAt),
  };
}

/** What a workspace uses when it set nothing of this kind. */
export async function defaultViewOf(providers: WorkspaceProviders, workspaceId: string, kind: ProviderKind): Promise<ProviderSettingsViewT> {
  const first = await providers.isFirstWorkspace(workspaceId);
  const none = { kind, source: 'default' as const, secret_fingerprint: null, secret_set_at: null, updated_at: null };
  if (kind === 'dns') return { ...none, provider: 'local', settings: { zone: providers.dnsZone } };
  if (kind === 'compute') return first ? { ...none, provider: 'local', settings: {} } : { ...none, provider: null, settings: {} };
  const gh = first ? providers.defaultGitHubConfig : null;
  if (!gh) return { ...none, provider: null, settings: {} };
  const secret = gh.auth.kind === 'app' ? gh.auth.privateKey : gh.auth.token;
  return {
    ...none,
    provider: 'github',
    settings: { auth: gh.auth.kind, ...(gh.auth.kind === 'app' && { app_id: gh.auth.appId }), ...(gh.apiBaseUrl !== undefined && { api_url: gh.apiBaseUrl }) },
    secret_fingerprint: typeof secret === 'string' ? providers.box.fingerprint(secret) : null,
  };
}

import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { listDnsRecords } from '../db/dns-records.ts';
import type { DnsRecordRow } from '../db/dns-records.ts';
import type { ProviderKind } from '../db/workspace-providers.ts';
import { ComputeSettingsBody, DnsSettingsBody, GitHubSettingsBody, ProviderSettings, ProviderSettingsView } from '../services/provider-settings.ts';
import type { WorkspaceProviders} from '../services/workspace-providers.ts';
import { workspaceProvidersFor } from '../services/workspace-providers.ts';
import { iso, listOf } from './views.ts';

declare module '../app.ts' {
  interface AppContext {
    /** The workspace provider resolver; built at start-up unless a test sets it. */
    workspaceProviders?: WorkspaceProviders;
  }
}

const BODIES = { compute: ComputeSettingsBody, dns: DnsSettingsBody, github: GitHubSettingsBody } as const;
const WHAT: Record<ProviderKind, string> = {
  compute: 'the compute provider deploys make VMs with (local sandbox or Hetzner Cloud)',
  dns: 'the DNS provider deploys register names with (local or Cloudflare)',
  github: 'the GitHub credentials deploys and scans use (a GitHub App, or a token)',
};

export const DnsRecordView = z.object({
  id: z.string(),
  zone: z.string(),
  name: z.string(),
  type: z.string().describe('A | AAAA'),
  content: z.string(),
  ttl: z.number(),
  owner: z.string().nullable().describe('The environment the record belongs to'),
  created_at: z.string(),
  updated_at: z.string(),
});
function dnsRecordView(r: DnsRecordRow): z.output<typeof DnsRecordView> {
  return { id: r.id, zone: r.zone, name: r.name, type: r.type, content: r.content, ttl: r.ttl, owner: r.owner, created_at: iso(r.createdAt), updated_at: iso(r.updatedAt) };
}

/**
 * Per-workspace provider settings (scope admin): PUT sets, DELETE returns to the
 * defaults, GET shows them, secrets never (only a fingerprint and when set). Also the
 * local DNS provider's records. Installs the resolver as ctx.deployProviders, so it is
 * registered before the routes that deploy or scan.
 */
export const workspaceProviderRoutes: ApiPlugin = (app, { ctx }) => {
  const providers = (ctx.workspaceProviders ??= workspaceProvidersFor(ctx));
  ctx.deployProviders ??= (workspaceId) => providers.resolve(workspaceId);
  const settings = new ProviderSettings(ctx.db, providers, ctx.now);

  app.get(
    '/api/workspace/providers',
    {
      config: { scope: 'admin', action: 'workspace.providers.list' },
      schema: {
        summary: "The workspace's compute, DNS and GitHub settings (secrets only as fingerprints)",
        response: { 200: z.object({ compute: ProviderSettingsView, dns: ProviderSettingsView, github: ProviderSettingsView }) },
      },
    },
    async (request) => {
      const { workspaceId } = authOf(request);
      return { compute: await settings.view(workspaceId, 'compute'), dns: await settings.view(workspaceId, 'dns'), github: await settings.view(workspaceId, 'github') };
    },
  );

  for (const kind of ['compute', 'dns', 'github'] as const) {
    const path = `/api/workspace/${kind}`;
    app.get(
      path,
      { config: { scope: 'admin', action: `workspace.${kind}.get` }, schema: { summary: `Show ${WHAT[kind]}`, response: { 200: ProviderSettingsView } } },
      async (request) => settings.view(authOf(request).workspaceId, kind),
    );
    app.put(
      path,
      {
        config: { scope: 'admin', action: `workspace.${kind}.set` },
        schema: {
          summary: `Set ${WHAT[kind]}; the credentials are checked with the provider and stored encrypted`,
          body: BODIES[kind],
          response: { 200: ProviderSettingsView },
        },
      },
      async (request) => settings.put(authOf(request).workspaceId, kind, request.body),
    );
    app.delete(
      path,
      {
        config: { scope: 'admin', action: `workspace.${kind}.delete` },
        schema: { summary: `Forget ${WHAT[kind]} (back to the defaults)`, response: { 200: ProviderSettingsView } },
      },
      async (request) => settings.remove(authOf(request).workspaceId, kind),
    );
  }

  app.get(
    '/api/dns-records',
    {
      config: { scope: 'deploys:read', action: 'dns_records.list' },
      schema: { summary: "The local DNS provider's records of this workspace", response: { 200: listOf(DnsRecordView) } },
    },
    async (request) => ({ items: (await listDnsRecords(ctx.db, authOf(request).workspaceId)).map(dnsRecordView) }),
  );
};

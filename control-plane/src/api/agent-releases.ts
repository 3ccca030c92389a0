import { createReadStream } from 'node:fs';
import { z } from 'zod';
import { AGENT_PLATFORMS, agentPlatformSchema, agentReleaseManifestSchema, agentVersionSchema, signReleaseManifest } from '@vmkit/protocol';
import type { AgentPlatform } from '@vmkit/protocol';
import type { ApiPlugin, AppContext } from '../app.ts';
import { ApiError } from '../errors.ts';
import { AgentReleaseStore, ReleaseCorruptError, agentReleasesDir } from '../hub/releases.ts';
import type { AgentRelease } from '../hub/releases.ts';
import { authOf } from '../auth/hooks.ts';
import { startAgentUpdate } from '../services/agent-update.ts';
import { IdParams } from './views.ts';

declare module '../app.ts' {
  interface AppContext {
    /** Agent releases served at /agent/releases (set by agentReleaseRoutes). */
    agentReleases?: AgentReleaseStore;
  }
}

const ReleaseParams = z.strictObject({ version: z.string().max(64), platform: z.string().max(32) });

function checkPlatform(platform: string): AgentPlatform {
  const p = agentPlatformSchema.safeParse(platform);
  if (!p.success) throw new ApiError('invalid_request', `Invalid request: platform must be one of ${AGENT_PLATFORMS.join(', ')}.`);
  return p.data;
}

function checkVersion(version: string): string {
  if (!agentVersionSchema.safeParse(version).success) throw new ApiError('invalid_request', 'Invalid request: version must be a release version like 1.2.3 (or latest, for the manifest).');
  return version;
}

/** The release, mapped to the API's errors. */
export async function findRelease(store: AgentReleaseStore, version: string, platform: AgentPlatform): Promise<AgentRelease> {
  let release: AgentRelease | undefined;
  try {
    release = version === 'latest' ? await store.latest(platform) : await store.get(version, platform);
  } catch (err) {
    if (err instanceof ReleaseCorruptError) throw new ApiError('release_corrupt', `The agent release ${version} for ${platform} is not served: ${err.message}.`);
    throw err;
  }
  if (!release) throw new ApiError('release_not_found', `No agent release ${version} for ${platform} is on this control plane (build one with npm run build:agent).`);
  return release;
}

export function releaseStoreOf(ctx: AppContext): AgentReleaseStore {
  ctx.agentReleases ??= new AgentReleaseStore(agentReleasesDir(ctx.config));
  return ctx.agentReleases;
}

/**
 * What installers and updating agents download, without an API key (a VM has none):
 * the signed manifest of a release and the executable itself. The manifest is signed
 * with the active command-signing key at each request, so it verifies under the key an
 * installer is given and the keys agents pin, through key rotations.
 */
export const agentReleaseRoutes: ApiPlugin = (app, { ctx }) => {
  const store = releaseStoreOf(ctx);
  // Without a release, install.sh (and so every cloud VM) fails: say so where operators look.
  app.addHook('onReady', async () => {
    const present = await store.all();
    const total = present.reduce((n, p) => n + p.versions.length, 0);
    if (total === 0) {
      ctx.logger.warn(
        { agent_releases_dir: store.dir },
        'no agent release to serve: VMs cannot install the agent until one is built (npm run build:agent -- --out <this folder>)',
      );
    } else {
      ctx.logger.info({ agent_releases_dir: store.dir, releases: present.filter((p) => p.versions.length > 0) }, 'agent releases served');
    }
  });

  app.get(
    '/agent/releases/:version/:platform',
    {
      config: { auth: 'none' },
      schema: {
        summary: 'The signed manifest of an agent release ({version, platform, sha256, size, key_id, signature}); version may be `latest`',
        security: [],
        params: ReleaseParams,
        response: { 200: agentReleaseManifestSchema },
      },
    },
    async (request, reply) => {
      const platform = checkPlatform(request.params.platform);
      const version = request.params.version === 'latest' ? 'latest' : checkVersion(request.params.version);
      const r = await findRelease(store, version, platform);
      const key = ctx.keyRing?.active() ?? ctx.signingKey;
      reply.header('cache-control', 'no-cache');
      return signReleaseManifest(key, { version: r.version, platform: r.platform, sha256: r.sha256, size: r.size });
    },
  );

  app.get(
    '/agent/releases/:version/:platform/vmkit-agent',
    {
      config: { auth: 'none' },
      schema: { summary: 'The agent executable of a release (check it against the signed manifest)', security: [], params: ReleaseParams },
    },
    async (request, reply) => {
      const platform = checkPlatform(request.params.platform);
      const r = await findRelease(store, checkVersion(request.params.version), platform);
      return reply
        .type('application/octet-stream')
        .header('content-length', String(r.size))
        .header('x-content-sha256', r.sha256)
        .header('cache-control', 'no-cache')
        .send(createReadStream(r.file));
    },
  );

  app.post(
    '/api/instances/:id/agent-update',
    {
      config: { scope: 'admin', action: 'instances.agent_update' },
      schema: {
        summary: "Update the instance's vmkit-agent to a release this control plane serves (signed agent.update)",
        description:
          'Answers 202 with the command id at once. The agent verifies and stages the release, switches to it and restarts; ' +
          'the result comes once the new version connected (succeeded), or after it was rolled back (update_rolled_back). ' +
          'Follow it in GET /api/instances/{id}/commands; the audit trail gets agent.update.succeeded | rolled_back | failed.',
        params: IdParams,
        body: z.strictObject({
          version: agentVersionSchema,
          platform: agentPlatformSchema.default('linux-x64'),
          allow_downgrade: z.boolean().default(false).describe('Needed to install a version older than the running one'),
        }),
        response: {
          202: z.object({
            command_id: z.string(),
            instance_id: z.string(),
            version: z.string(),
            platform: z.string(),
            sha256: z.string(),
            size: z.number(),
          }),
        },
      },
    },
    async (request, reply) => {
      const { workspaceId, keyId } = authOf(request);
      const started = await startAgentUpdate(ctx, {
        workspaceId,
        keyId,
        instanceId: request.params.id,
        version: request.body.version,
        platform: request.body.platform,
        allowDowngrade: request.body.allow_downgrade,
      });
      const p = started.params;
      return reply.code(202).send({ command_id: started.commandId, instance_id: request.params.id, version: p.version, platform: p.platform, sha256: p.sha256, size: p.size });
    },
  );
};

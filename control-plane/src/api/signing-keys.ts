import { z } from 'zod';
import { signingKeySchema } from '@vmkit/protocol';
import type { ApiPlugin, AppContext } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import type { AuthContext } from '../auth/hooks.ts';
import { listWorkspaces } from '../db/workspaces.ts';
import { ApiError } from '../errors.ts';
import { iso } from './views.ts';

const KeyView = signingKeySchema.extend({
  state: z.enum(['active', 'next', 'retired']),
  created_at: z.string(),
  retired_at: z.string().nullable(),
});

/**
 * The signing keys belong to the whole control plane, not to one workspace, so only an
 * `admin` key of the operator's workspace (the first one, created at bootstrap) may
 * rotate them.
 */
async function requireOperator(ctx: AppContext, auth: AuthContext): Promise<void> {
  const [first] = (await listWorkspaces(ctx.db)).sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
  if (!first || first.id !== auth.workspaceId || !auth.scopes.includes('admin')) {
    throw new ApiError('forbidden', "Only an admin key of the operator's workspace may manage the control plane's signing keys.");
  }
}

function rotationOf(ctx: AppContext) {
  if (!ctx.keyRotation || !ctx.keyRing) throw new ApiError('not_found', 'The agent hub is not running on this control plane.');
  return { rotation: ctx.keyRotation, ring: ctx.keyRing };
}

/** Control-plane signing key rotation: list, add a next key, promote it (retiring the old). */
export const signingKeyRoutes: ApiPlugin = (app, { ctx }) => {
  app.get(
    '/api/admin/signing-keys',
    {
      config: { scope: 'admin', action: 'signing_keys.list' },
      schema: { summary: "The control plane's command-signing keys", response: { 200: z.object({ items: z.array(KeyView) }) } },
    },
    async (request) => {
      await requireOperator(ctx, authOf(request));
      const { ring } = rotationOf(ctx);
      await ring.refresh?.();
      return {
        items: ring.list().map((k) => ({
          key_id: k.key_id,
          public_key: k.public_key,
          state: k.state,
          created_at: iso(k.created_at),
          retired_at: iso(k.retired_at),
        })),
      };
    },
  );

  app.post(
    '/api/admin/signing-keys',
    {
      config: { scope: 'admin', action: 'signing_keys.add' },
      schema: {
        summary: 'Add a next signing key and send it to connected agents (keys.rotate signed by the active key)',
        response: { 201: z.object({ key_id: z.string(), agents_updated: z.number(), agents_failed: z.number() }) },
      },
    },
    async (request, reply) => {
      await requireOperator(ctx, authOf(request));
      const { rotation } = rotationOf(ctx);
      let added: Awaited<ReturnType<typeof rotation.addKey>>;
      try {
        added = await rotation.addKey();
      } catch (err) {
        throw new ApiError('conflict', (err as Error).message);
      }
      return reply.code(201).send({ key_id: added.key_id, agents_updated: added.updated, agents_failed: added.failed });
    },
  );

  app.post(
    '/api/admin/signing-keys/promote',
    {
      config: { scope: 'admin', action: 'signing_keys.promote' },
      schema: {
        summary: 'Make the next key active and retire the old one (agents told with keys.rotate)',
        response: { 200: z.object({ active: z.string(), retired: z.string(), agents_updated: z.number(), agents_failed: z.number() }) },
      },
    },
    async (request) => {
      await requireOperator(ctx, authOf(request));
      const { rotation, ring } = rotationOf(ctx);
      let promoted: Awaited<ReturnType<typeof rotation.promote>>;
      try {
        promoted = await rotation.promote();
      } catch (err) {
        throw new ApiError('conflict', (err as Error).message);
      }
      ctx.signingKey = ring.active();
      return { active: promoted.active, retired: promoted.retired, agents_updated: promoted.updated, agents_failed: promoted.failed };
    },
  );
};

import { z } from 'zod';
import { safeName } from '@vmkit/protocol';
import type { ApiPlugin } from '../app.ts';
import { createApiKey } from '../auth/api-keys.ts';
import { authOf } from '../auth/hooks.ts';
import { SCOPES } from '../auth/scopes.ts';
import { listApiKeys, revokeApiKey } from '../db/api-keys.ts';
import { ApiError } from '../errors.ts';
import { ApiKeyView, IdParams, apiKeyView, listOf } from './views.ts';

const CreateKeyBody = z.strictObject({
  name: safeName().trim().min(1).max(100),
  scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length),
  expires_at: z.iso.datetime({ offset: true }).optional().describe('When the key stops working (ISO 8601)'),
});

export const keyRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/keys',
    {
      config: { scope: 'admin', action: 'keys.create' },
      schema: {
        summary: 'Create an API key (the secret is returned once)',
        body: CreateKeyBody,
        response: { 201: ApiKeyView.extend({ secret: z.string() }) },
      },
    },
    async (request, reply) => {
      const { workspaceId } = authOf(request);
      const now = ctx.now();
      let expiresAt: number | null = null;
      if (request.body.expires_at !== undefined) {
        expiresAt = Date.parse(request.body.expires_at);
        if (expiresAt <= now) throw new ApiError('invalid_request', 'Invalid request: body.expires_at is in the past.');
      }
      const { key, secret } = await createApiKey(
        ctx.db,
        { workspaceId, name: request.body.name, scopes: request.body.scopes, expiresAt },
        now,
      );
      return reply.code(201).send({ ...apiKeyView(key), secret });
    },
  );

  app.get(
    '/api/keys',
    {
      config: { scope: 'admin', action: 'keys.list' },
      schema: { summary: 'List the API keys of the workspace', response: { 200: listOf(ApiKeyView) } },
    },
    async (request) => ({ items: (await listApiKeys(ctx.db, authOf(request).workspaceId)).map(apiKeyView) }),
  );

  app.delete(
    '/api/keys/:id',
    {
      config: { scope: 'admin', action: 'keys.revoke' },
      schema: { summary: 'Revoke an API key', params: IdParams, response: { 200: ApiKeyView } },
    },
    async (request) => {
      const key = await revokeApiKey(ctx.db, authOf(request).workspaceId, request.params.id, ctx.now());
      if (!key) throw new ApiError('key_not_found', `No API key with id ${request.params.id} found in this workspace.`);
      return apiKeyView(key);
    },
  );
};

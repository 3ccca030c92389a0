import { z } from 'zod';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import type { AuthContext } from '../auth/hooks.ts';
import { hasScope } from '../auth/scopes.ts';
import { getApiKey } from '../db/api-keys.ts';
import type { ApiKeyRow } from '../db/api-keys.ts';
import type { Db } from '../db/index.ts';
import { deleteSshKey, insertSshKey, listSshKeys } from '../db/ssh-keys.ts';
import type { SshKeyRow } from '../db/ssh-keys.ts';
import { ApiError } from '../errors.ts';
import { SshKeyError, parseSshPublicKey } from '../shell/ssh-key.ts';
import { IdParams, iso, listOf } from './views.ts';

const SshKeyView = z.object({
  id: z.string(),
  key_id: z.string().describe('The API key whose sessions this SSH key opens'),
  type: z.string(),
  fingerprint: z.string().describe('SHA256:..., as ssh-keygen -lf prints it'),
  comment: z.string().nullable(),
  public_key: z.string(),
  created_at: z.string(),
  last_used_at: z.string().nullable(),
});

function sshKeyView(k: SshKeyRow): z.output<typeof SshKeyView> {
  return {
    id: k.id,
    key_id: k.keyId,
    type: k.publicKey.split(' ')[0] ?? '',
    fingerprint: k.fingerprint,
    comment: k.comment,
    public_key: k.publicKey,
    created_at: iso(k.createdAt),
    last_used_at: iso(k.lastUsedAt),
  };
}

const AddBody = z.strictObject({
  public_key: z.string().min(1).max(16_384).describe('One OpenSSH public key line, as in ~/.ssh/id_ed25519.pub'),
});

const SshKeyParams = IdParams.extend({ ssh_key_id: z.string().min(1).max(128) });

/**
 * The API key the path names, if the caller may manage its SSH keys: its own key with
 * the `shell` scope, or any key of the workspace with `admin`.
 */
async function targetKey(db: Db, auth: AuthContext, id: string): Promise<ApiKeyRow> {
  if (id !== auth.keyId && !hasScope(auth.scopes, 'admin')) {
    throw new ApiError('forbidden', 'An API key without the admin scope manages only its own SSH keys.');
  }
  const key = await getApiKey(db, auth.workspaceId, id);
  if (!key) throw new ApiError('key_not_found', `No API key with id ${id} found in this workspace.`);
  return key;
}

/** Operators' SSH public keys for the SSH gateway, registered per API key. */
export const sshKeyRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/keys/:id/ssh-keys',
    {
      config: { scope: 'shell', action: 'ssh_keys.add' },
      schema: {
        summary: 'Register an SSH public key on an API key (for `ssh -p 2222 <instance>@<control plane>`)',
        params: IdParams,
        body: AddBody,
        response: { 201: SshKeyView },
      },
    },
    async (request, reply) => {
      const auth = authOf(request);
      const key = await targetKey(ctx.db, auth, request.params.id);
      if (key.revokedAt !== null) throw new ApiError('conflict', `The API key ${key.id} is revoked; its SSH keys would open nothing.`);
      let parsed;
      try {
        parsed = parseSshPublicKey(request.body.public_key);
      } catch (err) {
        if (err instanceof SshKeyError) throw new ApiError('ssh_key_invalid', `Invalid SSH public key: ${err.message}`);
        throw err;
      }
      const row = await insertSshKey(
        ctx.db,
        { workspaceId: auth.workspaceId, keyId: key.id, publicKey: parsed.line, fingerprint: parsed.fingerprint, comment: parsed.comment },
        ctx.now(),
      );
      if (!row) throw new ApiError('ssh_key_exists', `The SSH key ${parsed.fingerprint} is already registered; one SSH key belongs to one API key.`);
      return reply.code(201).send(sshKeyView(row));
    },
  );

  app.get(
    '/api/keys/:id/ssh-keys',
    {
      config: { scope: 'shell', action: 'ssh_keys.list' },
      schema: { summary: 'The SSH keys registered on an API key', params: IdParams, response: { 200: listOf(SshKeyView) } },
    },
    async (request) => {
      const auth = authOf(request);
      const key = await targetKey(ctx.db, auth, request.params.id);
      return { items: (await listSshKeys(ctx.db, auth.workspaceId, key.id)).map(sshKeyView) };
    },
  );

  app.delete(
    '/api/keys/:id/ssh-keys/:ssh_key_id',
    {
      config: { scope: 'shell', action: 'ssh_keys.delete' },
      schema: { summary: 'Remove an SSH key (its live gateway sessions end)', params: SshKeyParams, response: { 200: SshKeyView } },
    },
    async (request) => {
      const auth = authOf(request);
      const key = await targetKey(ctx.db, auth, request.params.id);
      const row = await deleteSshKey(ctx.db, auth.workspaceId, key.id, request.params.ssh_key_id);
      if (!row) throw new ApiError('ssh_key_not_found', `No SSH key ${request.params.ssh_key_id} is registered on the API key ${key.id}.`);
      return sshKeyView(row);
    },
  );
};

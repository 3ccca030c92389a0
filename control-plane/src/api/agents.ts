import { readFile } from 'node:fs/promises';
import { enrollRequestSchema, enrollResponseSchema, isPublicKeyText } from '@vmkit/protocol';
import type { EnrollResponse, SigningKey } from '@vmkit/protocol';
import type { ApiPlugin, AppContext } from '../app.ts';
import { enrollWithToken } from '../db/enrollment.ts';
import { ENROLLMENT_TOKEN_PREFIX } from '../db/enrollment.ts';
import { ApiError } from '../errors.ts';
import { UNSAFE_TEXT_MESSAGE, isSafeText } from '@vmkit/protocol';
import { AGENT_CONNECT_PATH } from '../hub/agent-hub.ts';
import { INSTALL_SCRIPT } from '../hub/releases.ts';

/** ws(s)://<public host>/agent/v1/connect, from the URL clients reach this server at. */
export function agentConnectUrl(ctx: AppContext): string {
  const url = new URL(ctx.publicUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = AGENT_CONNECT_PATH;
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** The keys a newly enrolled agent pins: the ring's published keys (active first). */
export function enrollmentAnswerKeys(ctx: AppContext): SigningKey[] {
  return ctx.keyRing?.published() ?? [{ key_id: ctx.signingKey.keyId, public_key: ctx.signingKey.publicKey }];
}

function tokenInvalid(): ApiError {
  return new ApiError(
    'enrollment_token_invalid',
    'The enrollment token is unknown, expired or already used; ask for a new one with POST /api/instances/{id}/enrollment-token.',
  );
}

/** Agent enrollment (the token is the credential) and what the install script downloads. */
export const agentRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/agents/enroll',
    {
      // No API key: the one-time token is the credential. Anonymous, per-address rate limits apply.
      config: { auth: 'none', action: 'agents.enroll' },
      schema: {
        summary: 'Register an agent key with a one-time enrollment token',
        security: [],
        body: enrollRequestSchema,
        response: { 201: enrollResponseSchema },
      },
    },
    async (request, reply) => {
      const body = request.body;
      // Shown to operators as names: the same rule as every other name (@vmkit/protocol text.ts).
      for (const field of ['hostname', 'os', 'agent_version'] as const) {
        if (!isSafeText(body[field])) throw new ApiError('invalid_request', `Invalid request: body.${field}: ${UNSAFE_TEXT_MESSAGE}.`);
      }
      if (!isPublicKeyText(body.public_key)) throw new ApiError('invalid_request', 'Invalid request: public_key is not an Ed25519 public key.');
      if (!body.token.startsWith(ENROLLMENT_TOKEN_PREFIX)) throw tokenInvalid();
      const signingKeys = enrollmentAnswerKeys(ctx);
      const outcome = await enrollWithToken(
        ctx.db,
        {
          token: body.token,
          publicKey: body.public_key,
          hostname: body.hostname,
          os: body.os,
          agentVersion: body.agent_version,
          // Only the active key is certain to be pinned (an agent enrolled with --cp-key pins
          // exactly that one); a next key reaches it by the idempotent catch-up at connect.
          pinnedKeyIds: signingKeys.slice(0, 1).map((k) => k.key_id),
          sshHostKeys: body.ssh_host_keys,
        },
        ctx.now(),
      );
      if (!outcome.ok) throw tokenInvalid();
      if (outcome.replacedKey) ctx.hub?.drop(outcome.agentId, 'this agent was enrolled again with a new key');
      request.log.info({ agentId: outcome.agentId, instanceId: outcome.instanceId, replacedKey: outcome.replacedKey }, 'agent enrolled');
      const answer: EnrollResponse = {
        agent_id: outcome.agentId,
        instance_id: outcome.instanceId,
        signing_keys: signingKeys,
        connect_url: agentConnectUrl(ctx),
      };
      return reply.code(201).send(answer);
    },
  );

  app.get(
    '/install.sh',
    { config: { auth: 'none' }, schema: { summary: 'The agent install script (scripts/install-agent.sh)', security: [] } },
    async (_request, reply) => {
      let script: string;
      try {
        script = await readFile(INSTALL_SCRIPT, 'utf8');
      } catch {
        throw new ApiError('not_found', 'The agent install script is not available on this control plane.');
      }
      return reply.type('text/x-shellscript; charset=utf-8').header('cache-control', 'no-cache').send(script);
    },
  );
};

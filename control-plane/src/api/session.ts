import { z } from 'zod';
import type { FastifyRequest } from 'fastify';
import type { ApiPlugin, AppContext } from '../app.ts';
import { checkApiKey } from '../auth/api-keys.ts';
import { authOf } from '../auth/hooks.ts';
import { clearedSessionCookie, createSession, csrfTokenFor, sessionCookie } from '../auth/sessions.ts';
import { deleteDashboardSession } from '../db/dashboard-sessions.ts';
import { insertAudit } from '../db/audit.ts';
import { getApiKey } from '../db/api-keys.ts';
import type { ApiKeyRow } from '../db/api-keys.ts';
import { ApiError } from '../errors.ts';
import { iso } from './views.ts';

const SignInBody = z.strictObject({ key: z.string().max(200).describe('A vmk_ API key') });

const SessionView = z.object({
  workspace_id: z.string(),
  key: z.object({ id: z.string(), name: z.string(), prefix: z.string(), scopes: z.array(z.string()), expires_at: z.string().nullable() }),
  session: z
    .object({ expires_at: z.string(), csrf_token: z.string().describe('Send as x-vmkit-csrf with every request that changes something') })
    .nullable()
    .describe('The dashboard session, when the request came with its cookie'),
});

/** Why a pasted key does not sign in, in the words of a sign-in form. */
const SIGN_IN_FAILURES = {
  missing: 'Paste an API key (vmk_...).',
  not_bearer: 'Paste an API key (vmk_...).',
  not_vmk: 'That is not a VMKit API key: those start with vmk_.',
  malformed: 'That starts with vmk_ but is not a whole VMKit API key (vmk_ and 43 letters or digits); check that it was copied in full.',
  unknown: 'The API key is not valid.',
  expired: 'The API key has expired.',
  revoked: 'The API key has been revoked.',
} as const;

function keyView(k: ApiKeyRow) {
  return { id: k.id, name: k.name, prefix: k.prefix, scopes: k.scopes, expires_at: iso(k.expiresAt) };
}

/** Secure cookies when the browser reached us over TLS (directly or through a trusted proxy). */
function overTls(ctx: AppContext, request: FastifyRequest): boolean {
  return request.protocol === 'https' || ctx.publicUrl.startsWith('https:');
}

/** Sign-in, who-am-I and sign-out of the dashboard: an API key exchanged for a session cookie. */
export const sessionRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/session',
    {
      // The key comes in the body; per-address rate limits bound guessing. Audited below.
      config: { auth: 'none', action: 'session.create' },
      schema: {
        summary: 'Dashboard sign-in: exchange an API key for an HttpOnly session cookie',
        security: [],
        body: SignInBody,
        response: { 201: SessionView },
      },
    },
    async (request, reply) => {
      const now = ctx.now();
      const check = await checkApiKey(ctx.db, request.body.key.trim(), now);
      const audit = (key: ApiKeyRow, status: number, errorKey: 'unauthorized' | null) =>
        insertAudit(ctx.db, {
          at: now,
          workspaceId: key.workspaceId,
          keyId: key.id,
          channel: 'dashboard',
          tool: null,
          action: 'session.create',
          method: request.method,
          route: request.routeOptions.url ?? null,
          targetIds: null,
          status,
          errorKey,
          requestId: request.id,
          clientAddress: request.ip,
        });
      if (!check.ok) {
        if ('key' in check) await audit(check.key, 401, 'unauthorized');
        throw new ApiError('unauthorized', SIGN_IN_FAILURES[check.reason]);
      }
      const { secret, row } = await createSession(ctx.db, check.key, now);
      await audit(check.key, 201, null);
      reply.header('set-cookie', sessionCookie(secret, { secure: overTls(ctx, request), maxAgeMs: row.expiresAt - now }));
      reply.header('cache-control', 'no-store');
      return reply.code(201).send({
        workspace_id: check.key.workspaceId,
        key: keyView(check.key),
        session: { expires_at: iso(row.expiresAt), csrf_token: csrfTokenFor(secret) },
      });
    },
  );

  app.get(
    '/api/session',
    {
      config: { scope: 'any', action: 'session.get' },
      schema: { summary: 'Who is signed in: the key, its scopes and the dashboard session', response: { 200: SessionView } },
    },
    async (request, reply) => {
      const auth = authOf(request);
      const session = request.dashboardSession;
      const key = await getApiKey(ctx.db, auth.workspaceId, auth.keyId);
      if (!key) throw new ApiError('unauthorized', 'The API key is not valid.');
      reply.header('cache-control', 'no-store');
      return {
        workspace_id: auth.workspaceId,
        key: keyView(key),
        session: session ? { expires_at: iso(session.expiresAt), csrf_token: session.csrfToken } : null,
      };
    },
  );

  app.delete(
    '/api/session',
    {
      config: { scope: 'any', action: 'session.delete' },
      schema: { summary: 'Dashboard sign-out: ends the session of the cookie sent', response: { 200: z.object({ signed_out: z.literal(true) }) } },
    },
    async (request, reply) => {
      const session = request.dashboardSession;
      if (!session) throw new ApiError('invalid_request', 'Invalid request: no dashboard session came with this request (sign-out ends the session of the cookie sent).');
      await deleteDashboardSession(ctx.db, session.hash);
      // Its browser terminals end with it, not at the next periodic check.
      ctx.shellSessions?.endDashboardSession(session.hash);
      reply.header('set-cookie', clearedSessionCookie(overTls(ctx, request)));
      return { signed_out: true as const };
    },
  );
};

import { z } from 'zod';
import { signingKeySchema } from '@vmkit/protocol';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { createEnrollmentToken, registerInstance } from '../db/enrollment.ts';
import { getEnvironment } from '../db/environments.ts';
import { getInstance } from '../db/instances.ts';
import { ApiError } from '../errors.ts';
import { MANUAL_PROVIDER, MANUAL_STATUS_REASON, provisionInstance } from '../services/instances.ts';
import { agentDestination } from '../services/agent-destination.ts';
import { agentConnectUrl, enrollmentAnswerKeys } from './agents.ts';
import { IdParams, InstanceView, iso, instanceView } from './views.ts';
import { notifyInstance } from '../dashboard/live-feed.ts';

export const EnrollmentTokenView = z.object({
  token: z.string().describe('vmkenr_... one-time token; shown once'),
  expires_at: z.string().describe('ISO 8601 time'),
  instance_id: z.string(),
  signing_keys: z.array(signingKeySchema).describe('The control plane public keys the agent pins'),
  connect_url: z.string().describe('ws(s)://.../agent/v1/connect'),
  // The fleet's addresses come from --agent-url; where the CA sits on the VM is the
  // operator's choice, so the command names ./ca.pem and the description says so.
  install_command: z
    .string()
    .describe(
      'Run on the VM as root. With --agent-url, it installs from the first and passes the others as VMKIT_CP_URLS. ' +
        'With --agent-ca-file (a private CA), it expects that PEM as ca.pem in the current directory (curl --cacert ca.pem, VMKIT_CA_FILE="$PWD/ca.pem"); ' +
        'otherwise add those yourself behind a private CA, and VMKIT_CP_URLS="https://cp-b https://cp-c" for more addresses of the fleet (README: Install and verification).',
    ),
});

/** POST routes of instances: register an instance, issue an enrollment token for it. */
export const instanceWriteRoutes: ApiPlugin = (app, { ctx }) => {
  app.post(
    '/api/instances',
    {
      config: { scope: 'instances:write', action: 'instances.create' },
      schema: {
        summary: 'Create an instance: provision a VM (provider local or hetzner) or register a machine that waits for its agent (provider manual, the default)',
        body: z.strictObject({
          name: z
            .string()
            .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 letters, digits, dots, dashes or underscores'),
          environment_id: z.string().min(1).max(128).optional(),
          provider: z
            .string()
            .regex(/^[a-z][a-z0-9_-]{0,31}$/)
            .default(MANUAL_PROVIDER)
            .describe(
              'local: provision a VM sandbox on the control plane\'s machine; hetzner: a Hetzner Cloud VM (the workspace\'s project); ' +
                'manual (the default when left out): provision nothing, the instance waits (status awaiting_agent, status_reason says so) ' +
                'for a vmkit-agent installed by hand with a token from POST /api/instances/{id}/enrollment-token',
            ),
        }),
        response: { 201: InstanceView },
      },
    },
    async (request, reply) => {
      const { workspaceId } = authOf(request);
      const envId = request.body.environment_id;
      if (envId !== undefined && !(await getEnvironment(ctx.db, workspaceId, envId))) {
        throw new ApiError('environment_not_found', `No environment with id ${envId} exists in this workspace.`);
      }
      const provider = request.body.provider;
      const row =
        provider === MANUAL_PROVIDER
          ? await registerInstance(
              ctx.db,
              { workspaceId, name: request.body.name, environmentId: envId ?? null, provider, statusReason: MANUAL_STATUS_REASON },
              ctx.now(),
            )
          : await provisionInstance(ctx, { workspaceId, name: request.body.name, environmentId: envId ?? null, provider });
      notifyInstance(ctx, workspaceId, row.id);
      return reply.code(201).send(instanceView(row, null));
    },
  );

  app.post(
    '/api/instances/:id/enrollment-token',
    {
      config: { scope: 'instances:write', action: 'instances.enrollment_token' },
      schema: {
        summary: 'Issue a one-time enrollment token for the agent of an instance',
        params: IdParams,
        response: { 201: EnrollmentTokenView },
      },
    },
    async (request, reply) => {
      const { workspaceId } = authOf(request);
      const instance = await getInstance(ctx.db, workspaceId, request.params.id);
      if (!instance) throw new ApiError('instance_not_found', `No instance with id ${request.params.id} found in this workspace.`);
      const ttlMs = ctx.agentHubConfig?.enrollmentTokenTtlMs ?? 60 * 60_000;
      const { token, expiresAt } = await createEnrollmentToken(ctx.db, { workspaceId, instanceId: instance.id, ttlMs }, ctx.now());
      const dest = agentDestination(ctx.config, ctx.publicUrl);
      const base = dest.control_plane_url.replace(/\/+$/, '');
      // The URLs were checked at start (parseAgentUrls): nothing in them needs shell quoting but the list's spaces.
      const env = [
        ...(dest.more_control_plane_urls ? [`VMKIT_CP_URLS="${dest.more_control_plane_urls.join(' ')}"`] : []),
        ...(dest.ca_pem !== undefined ? ['VMKIT_CA_FILE="$PWD/ca.pem"'] : []),
      ];
      const curl = dest.ca_pem !== undefined ? 'curl -fsSL --cacert ca.pem' : 'curl -fsSL';
      const signingKeys = enrollmentAnswerKeys(ctx);
      const activeKey = signingKeys[0] ?? { key_id: ctx.signingKey.keyId, public_key: ctx.signingKey.publicKey };
      return reply.code(201).send({
        token,
        expires_at: iso(expiresAt),
        instance_id: instance.id,
        signing_keys: signingKeys,
        connect_url: agentConnectUrl(ctx),
        // VMKIT_CP_KEY makes the agent refuse a control plane that does not hold this key.
        install_command: `${curl} ${base}/install.sh | sudo ${[`VMKIT_CP_KEY=${activeKey.key_id}:${activeKey.public_key}`, ...env].join(' ')} bash -s -- ${base} ${token}`,
      });
    },
  );
};

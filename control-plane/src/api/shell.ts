import { createReadStream, existsSync } from 'node:fs';
import { z } from 'zod';
import type { ApiPlugin, AppContext } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { upgradeRateLimit } from '../auth/rate-limit.ts';
import { hasScope } from '../auth/scopes.ts';
import { getShellSession, listShellSessions } from '../db/shell-sessions.ts';
import type { ShellSessionRow } from '../db/shell-sessions.ts';
import { ApiError } from '../errors.ts';
import { registerUpgradeRoute } from '../hub/upgrade.ts';
import { clientAddressResolver } from '../hub/pre-auth.ts';
import { loadOrCreateHostKey } from '../shell/host-key.ts';
import type { GatewayHostKey } from '../shell/host-key.ts';
import { ShellSessionService } from '../shell/session.ts';
import { SshGateway } from '../shell/ssh-gateway.ts';
import { WebSocketDoor } from '../shell/ws-door.ts';
import { IdParams, iso } from './views.ts';

declare module '../app.ts' {
  interface AppContext {
    /** Live operator shell sessions (set by shellRoutes). */
    shellSessions?: ShellSessionService;
    /** The SSH gateway, when it listens (set by shellRoutes once the app is ready). */
    sshGateway?: { host: string; port: number; hostKey: GatewayHostKey };
  }
}

const ShellSessionView = z.object({
  id: z.string(),
  instance_id: z.string(),
  key_id: z.string().nullable().describe('The API key the session was opened with'),
  key_name: z.string().nullable(),
  via: z.string().describe('websocket (vmkit shell) | ssh (the SSH gateway)'),
  command: z.string().nullable().describe('The single command of an exec session; null for an interactive shell'),
  run_as: z.string().nullable(),
  started_at: z.string(),
  ended_at: z.string().nullable(),
  duration_ms: z.number().int().nullable(),
  exit_code: z.number().int().nullable(),
  exit_signal: z.string().nullable(),
  end_reason: z.string().nullable().describe('exit, idle_timeout, max_length, agent_disconnected, key_revoked, operator_closed, ...'),
  bytes_in: z.number().int().describe('Operator to VM'),
  bytes_out: z.number().int().describe('VM to operator'),
  recording_url: z.string().nullable(),
});

function sessionView(s: ShellSessionRow & { keyName?: string | null }): z.output<typeof ShellSessionView> {
  return {
    id: s.id,
    instance_id: s.instanceId,
    key_id: s.keyId,
    key_name: s.keyName ?? null,
    via: s.via,
    command: s.command,
    run_as: s.runAs,
    started_at: iso(s.startedAt),
    ended_at: iso(s.endedAt),
    duration_ms: s.endedAt === null ? null : s.endedAt - s.startedAt,
    exit_code: s.exitCode,
    exit_signal: s.exitSignal,
    end_reason: s.endReason,
    bytes_in: s.bytesIn,
    bytes_out: s.bytesOut,
    recording_url: s.recordingPath === null ? null : `/api/shell-sessions/${s.id}/recording`,
  };
}

const ListQuery = z.strictObject({
  instance_id: z.string().min(1).max(128).optional(),
  cursor: z.string().min(1).max(128).optional().describe('next_cursor of the previous page'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});

/** A key with `admin` sees every session of its workspace; any other key only its own. */
function visibleTo(scopes: readonly string[], keyId: string): string | undefined {
  return hasScope(scopes, 'admin') ? undefined : keyId;
}

async function startGateway(ctx: AppContext, sessions: ShellSessionService): Promise<SshGateway | undefined> {
  const { port, host: gwHost, required } = ctx.config.sshGateway;
  if (port === null) return undefined;
  const hostKey = loadOrCreateHostKey(ctx.config.dataDir);
  const gateway = new SshGateway({ db: ctx.db, sessions, hostKey, now: ctx.now, logger: ctx.logger });
  const host = gwHost ?? ctx.config.host;
  try {
    const address = await gateway.listen(port, host);
    ctx.sshGateway = { host, port: address.port, hostKey };
  } catch (err) {
    await gateway.close().catch(() => undefined);
    if (!required && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      ctx.logger.warn({ host, port }, 'the SSH gateway is off: its default port is in use; pass --ssh-gateway-port to choose one');
      return undefined;
    }
    throw new Error(`the SSH gateway cannot listen on ${host}:${port} (${(err as Error).message}); choose another --ssh-gateway-port, or 0 to turn it off`, { cause: err });
  }
  ctx.logger.info({ host, port: ctx.sshGateway.port, fingerprint: hostKey.fingerprint }, 'ssh gateway listening');
  return gateway;
}

/**
 * The ops shell: the WebSocket door at /api/instances/{id}/shell, the SSH gateway (when
 * configured), and the session records. Registered after the agent hub, whose
 * `ctx.shellOpener` it uses.
 */
export const shellRoutes: ApiPlugin = (app, { ctx }) => {
  const sessions = new ShellSessionService({
    db: ctx.db,
    opener: () => ctx.shellOpener,
    config: ctx.config.shell,
    dataDir: ctx.config.dataDir,
    nodeId: ctx.nodeId,
    ...(ctx.clusterNode && { cluster: { staleAfterMs: ctx.clusterNode.staleAfterMs } }),
    logger: ctx.logger,
    now: ctx.now,
  });
  ctx.shellSessions = sessions;
  // Several processes: the sessions of a node that died are ended by the live ones, at their heartbeat.
  ctx.clusterNode?.onDeadNodes((liveSince) => sessions.closeSessionsOfDeadNodes(liveSince));
  const door = new WebSocketDoor({
    db: ctx.db,
    sessions,
    now: ctx.now,
    clientAddress: clientAddressResolver(ctx.config.trustProxy),
    rateLimit: upgradeRateLimit(app),
    logger: ctx.logger,
  });
  registerUpgradeRoute(app.server, WebSocketDoor.path, (req, socket, head) => door.handleUpgrade(req, socket, head));
  let gateway: SshGateway | undefined;
  app.addHook('onReady', async () => {
    await sessions.closeOrphans();
    sessions.start();
    gateway = await startGateway(ctx, sessions);
  });
  app.addHook('preClose', async () => {
    await gateway?.close();
    await sessions.stop();
    door.close();
  });

  app.get(
    '/api/shell-sessions',
    {
      config: { scope: 'shell', action: 'shell_sessions.list' },
      schema: {
        summary: 'Shell sessions, newest first: yours, or with the admin scope every one of the workspace',
        querystring: ListQuery,
        response: { 200: z.object({ items: z.array(ShellSessionView), next_cursor: z.string().nullable() }) },
      },
    },
    async (request) => {
      const auth = authOf(request);
      const keyId = visibleTo(auth.scopes, auth.keyId);
      const page = await listShellSessions(ctx.db, auth.workspaceId, {
        ...(keyId !== undefined && { keyId }),
        ...(request.query.instance_id !== undefined && { instanceId: request.query.instance_id }),
        ...(request.query.cursor !== undefined && { cursor: request.query.cursor }),
        limit: request.query.limit,
      });
      return { items: page.items.map(sessionView), next_cursor: page.nextCursor };
    },
  );

  app.get(
    '/api/shell-sessions/:id/recording',
    {
      config: { scope: 'shell', action: 'shell_sessions.recording' },
      schema: { summary: 'The asciicast v2 recording of a shell session (what `asciinema play` reads)', params: IdParams },
    },
    async (request, reply) => {
      const auth = authOf(request);
      const row = await getShellSession(ctx.db, auth.workspaceId, request.params.id);
      const mine = visibleTo(auth.scopes, auth.keyId);
      if (!row || (mine !== undefined && row.keyId !== mine)) {
        throw new ApiError('shell_session_not_found', `No shell session ${request.params.id} is visible to this API key.`);
      }
      if (row.recordingPath === null || !existsSync(row.recordingPath)) {
        throw new ApiError('recording_not_found', `The recording of shell session ${row.id} is not on the control plane.`);
      }
      return reply
        .type('application/x-asciicast')
        .header('content-disposition', `attachment; filename="${row.id}.cast"`)
        .header('cache-control', 'no-store')
        .send(createReadStream(row.recordingPath));
    },
  );
};

import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyHttpOptions, FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import swagger from '@fastify/swagger';
import {
  hasZodFastifySchemaValidationErrors,
  isResponseSerializationError,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
} from 'fastify-type-provider-zod';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { ERRORS } from '@vmkit/protocol';
import type { ErrorKey, SigningKeyPair } from '@vmkit/protocol';
import type { Config } from './config.ts';
import type { Db } from './db/index.ts';
import { ApiError } from './errors.ts';
import { MAX_PARAM_LENGTH, badUrlError, clientErrorHandler, frameworkError, markBadUrl } from './edge.ts';
import { endConnectionsOnClose } from './http-drain.ts';
import { installAuthHooks } from './auth/hooks.ts';
import { installRateLimit } from './auth/rate-limit.ts';
import { installAuditHook } from './auth/audit.ts';
import { healthRoutes } from './api/health.ts';
import { openapiRoutes } from './api/openapi.ts';
import { keyRoutes } from './api/keys.ts';
import { repoRoutes } from './api/repos.ts';
import { environmentRoutes } from './api/environments.ts';
import { instanceRoutes } from './api/instances.ts';
import { deployRoutes } from './api/deploys.ts';
import { scanRoutes } from './api/scans.ts';
import { auditRoutes } from './api/audit.ts';
import { agentHubPlugin } from './hub/plugin.ts';
import { instanceWriteRoutes } from './api/instances-write.ts';
import { instanceComputeRoutes } from './api/instances-compute.ts';
import { agentRoutes } from './api/agents.ts';
import { agentReleaseRoutes } from './api/agent-releases.ts';
import { agentUpdateRoutes } from './api/agent-updates.ts';
import { signingKeyRoutes } from './api/signing-keys.ts';
import { mcpRoutes } from './mcp/plugin.ts';
import { hardenRoutes } from './api/harden.ts';
import { workspaceProviderRoutes } from './api/workspace-providers.ts';
import { shellRoutes } from './api/shell.ts';
import { sshKeyRoutes } from './api/ssh-keys.ts';
import { sessionRoutes } from './api/session.ts';
import { instanceCommandRoutes } from './api/instance-commands.ts';
import { liveRoutes } from './dashboard/events.ts';
import { dashboardRoutes } from './dashboard/plugin.ts';
import { installMetrics, metricsRoutes } from './metrics/plugin.ts';

/**
 * Everything a route or service needs from the running control plane. Other parts add
 * their own members as OPTIONAL fields (here, or from their module by declaration
 * merging: `declare module '../app.ts' { interface AppContext { hub?: AgentHub } }`).
 */
export interface AppContext {
  config: Config;
  db: Db;
  logger: Logger;
  /** The Ed25519 key commands are signed with (`<dataDir>/signing-key.pem`). */
  signingKey: SigningKeyPair;
  /** The URL clients reach this server at; final once the server listens (port 0). */
  publicUrl: string;
  /**
   * Where other processes on the same database reach this one (`--internal-url`, else
   * `http://<host>:<port>` once it listens). Behind a load balancer the public URL names
   * the balancer, not this process.
   */
  internalUrl?: string;
  /** The clock; tests may replace it. */
  now: () => number;
  /** This process's name: the node_id label of its metrics (`--node-id`, else kept in `<dataDir>/node-id`). */
  nodeId: string;
}

/** The Fastify instance type routes see (zod type provider). */
export type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, ZodTypeProvider>;

/**
 * One plugin per route file: `export const fooRoutes: ApiPlugin = (app, { ctx }) => { app.get(...) }`
 * (sync or async). Each is registered in its own encapsulated Fastify context.
 */
export type ApiPlugin = (app: App, opts: { ctx: AppContext }) => void | Promise<void>;

/** Every route file, registered in this order. Add yours here. */
export const ROUTES: ApiPlugin[] = [
  healthRoutes,
  metricsRoutes,
  openapiRoutes,
  // The agent hub first: later routes and services use ctx.hub / ctx.commandBus.
  agentHubPlugin,
  // Before deploys and scans: installs ctx.workspaceProviders and ctx.deployProviders.
  workspaceProviderRoutes,
  keyRoutes,
  repoRoutes,
  environmentRoutes,
  instanceRoutes,
  instanceWriteRoutes,
  instanceComputeRoutes,
  agentRoutes,
  agentReleaseRoutes,
  agentUpdateRoutes,
  signingKeyRoutes,
  scanRoutes,
  auditRoutes,
  hardenRoutes,
  // After harden: its start-up resume of owed follow-ups runs first, so a resumed deploy joins that run.
  deployRoutes,
  shellRoutes,
  sshKeyRoutes,
  mcpRoutes,
  // The dashboard: sign-in, its live feed (after the hub and harden) and its static assets at `/`.
  sessionRoutes,
  instanceCommandRoutes,
  liveRoutes,
  dashboardRoutes,
];

const STATUS_KEYS: Record<number, ErrorKey> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
};

function describeValidation(err: FastifyError): string {
  const first = err.validation?.[0];
  if (!first) return ERRORS.invalid_request.message;
  const context = err.validationContext ?? 'request';
  const path = first.instancePath.replace(/^\//, '').replaceAll('/', '.');
  const issue = (first.params as { issue?: { code?: string; keys?: string[] } } | undefined)?.issue;
  if (issue?.code === 'unrecognized_keys' && issue.keys) {
    const where = path ? `${context}.${path}` : context;
    return `Invalid request: ${where} has unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}.`;
  }
  return `Invalid request: ${path ? `${context}.${path}` : context}: ${first.message ?? 'is not valid'}.`;
}

function toApiError(err: FastifyError, request: FastifyRequest): ApiError {
  if (err instanceof ApiError) return err;
  if (hasZodFastifySchemaValidationErrors(err) || err.validation) {
    return new ApiError('invalid_request', describeValidation(err));
  }
  if (isResponseSerializationError(err)) {
    request.log.error({ err, issues: err.cause.issues }, 'response did not match its schema');
    return new ApiError('internal');
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('payload_too_large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('unsupported_media_type');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError('invalid_request', 'Invalid request: the body is empty but the content type is application/json.');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError('invalid_request', 'Invalid request: the body is not valid JSON.');
  }
  if (err instanceof SyntaxError && err.statusCode === 400) {
    return new ApiError('invalid_request', 'Invalid request: the body is not valid JSON.');
  }
  const status = err.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    const key = STATUS_KEYS[status] ?? 'invalid_request';
    return new ApiError(key);
  }
  request.log.error({ err }, 'unhandled error');
  return new ApiError('internal');
}

function sendError(error: ApiError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  request.errorKey = error.key;
  if (error.key === 'unauthorized') reply.header('www-authenticate', 'Bearer realm="vmkit"');
  return reply.code(error.status).type('application/json; charset=utf-8').send(error.toBody());
}

/**
 * The Fastify app with every route in ROUTES (or `routes`). Does not listen; see
 * startControlPlane in server.ts. Order matters: auth hooks, then the rate limiter,
 * then swagger, then routes.
 */
export async function buildApp(ctx: AppContext, options: { routes?: ApiPlugin[] } = {}): Promise<App> {
  const logger: FastifyBaseLogger = ctx.logger;
  const serverOptions: FastifyHttpOptions<RawServerDefault, FastifyBaseLogger> = {
    loggerInstance: logger,
    bodyLimit: ctx.config.bodyLimit,
    trustProxy: ctx.config.trustProxy,
    // Request ids are ours, never taken from the client.
    requestIdHeader: false,
    genReqId: () => randomUUID(),
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: MAX_PARAM_LENGTH },
    // A path that does not decode runs through the hooks like any request (edge.ts).
    rewriteUrl: markBadUrl,
    frameworkErrors: frameworkError,
    clientErrorHandler: clientErrorHandler(logger),
  };
  const app = Fastify(serverOptions).withTypeProvider<ZodTypeProvider>();
  endConnectionsOnClose(app);

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  app.setErrorHandler((err: FastifyError, request, reply) => sendError(toApiError(err, request), request, reply));
  // Bodies must be UTF-8: other bytes (a lone surrogate written out, say) would turn
  // into U+FFFD silently and be stored as if the client had sent that.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    if (!isUtf8(bytes)) return done(new ApiError('invalid_request', 'Invalid request: the body is not valid UTF-8.'), undefined);
    void parseJson(request, bytes.toString('utf8'), done);
  });
  // First of the onResponse hooks: a request is timed even when a later hook throws.
  installMetrics(app, ctx);
  installAuthHooks(app, ctx.db, ctx.now);
  await installRateLimit(app, ctx.config.rateLimit, ctx.db);
  installAuditHook(app, ctx.db, ctx.now);
  // Root hooks run before the plugins' own: deploys and agent rollouts stop (and resume at the next start)
  // before the agent hub closes the command bus under a step that waits on a command.
  app.addHook('preClose', async () => {
    await ctx.deploys?.close();
    await ctx.agentRollouts?.close();
  });
  // After the key check and the rate limiter, before the body is validated.
  app.addHook('preValidation', (request, _reply, done) => done(badUrlError(request)));
  // Probing for routes costs rate-limit budget like any other request.
  app.setNotFoundHandler({ preHandler: app.rateLimit() }, (request, reply) =>
    sendError(
      badUrlError(request) ?? new ApiError('not_found', `No route ${request.method} ${request.url.split('?')[0] ?? ''}.`),
      request,
      reply,
    ),
  );

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'VMKit control plane', version: '0.1.0', description: 'REST API of the VMKit control plane.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'vmk_ API key' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });

  for (const routes of options.routes ?? ROUTES) {
    await app.register(async (scope) => {
      await routes(scope, { ctx });
    });
  }
  return app;
}


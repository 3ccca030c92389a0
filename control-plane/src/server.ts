import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { generateSigningKeyPair } from '@vmkit/protocol';
import type { Logger } from 'pino';
import { buildApp } from './app.ts';
import type { ApiPlugin, App, AppContext } from './app.ts';
import type { Config } from './config.ts';
import { closeDatabase, openDatabase } from './db/index.ts';
import { bootstrapIfEmpty } from './auth/bootstrap.ts';
import type { NewWorkspace } from './auth/bootstrap.ts';
import { SIGNING_KEY_FILE, loadOrCreateSigningKey } from './auth/signing-key.ts';
import { createLogger } from './logger.ts';
import { forgetServerUrl, hostForUrl, noteServerUrl } from './server-url.ts';
import { resolveNodeId } from './node-id.ts';

/** The listening socket's accept queue asked of the kernel, which caps it at net.core.somaxconn. */
export const LISTEN_BACKLOG = 65_535;

export interface StartOptions {
  /** Defaults to a pino logger at config.logLevel on stdout. */
  logger?: Logger;
  /** Replaces the route list (tests of a single plugin). */
  routes?: ApiPlugin[];
  now?: () => number;
}

export interface RunningControlPlane {
  app: App;
  /** Where the server listens, e.g. http://127.0.0.1:8080. */
  url: string;
  ctx: AppContext;
  /** Set on the first start only: the workspace and admin key just created. */
  bootstrap: NewWorkspace | null;
  /** Stops listening, waits for in-flight requests, closes the database. Idempotent. */
  close(): Promise<void>;
}

/**
 * Opens the data directory (0700), database (SQLite in the data dir, or PostgreSQL at
 * config.databaseUrl; migrated), signing key; on an empty
 * database creates the first workspace and admin key (`<dataDir>/admin.key`); then
 * listens on config.host:config.port.
 */
export async function startControlPlane(config: Config, options: StartOptions = {}): Promise<RunningControlPlane> {
  const logger = options.logger ?? createLogger(config.logLevel);
  // A directory we create is private; an existing one is the operator's (maybe their
  // cwd), so it is only warned about, never chmod-ed.
  if (mkdirSync(config.dataDir, { recursive: true, mode: 0o700 }) === undefined) {
    if ((statSync(config.dataDir).mode & 0o077) !== 0) {
      logger.warn({ data_dir: config.dataDir }, 'the data directory is readable by other users; chmod 700 it');
    }
  }
  const now = options.now ?? Date.now;
  const db = await openDatabase(config, { onPoolError: (err) => logger.warn({ err }, 'a pooled PostgreSQL connection failed; the pool replaces it') });
  let app: App | undefined;
  try {
    // SQLite: the one process's key lives in the data dir. PostgreSQL: the ring in the database
    // is the only one that signs (the hub plugin puts its active key here before any route
    // runs), so no key file is written that nothing would use; one left by an earlier SQLite
    // deployment is read, and adopted by an empty database ring.
    const { key: signingKey, created: keyCreated } =
      db.dialect === 'sqlite' || existsSync(join(config.dataDir, SIGNING_KEY_FILE))
        ? loadOrCreateSigningKey(config.dataDir)
        : { key: generateSigningKeyPair(), created: false };
    if (keyCreated) logger.info({ key_id: signingKey.keyId }, 'created the command-signing key');
    const bootstrap = await bootstrapIfEmpty(db, config.dataDir, now());
    if (bootstrap) logger.info({ workspace_id: bootstrap.workspaceId, key_id: bootstrap.keyId }, 'created the first workspace and admin key');
    const { nodeId, created: nodeIdCreated } = resolveNodeId(config.dataDir, config.nodeId);
    if (nodeIdCreated) logger.info({ node_id: nodeId }, 'named this control-plane node');

    const ctx: AppContext = {
      config,
      db,
      logger,
      signingKey,
      publicUrl: config.publicUrl ?? `http://${hostForUrl(config.host)}:${config.port}`,
      now,
      nodeId,
    };
    app = await buildApp(ctx, options.routes ? { routes: options.routes } : {});
    // Every agent of a fleet dials at once after a restart: with Node's default accept queue
    // (511) most of those SYNs were dropped and retried a second or more later. The kernel
    // caps this at net.core.somaxconn (4096 on current kernels), the knob for larger fleets.
    await app.listen({ host: config.host, port: config.port, backlog: LISTEN_BACKLOG });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const url = `http://${hostForUrl(config.host)}:${port}`;
    ctx.publicUrl = config.publicUrl ?? url;
    ctx.internalUrl = config.internalUrl ?? url;
    noteServerUrl(config.dataDir, ctx.publicUrl);

    let closing: Promise<void> | undefined;
    const running = app;
    return {
      app,
      url,
      ctx,
      bootstrap,
      close: () => {
        closing ??= (async () => {
          try {
            await running.close();
          } finally {
            forgetServerUrl(config.dataDir);
            await closeDatabase(db);
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    if (app) await app.close().catch(() => undefined);
    await closeDatabase(db);
    throw err;
  }
}

/**
 * A real control plane for tests: a temp data dir, a real SQLite file (or, under
 * VMKIT_TEST_DATABASE=postgres, a PostgreSQL database of its own on the run's test
 * cluster: see postgres.ts), Fastify on 127.0.0.1 with a free port. Everyone's tests
 * use this; keep it stable.
 *
 *   const cp = await startTestControlPlane();
 *   t.teardown(() => cp.close());
 *   const res = await cp.api('GET', '/api/instances');            // as the admin key
 *   const { secret } = await cp.createKey(['repos:read']);          // a narrower key
 *   const other = await cp.createWorkspace('other');                // { workspaceId, adminKey }
 *   await cp.restart();                                             // same data dir, new port; cp.url/app/ctx updated
 *
 * Options: `config` overrides (rate limits, publicUrl, ...), `dataDir` to reuse a dir,
 * `logLevel` (default 'silent'; set VMKIT_TEST_LOG=debug to see logs), `routes`, `now`.
 * `close()` stops the server and deletes the data dir unless `keepDataDir` is true.
 * A reused `dataDir` reuses its PostgreSQL database too; `cp.database` is what to
 * pass to openDatabase() to read what the server wrote, in either dialect.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeConfig } from '../../control-plane/src/config.ts';
import type { Config, LogLevel, RateLimitConfig } from '../../control-plane/src/config.ts';
import { startControlPlane } from '../../control-plane/src/server.ts';
import type { RunningControlPlane } from '../../control-plane/src/server.ts';
import type { ApiPlugin, App, AppContext } from '../../control-plane/src/app.ts';
import { createApiKey } from '../../control-plane/src/auth/api-keys.ts';
import { createWorkspaceWithAdminKey } from '../../control-plane/src/auth/bootstrap.ts';
import type { Scope } from '../../control-plane/src/auth/scopes.ts';
import type { DatabaseTarget } from '../../control-plane/src/db/index.ts';
import { dropTestDatabaseFor, selectedTestDatabase, testDatabaseFor } from './postgres.ts';


// A bound for a stuck server, not a speed check: a harden or a sandbox VM can take long on a loaded 2-core machine.
const API_TIMEOUT_MS = 180_000;

let instanceNames = 0;
/**
 * An instance name no other instance of this test process has: names are unique per
 * workspace (POST /api/instances answers 409 instance_name_taken to a second `vm`).
 */
export function uniqueInstanceName(prefix: string): string {
  instanceNames += 1;
  return `${prefix}-${process.pid}-${instanceNames}`;
}

export interface TestControlPlaneOptions {
  config?: Partial<Omit<Config, 'rateLimit' | 'dataDir'>> & { rateLimit?: Partial<RateLimitConfig> };
  dataDir?: string;
  keepDataDir?: boolean;
  logLevel?: LogLevel;
  routes?: ApiPlugin[];
  now?: () => number;
}

export interface ApiResponse<T = unknown> {
  status: number;
  headers: Headers;
  /** Parsed JSON, or the raw text when the body is not JSON. */
  body: T;
}

export interface ApiRequestOptions {
  /** Bearer token; defaults to the admin key. `null` sends no Authorization header. */
  key?: string | null;
  body?: unknown;
  /** Raw body text (sent as is, e.g. malformed JSON). */
  rawBody?: string;
  headers?: Record<string, string>;
}

export interface TestControlPlane {
  url: string;
  adminKey: string;
  workspaceId: string;
  dataDir: string;
  /** Where its database is: the data dir's SQLite file, or its PostgreSQL URL. */
  database: DatabaseTarget;
  ctx: AppContext;
  app: App;
  /** The underlying handle (bootstrap info, close). */
  running: RunningControlPlane;
  close(): Promise<void>;
  restart(): Promise<void>;
  /** A key of this workspace (or `workspaceId`) with the given scopes. */
  createKey(
    scopes: Scope[],
    opts?: { name?: string; expiresAt?: number | null; workspaceId?: string },
  ): Promise<{ id: string; secret: string }>;
  /** A second (third, ...) workspace with its admin key. */
  createWorkspace(name?: string): Promise<{ workspaceId: string; adminKey: string }>;
  /** fetch against the server; JSON in and out. */
  api<T = unknown>(method: string, path: string, opts?: ApiRequestOptions): Promise<ApiResponse<T>>;
}

export async function startTestControlPlane(opts: TestControlPlaneOptions = {}): Promise<TestControlPlane> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'vmkit-cp-test-'));
  const logLevel = opts.logLevel ?? ((process.env.VMKIT_TEST_LOG as LogLevel | undefined) || 'silent');
  let databaseUrl = opts.config?.databaseUrl;
  if (databaseUrl === undefined && selectedTestDatabase() === 'postgres') {
    databaseUrl = (await testDatabaseFor(dataDir)).url;
  }
  const config = makeConfig({ ...opts.config, host: opts.config?.host ?? '127.0.0.1', port: opts.config?.port ?? 0, dataDir, databaseUrl, logLevel });
  const start = () =>
    startControlPlane(config, { ...(opts.routes && { routes: opts.routes }), ...(opts.now && { now: opts.now }) });

  let running = await start();
  // The admin key is written once, on the first start of a data dir.
  const adminKey = running.bootstrap?.adminKey ?? readFileSync(join(dataDir, 'admin.key'), 'utf8').trim();
  const workspaceId = running.bootstrap?.workspaceId ?? '';

  const cp: TestControlPlane = {
    url: running.url,
    adminKey,
    workspaceId,
    dataDir,
    database: { dataDir, databaseUrl },
    ctx: running.ctx,
    app: running.app,
    running,
    async close() {
      await running.close();
      if (!opts.keepDataDir && !opts.dataDir) {
        rmSync(dataDir, { recursive: true, force: true });
        await dropTestDatabaseFor(dataDir);
      }
    },
    async restart() {
      await running.close();
      running = await start();
      cp.running = running;
      cp.url = running.url;
      cp.ctx = running.ctx;
      cp.app = running.app;
    },
    async createKey(scopes, o = {}) {
      const { key, secret } = await createApiKey(running.ctx.db, {
        workspaceId: o.workspaceId ?? cp.workspaceId,
        name: o.name ?? `test ${scopes.join(' ')}`,
        scopes,
        expiresAt: o.expiresAt ?? null,
      });
      return { id: key.id, secret };
    },
    async createWorkspace(name = 'other') {
      const created = await createWorkspaceWithAdminKey(running.ctx.db, name);
      return { workspaceId: created.workspaceId, adminKey: created.adminKey };
    },
    async api<T = unknown>(method: string, path: string, o: ApiRequestOptions = {}): Promise<ApiResponse<T>> {
      const headers: Record<string, string> = { ...o.headers };
      const key = o.key === undefined ? cp.adminKey : o.key;
      if (key !== null) headers.authorization = `Bearer ${key}`;
      let body: string | undefined;
      if (o.rawBody !== undefined) body = o.rawBody;
      else if (o.body !== undefined) body = JSON.stringify(o.body);
      if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
        headers['content-type'] = 'application/json';
      }
      const res = await fetch(cp.url + path, { method, headers, ...(body !== undefined && { body }), signal: AbortSignal.timeout(API_TIMEOUT_MS) });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text === '' ? null : JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: res.status, headers: res.headers, body: parsed as T };
    },
  };
  if (!cp.workspaceId) {
    // A reused data dir: find the admin key's workspace.
    const me = await cp.api<{ items: { id: string }[] }>('GET', '/api/keys');
    const { findApiKeyByHash } = await import('../../control-plane/src/db/api-keys.ts');
    const { hashApiKey } = await import('../../control-plane/src/auth/api-keys.ts');
    const row = await findApiKeyByHash(running.ctx.db, hashApiKey(adminKey));
    if (!row || me.status !== 200) throw new Error('the admin.key of the reused data dir does not work');
    cp.workspaceId = row.workspaceId;
  }
  return cp;
}

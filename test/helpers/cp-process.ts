/**
 * The control plane as its own process (`vmkit-control-plane serve`), for tests that
 * kill it with SIGKILL and start it again on the same data dir and port, as a crash
 * and a supervisor's restart would.
 *
 *   const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-cp-proc-'));
 *   const port = await freePort();
 *   let cp = await startControlPlaneProcess({ dataDir, port });
 *   await cp.api('GET', '/api/instances');
 *   cp.kill('SIGKILL'); await cp.exited;
 *   cp = await startControlPlaneProcess({ dataDir, port });
 *   const rows = await serverRows(dataDir, 'SELECT state FROM commands WHERE id = ?', [id]);
 *
 * Under VMKIT_TEST_DATABASE=postgres the process gets a PostgreSQL database of its own
 * (VMKIT_DATABASE_URL), the same one again on every start on that data dir, unless `env`
 * names one; serverRows() reads whichever the server uses.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { ApiResponse } from './control-plane.ts';
import { selectedTestDatabase, testDatabaseFor } from './postgres.ts';

const ROOT = join(import.meta.dirname, '..', '..');

export interface ControlPlaneProcess {
  url: string;
  adminKey: string;
  child: ChildProcess;
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[];
  /** Resolves with the exit code (null after a signal). */
  exited: Promise<number | null>;
  /** Resolves with the first log line that matches. */
  waitForLog(match: (log: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  api<T = unknown>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<ApiResponse<T>>;
  kill(signal: NodeJS.Signals): void;
}

/** A TCP port nothing listens on right now (the server binds it with SO_REUSEADDR, so a restart gets it again). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `vmkit-control-plane serve` and resolves once it logs that it listens; `env` adds to
 * the test's environment, `bin` names another copy of the bin (default the package's).
 */
export async function startControlPlaneProcess(opts: { dataDir: string; port: number; startTimeoutMs?: number; env?: NodeJS.ProcessEnv; bin?: string }): Promise<ControlPlaneProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env, VMKIT_LOG_LEVEL: 'info', ...opts.env };
  if (opts.env?.VMKIT_DATABASE_URL === undefined && selectedTestDatabase() === 'postgres') {
    const url = (await testDatabaseFor(opts.dataDir)).url;
    env.VMKIT_DATABASE_URL = url;
    serverDatabases.set(opts.dataDir, url);
  }
  const child = spawn(
    process.execPath,
    [opts.bin ?? 'control-plane/bin/vmkit-control-plane.js', 'serve', '--port', String(opts.port), '--data-dir', opts.dataDir],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: Record<string, unknown>[] = [];
  const watchers = new Set<(log: Record<string, unknown>) => void>();
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString('utf8')).slice(-4000)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    let log: unknown;
    try {
      log = JSON.parse(line);
    } catch {
      return; // the first start's banner
    }
    if (typeof log !== 'object' || log === null) return;
    logs.push(log as Record<string, unknown>);
    for (const w of [...watchers]) w(log as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  const waitForLog = (match: (log: Record<string, unknown>) => boolean, timeoutMs = 120_000): Promise<Record<string, unknown>> => {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const done = (err: Error | undefined, log?: Record<string, unknown>): void => {
        clearTimeout(timer);
        watchers.delete(watch);
        if (err) reject(err);
        else resolve(log ?? {});
      };
      const watch = (log: Record<string, unknown>): void => {
        if (match(log)) done(undefined, log);
      };
      const timer = setTimeout(() => done(new Error(`no such log line within ${timeoutMs} ms\n${stderr}`)), timeoutMs);
      watchers.add(watch);
      void exited.then((code) => done(new Error(`the control plane exited (${code}) first\n${stderr}`)));
    });
  };

  try {
    await waitForLog((l) => l.msg === 'control plane listening', opts.startTimeoutMs ?? 120_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const url = `http://127.0.0.1:${opts.port}`;
  const adminKey = readFileSync(join(opts.dataDir, 'admin.key'), 'utf8').trim();
  return {
    url,
    adminKey,
    child,
    logs,
    exited,
    waitForLog,
    kill: (signal) => child.kill(signal),
    async api<T = unknown>(method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<ApiResponse<T>> {
      const headers: Record<string, string> = { authorization: `Bearer ${adminKey}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(url + path, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
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
}

/** The PostgreSQL URL startControlPlaneProcess gave each data dir's server. */
const serverDatabases = new Map<string, string>();

/**
 * Rows of one query on the database the server of `dataDir` uses, read from the test
 * process while the server runs or after it died: its SQLite file (read-only; WAL lets
 * both sides work) or its PostgreSQL database. `?` placeholders in either dialect;
 * write the SQL both understand (counts come back as numbers in both).
 */
export async function serverRows<T extends object>(dataDir: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const url = serverDatabases.get(dataDir);
  if (url === undefined) {
    const db = new Database(join(dataDir, 'vmkit.sqlite'), { readonly: true, fileMustExist: true });
    try {
      db.pragma('busy_timeout = 5000');
      return db.prepare(sql).all(...params) as T[];
    } finally {
      db.close();
    }
  }
  let n = 0;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const res = await client.query(sql.replace(/\?/g, () => `$${++n}`), params);
    // PostgreSQL answers count(*) as a bigint string; SQLite as a number.
    return res.rows.map((row: Record<string, unknown>) =>
      Object.fromEntries(Object.entries(row).map(([k, v]) => [k, typeof v === 'string' && res.fields.find((f) => f.name === k)?.dataTypeID === 20 ? Number(v) : v])),
    ) as T[];
  } finally {
    await client.end();
  }
}

/** Polls `probe` until it returns something other than undefined; fails after `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 120_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

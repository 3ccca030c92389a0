import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { keyIdOf, privateKeyFromPem } from '@vmkit/protocol';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { ConfigError, loadConfig } from '../../control-plane/src/config.ts';
import { mcpConfigEntry } from '../../control-plane/src/auth/bootstrap.ts';
import { runServerCli } from '../../control-plane/src/cli/server-cli.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { selectedTestDatabase } from '../helpers/postgres.ts';

const mode = (file: string) => statSync(file).mode & 0o777;
const ROOT = join(import.meta.dirname, '..', '..');

t.test('first start bootstraps a workspace, an admin key and a signing key', async (t) => {
  const cp = await startTestControlPlane({ keepDataDir: true });
  t.teardown(async () => {
    await cp.close();
    rmSync(cp.dataDir, { recursive: true, force: true });
  });

  t.test('the admin key is written to admin.key with mode 0600 and works', async (t) => {
    const file = join(cp.dataDir, 'admin.key');
    t.equal(mode(file), 0o600);
    t.equal(readFileSync(file, 'utf8').trim(), cp.adminKey);
    t.match(cp.adminKey, /^vmk_[0-9A-Za-z]{43}$/);
    t.equal((await cp.api('GET', '/api/keys')).status, 200);
    t.ok(cp.running.bootstrap, 'the first start reports what it created');
  });

  t.test('the signing key is an Ed25519 PKCS#8 file with mode 0600 (SQLite; on PostgreSQL the ring is in the database and no file is written)', async (t) => {
    const file = join(cp.dataDir, 'signing-key.pem');
    if (cp.ctx.db.dialect !== 'sqlite') {
      t.notOk(existsSync(file), 'no key file nothing would sign with');
      t.same(cp.ctx.keyRing?.published().map((k) => k.key_id), [cp.ctx.signingKey.keyId], 'the database ring holds the one key that signs');
      return;
    }
    t.equal(mode(file), 0o600);
    const pem = readFileSync(file, 'utf8');
    t.match(pem, /^-----BEGIN PRIVATE KEY-----/);
    t.equal(keyIdOf(privateKeyFromPem(pem)), cp.ctx.signingKey.keyId);
  });

  t.test('the data directory is private and the database uses WAL with foreign keys', async (t) => {
    t.equal(mode(cp.dataDir), 0o700);
    const db = cp.ctx.db;
    if (db.dialect !== 'sqlite') {
      t.equal(db.dialect, selectedTestDatabase(), 'the database this run asked for');
      return;
    }
    t.equal(mode(join(cp.dataDir, 'vmkit.sqlite')), 0o600);
    t.equal(db.sqlite.pragma('journal_mode', { simple: true }), 'wal');
    t.equal(db.sqlite.pragma('foreign_keys', { simple: true }), 1);
  });

  t.test('a restart keeps the data and creates nothing new', async (t) => {
    const repo = await cp.api<{ id: string }>('POST', '/api/repos', { body: { repo: 'acme/web' } });
    const keyId = cp.ctx.signingKey.keyId;
    const count = async (table: 'workspaces' | 'api_keys') => (await rawRows<{ n: number }>(cp.ctx.db, sql`select count(*) as n from ${sql.identifier(table)}`))[0]?.n;
    const before = { workspaces: await count('workspaces'), keys: await count('api_keys') };

    await cp.restart();
    t.equal(cp.running.bootstrap, null, 'the second start bootstraps nothing');
    t.same({ workspaces: await count('workspaces'), keys: await count('api_keys') }, before, 'no second workspace or admin key');
    t.equal(cp.ctx.signingKey.keyId, keyId, 'the same signing key');
    t.equal(readFileSync(join(cp.dataDir, 'admin.key'), 'utf8').trim(), cp.adminKey, 'admin.key unchanged');
    const again = await cp.api<{ repo: string }>('GET', `/api/repos/${repo.body.id}`);
    t.equal(again.status, 200, 'the old admin key still works');
    t.equal(again.body.repo, 'acme/web', 'the repo survived');
  });

  /** The server's database, when it is not the data dir's SQLite file. */
  const sameDatabase = (): string[] => (cp.database.databaseUrl === undefined ? [] : ['--database-url', cp.database.databaseUrl]);

  t.test('workspaces create makes another workspace with its own admin key, while the server runs', async (t) => {
    let out = '';
    const code = await runServerCli(['workspaces', 'create', 'team two', '--data-dir', cp.dataDir, ...sameDatabase(), '--public-url', 'https://vmkit.example.com'], {
      stdout: (s) => (out += s),
      stderr: (s) => (out += s),
      env: {},
    });
    t.equal(code, 0);
    const secret = /(vmk_[0-9A-Za-z]{43})/.exec(out)?.[1];
    t.ok(secret, 'the key is printed');
    t.match(out, /"url": "https:\/\/vmkit.example.com\/mcp"/, 'with an MCP config entry for the public URL');
    const res = await cp.api<{ items: { name: string }[] }>('GET', '/api/keys', { key: secret ?? '' });
    t.equal(res.status, 200, 'the new key works against the running server');
    t.same(res.body.items.map((k) => k.name), ['admin']);
    const mine = await cp.api<{ items: unknown[] }>('GET', '/api/repos', { key: secret ?? '' });
    t.same(mine.body.items, [], 'the new workspace starts empty');

    const bad = await runServerCli(['workspaces', 'create'], { stdout: () => {}, stderr: () => {}, env: {} });
    t.equal(bad, 2, 'a missing name is a usage error');
  });

  t.test('workspaces create names the running server\'s real URL, with the .mcp.json entry and the claude mcp add line', async (t) => {
    let out = '';
    const code = await runServerCli(['workspaces', 'create', 'team three', '--data-dir', cp.dataDir, ...sameDatabase()], { stdout: (s) => (out += s), stderr: (s) => (out += s), env: {} });
    t.equal(code, 0);
    const secret = /(vmk_[0-9A-Za-z]{43})/.exec(out)?.[1] ?? '';
    t.not(cp.url, 'http://127.0.0.1:8080', 'the test server is on another port than the default');
    t.match(out, `"url": "${cp.url}/mcp"`, 'the entry points at the running server (found through the data directory)');
    t.match(out, /\.mcp\.json/, 'names the file Claude Code reads');
    t.match(out, `claude mcp add --transport http vmkit ${cp.url}/mcp --header "Authorization: Bearer ${secret}"`);
    t.notMatch(out, /assumes/, 'no assumption to own up to');
  });

  t.test('with no server running, workspaces create says which URL it assumed', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-ws-offline-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    let out = '';
    const code = await runServerCli(['workspaces', 'create', 'offline', '--data-dir', dir, '--port', '9191'], { stdout: (s) => (out += s), stderr: (s) => (out += s), env: {} });
    t.equal(code, 0);
    t.match(out, '"url": "http://127.0.0.1:9191/mcp"');
    t.match(out, /No server is running on .*, so the entry above assumes http:\/\/127\.0\.0\.1:9191; pass --public-url/);
  });
});

t.test('the MCP config entry is ready to paste', async (t) => {
  const entry = JSON.parse(mcpConfigEntry('http://127.0.0.1:8080', 'vmk_x')) as unknown;
  t.same(entry, {
    mcpServers: { vmkit: { type: 'http', url: 'http://127.0.0.1:8080/mcp', headers: { Authorization: 'Bearer vmk_x' } } },
  });
});

t.test('configuration comes from flags, then environment, then defaults', async (t) => {
  const d = loadConfig([], {});
  t.match(d, { host: '127.0.0.1', port: 8080, publicUrl: undefined, logLevel: 'info' });
  t.equal(d.dataDir, join(process.cwd(), 'data'));
  t.equal(loadConfig([], { INIT_CWD: '/srv/vmkit' }).dataDir, '/srv/vmkit/data', 'relative to where npm start was typed');
  t.equal(loadConfig(['--data-dir', 'state'], { INIT_CWD: '/srv/vmkit' }).dataDir, '/srv/vmkit/state');
  const env = { VMKIT_HOST: '0.0.0.0', VMKIT_PORT: '9000', VMKIT_DATA_DIR: '/tmp/x', VMKIT_PUBLIC_URL: 'https://cp.example.com/', VMKIT_RATE_LIMIT_MAX: '5' };
  t.match(loadConfig([], env), { host: '0.0.0.0', port: 9000, dataDir: '/tmp/x', publicUrl: 'https://cp.example.com', rateLimit: { max: 5 } });
  t.match(loadConfig(['--port', '0', '--host', '::1', '--rate-limit-window-ms', '2000'], env), {
    host: '::1',
    port: 0,
    rateLimit: { max: 5, windowMs: 2000 },
  });
  t.throws(() => loadConfig(['--port', '70000'], {}), ConfigError);
  t.throws(() => loadConfig([], { VMKIT_PORT: 'eighty' }), ConfigError);
  t.throws(() => loadConfig(['--public-url', 'ftp://x'], {}), ConfigError);
  t.equal(loadConfig([], {}).internalUrl, undefined, 'no internal URL: the one it listens on');
  t.equal(loadConfig([], { VMKIT_INTERNAL_URL: 'http://10.0.0.5:8080/' }).internalUrl, 'http://10.0.0.5:8080');
  t.equal(loadConfig(['--internal-url', 'https://cp-a.internal'], { VMKIT_INTERNAL_URL: 'http://x' }).internalUrl, 'https://cp-a.internal');
  t.throws(() => loadConfig(['--internal-url', 'cp-a:8080'], {}), { message: 'internal URL must be an absolute http(s) URL, got "cp-a:8080"' });
  t.throws(() => loadConfig(['--log-level', 'loud'], {}), ConfigError);
  t.throws(() => loadConfig(['--bogus'], {}), ConfigError);
  t.equal(loadConfig([], {}).trustProxy, false, 'no proxy is trusted by default');
  t.equal(loadConfig(['--trust-proxy', 'true'], {}).trustProxy, true);
  t.equal(loadConfig([], { VMKIT_TRUST_PROXY: '127.0.0.1' }).trustProxy, '127.0.0.1');
  t.equal(loadConfig(['--trust-proxy', '10.0.0.0/8,127.0.0.1'], {}).trustProxy, '10.0.0.0/8,127.0.0.1');
  t.throws(() => loadConfig(['--trust-proxy', 'everyone'], {}), ConfigError);
});

t.test('the server process prints the key once, logs JSON and stops cleanly on SIGTERM', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-cp-proc-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));

  const run = async (): Promise<{ out: string; logs: Record<string, unknown>[]; code: number | null }> => {
    const child = spawn(process.execPath, ['control-plane/bin/vmkit-control-plane.js', 'serve', '--port', '0', '--data-dir', dataDir], {
      cwd: ROOT,
      env: { ...process.env, VMKIT_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // No timer: a start takes what the machine's load makes it take; a stuck server is
    // ended by tap's per-file timeout, and killed here when the test ends.
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    const logs: Record<string, unknown>[] = [];
    const lines = createInterface({ input: child.stdout });
    const listening = new Promise<string>((resolve) => {
      lines.on('line', (line) => {
        out += `${line}\n`;
        let log: Record<string, unknown>;
        try {
          log = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return; // the banner, not a log line
        }
        if (typeof log !== 'object' || log === null || !('level' in log)) return;
        logs.push(log);
        if (log.msg === 'control plane listening') resolve(String(log.url));
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const url = await Promise.race([listening, exited.then(() => '')]);
    t.ok(url, 'the server says where it listens');
    if (url) {
      const key = readFileSync(join(dataDir, 'admin.key'), 'utf8').trim();
      const res = await fetch(`${url}/api/repos`, { headers: { authorization: `Bearer ${key}` } });
      t.equal(res.status, 200, 'it serves');
      child.kill('SIGTERM');
    }
    const code = await exited;
    return { out, logs, code };
  };

  const first = await run();
  t.equal(first.code, 0, 'exit code 0 after SIGTERM');
  const key = readFileSync(join(dataDir, 'admin.key'), 'utf8').trim();
  t.equal(first.out.split(key).length - 1, 3, 'the key is printed once, as itself, inside the MCP config entry and in the claude mcp add line');
  t.match(first.out, /"url": "http:\/\/127\.0\.0\.1:\d+\/mcp"/, 'the MCP entry points at this server');
  t.ok(first.logs.some((l) => l.msg === 'shutting down'), 'it logs the shutdown');
  t.ok(first.logs.some((l) => typeof l.reqId === 'string' && l.req !== undefined), 'request logs carry a request id');
  const logText = JSON.stringify(first.logs);
  t.notOk(logText.includes(key), 'the key never appears in the logs');

  const second = await run();
  t.equal(second.code, 0);
  t.notOk(second.out.includes('vmk_'), 'the second start prints no key');
});

t.test('npm start passes flags through to the server (npm start -- --port N --data-dir D)', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-npm-start-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  // Its own process group, so the npm → npm → node chain goes down together.
  const child = spawn('npm', ['start', '--', '--port', '0', '--data-dir', dataDir], {
    cwd: ROOT,
    env: { ...process.env, VMKIT_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const stopAll = () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  };
  t.teardown(stopAll);
  let errText = '';
  child.stderr.on('data', (b: Buffer) => (errText += b.toString()));
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise<Record<string, unknown>>((resolve) => {
    lines.on('line', (line) => {
      try {
        const log = JSON.parse(line) as Record<string, unknown>;
        if (log.msg === 'control plane listening') resolve(log);
      } catch {
        // the banner
      }
    });
  });
  const exited = new Promise<null>((resolve) => child.on('exit', () => resolve(null)));
  const log = await Promise.race([listening, exited]);
  t.ok(log, `the server started: ${errText.slice(-3000)}`);
  t.equal(log?.data_dir, dataDir, 'with the data directory given after --');
  t.notMatch(String(log?.url), /:8080$/, 'on the port given after -- (0: a free one), not the default');
  stopAll();
  await exited;
});

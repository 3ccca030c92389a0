import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, existsSync, mkdirSync, copyFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { runVmkit } from '../helpers/vmkit-cli.ts';

const ROOT = join(import.meta.dirname, '..', '..');

t.test('vmkit login, logout and where the key comes from', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());

  const newConfigHome = () => mkdtempSync(join(tmpdir(), 'vmkit-config-'));
  const vmkit = (args: string[], env: NodeJS.ProcessEnv, stdin?: string) =>
    runVmkit(args, env, stdin === undefined ? undefined : Readable.from([stdin]));

  t.test('login checks the piped key, saves it 0600, and later commands use it', async (t) => {
    const XDG_CONFIG_HOME = newConfigHome();
    const login = await vmkit(['login', '--url', cp.url], { XDG_CONFIG_HOME }, `${cp.adminKey}\n`);
    t.equal(login.code, 0, login.stderr);
    const file = join(XDG_CONFIG_HOME, 'vmkit', 'credentials.json');
    t.match(login.stdout, `Logged in to ${cp.url}; the key is saved in ${file} (0600).`);
    t.equal(statSync(file).mode & 0o777, 0o600, 'the file is 0600');
    t.equal(statSync(join(XDG_CONFIG_HOME, 'vmkit')).mode & 0o777, 0o700, 'its directory is 0700');
    t.same(JSON.parse(readFileSync(file, 'utf8')), { url: cp.url, key: cp.adminKey });

    const list = await vmkit(['instances', 'list'], { XDG_CONFIG_HOME });
    t.equal(list.code, 0, list.stderr);
    t.match(list.stdout, /^ID\s+NAME\s+STATUS/, 'no --url, no --key: the saved login is used');

    const flagWins = await vmkit(['instances', 'list', '--key', 'vmk_wrong'], { XDG_CONFIG_HOME });
    t.equal(flagWins.code, 1, '--key comes before the saved login');
    t.match(flagWins.stderr, /unauthorized/);
    const envWins = await vmkit(['instances', 'list'], { XDG_CONFIG_HOME, VMKIT_API_KEY: 'vmk_wrong' });
    t.equal(envWins.code, 1, 'VMKIT_API_KEY comes before the saved login');
  });

  t.test('the saved key is not sent to another URL', async (t) => {
    const XDG_CONFIG_HOME = newConfigHome();
    t.equal((await vmkit(['login', '--url', cp.url], { XDG_CONFIG_HOME }, cp.adminKey)).code, 0);
    const other = await vmkit(['instances', 'list', '--url', 'http://127.0.0.1:9'], { XDG_CONFIG_HOME });
    t.equal(other.code, 2);
    t.match(other.stderr, 'no API key for http://127.0.0.1:9.');
    t.match(other.stderr, `(the saved login is for ${cp.url}, not this URL)`);
  });

  t.test('a wrong key is refused at login and nothing is saved', async (t) => {
    const XDG_CONFIG_HOME = newConfigHome();
    const login = await vmkit(['login', '--url', cp.url], { XDG_CONFIG_HOME }, 'vmk_thisisnotakey\n');
    t.equal(login.code, 1);
    t.match(login.stderr, /^error: the server refused this key, nothing saved: unauthorized: /);
    t.notOk(existsSync(join(XDG_CONFIG_HOME, 'vmkit', 'credentials.json')));
    const empty = await vmkit(['login', '--url', cp.url], { XDG_CONFIG_HOME }, '\n');
    t.equal(empty.code, 2, 'an empty key is a usage error');
    t.notOk(existsSync(join(XDG_CONFIG_HOME, 'vmkit', 'credentials.json')));
  });

  t.test('a key without the read scope still logs in (it is a valid key)', async (t) => {
    const XDG_CONFIG_HOME = newConfigHome();
    const created = await vmkit(['keys', 'create', '--name', 'repos-only', '--scopes', 'repos:read', '--json'], { VMKIT_URL: cp.url, VMKIT_API_KEY: cp.adminKey });
    const { secret } = JSON.parse(created.stdout) as { secret: string };
    const login = await vmkit(['login', '--url', cp.url], { XDG_CONFIG_HOME }, secret);
    t.equal(login.code, 0, login.stderr);
    t.equal((await vmkit(['repos', 'list'], { XDG_CONFIG_HOME })).code, 0);
  });

  t.test('logout removes the saved key', async (t) => {
    const XDG_CONFIG_HOME = newConfigHome();
    t.equal((await vmkit(['login', '--url', cp.url], { XDG_CONFIG_HOME }, cp.adminKey)).code, 0);
    const out = await vmkit(['logout'], { XDG_CONFIG_HOME });
    t.equal(out.code, 0);
    t.match(out.stdout, /^Logged out: removed .*credentials\.json\.\n$/);
    t.notOk(existsSync(join(XDG_CONFIG_HOME, 'vmkit', 'credentials.json')));
    const after = await vmkit(['instances', 'list', '--url', cp.url], { XDG_CONFIG_HOME });
    t.equal(after.code, 2);
    t.match(after.stderr, /no API key for/);
    t.match((await vmkit(['logout'], { XDG_CONFIG_HOME })).stdout, /^Not logged in/);
  });

  t.test('without a key the CLI says how to get one and sends nothing, not even data/admin.key', async (t) => {
    // A listener on the default-looking URL that records what reaches it.
    const seen: (string | undefined)[] = [];
    const trap = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"items":[]}');
    });
    await new Promise<void>((r) => trap.listen(0, '127.0.0.1', r));
    t.teardown(() => trap.close());
    const trapUrl = `http://127.0.0.1:${(trap.address() as AddressInfo).port}`;
    // A working directory with data/admin.key in it, as on the server machine.
    const cwd = mkdtempSync(join(tmpdir(), 'vmkit-cwd-'));
    mkdirSync(join(cwd, 'data'));
    copyFileSync(join(cp.dataDir, 'admin.key'), join(cwd, 'data', 'admin.key'));
    const env = { XDG_CONFIG_HOME: newConfigHome(), VMKIT_URL: trapUrl, VMKIT_DATA_DIR: cp.dataDir, INIT_CWD: cwd };

    const out = await vmkit(['instances', 'list'], env);
    t.equal(out.code, 2);
    t.match(out.stderr, `no API key for ${trapUrl}.`);
    t.match(out.stderr, `vmkit login --url ${trapUrl}`);
    t.match(out.stderr, '--key-file data/admin.key');

    const real = await promisify(execFile)(process.execPath, ['control-plane/bin/vmkit.js', 'instances', 'list'], {
      cwd: ROOT,
      env: { ...process.env, ...env, VMKIT_API_KEY: '', PWD: cwd },
      timeout: 20_000,
    }).catch((err: { code: number; stderr: string }) => err);
    t.equal('code' in real ? real.code : 0, 2, 'a real process without a key exits 2');
    t.same(seen, [], 'no request reached the listener');

    const asked = await vmkit(['instances', 'list', '--key-file', 'data/admin.key'], env);
    t.equal(asked.code, 0, 'asked for explicitly, the key file is used');
    t.same(seen, [cp.adminKey && `Bearer ${cp.adminKey}`]);
    const missing = await vmkit(['instances', 'list', '--key-file', 'nope.key'], env);
    t.equal(missing.code, 2);
    t.match(missing.stderr, /cannot read --key-file .*nope\.key: ENOENT/);
  });

  t.test('an unreachable control plane: the error names the URL it tried', async (t) => {
    // Bind and close a port so that nothing listens there.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const dead = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
    await new Promise<void>((r) => probe.close(() => r()));

    const list = await vmkit(['instances', 'list', '--url', dead, '--key', 'vmk_x'], { XDG_CONFIG_HOME: newConfigHome() });
    t.equal(list.code, 1);
    t.equal(list.stderr, `error: cannot reach the control plane at ${dead}/api/instances: ECONNREFUSED\n`);
    const XDG_CONFIG_HOME = newConfigHome();
    const login = await vmkit(['login', '--url', dead], { XDG_CONFIG_HOME }, 'vmk_x');
    t.equal(login.code, 1);
    t.match(login.stderr, `cannot reach the control plane at ${dead}/api/instances: ECONNREFUSED; nothing saved`);
    t.notOk(existsSync(join(XDG_CONFIG_HOME, 'vmkit', 'credentials.json')));
    const deploys = await vmkit(['deploys', '--url', dead, '--key', 'vmk_x'], { XDG_CONFIG_HOME });
    t.equal(deploys.code, 1);
    t.match(deploys.stderr, `cannot reach the control plane at ${dead}/api/deploys`);
  });
});

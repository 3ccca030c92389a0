/**
 * The production build: `npm run build` bundles the control plane into control-plane/dist
 * (esbuild, a source map beside each bundle) and the bins run those bundles, as a production
 * install does. Here the build goes into a package of its own (the bins copied beside a
 * fresh dist/), so the tests that run the package's bins meanwhile are not disturbed.
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { builtinModules } from 'node:module';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { DEFAULT_OUT_DIR, buildControlPlane, packageName } from '../../control-plane/src/build.ts';
import { freePort, startControlPlaneProcess } from '../helpers/cp-process.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const CONTROL_PLANE = join(ROOT, 'control-plane');
const PACKAGE_JSON = JSON.parse(readFileSync(join(CONTROL_PLANE, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
const PROTOCOL_JSON = JSON.parse(readFileSync(join(ROOT, 'shared-protocol', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

// Inside control-plane/dist (git- and lint-ignored) so the bundles' imports of npm packages
// resolve through control-plane/node_modules and the root's, as the real dist's do.
mkdirSync(DEFAULT_OUT_DIR, { recursive: true });
const pkg = mkdtempSync(join(DEFAULT_OUT_DIR, '.build-test-'));
t.teardown(() => rmSync(pkg, { recursive: true, force: true }));
cpSync(join(CONTROL_PLANE, 'bin'), join(pkg, 'bin'), { recursive: true });
const files = await buildControlPlane(join(pkg, 'dist'));
const SERVER_BIN = join(pkg, 'bin', 'vmkit-control-plane.js');
const VMKIT_BIN = join(pkg, 'bin', 'vmkit.js');

/**
 * Every module a bundle imports, as esbuild reads the emitted file (static and dynamic
 * imports alike); relative imports would be followed and show as inputs of their own.
 */
async function importsOf(file: string): Promise<{ specifiers: string[]; inputs: string[] }> {
  const { metafile } = await build({ entryPoints: [file], bundle: true, write: false, metafile: true, platform: 'node', format: 'esm', packages: 'external', logLevel: 'silent' });
  const inputs = Object.keys(metafile.inputs);
  const specifiers = Object.values(metafile.inputs).flatMap((i) => i.imports.map((imp) => imp.original ?? imp.path));
  return { specifiers: [...new Set(specifiers)], inputs };
}

/**
 * Runs node with args. `untapped` runs it through `env -u NODE_OPTIONS`: tap puts its
 * coverage hook into every child's NODE_OPTIONS, and that hook turns source maps on.
 */
function run(args: string[], env: NodeJS.ProcessEnv, untapped = false): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [cmd, argv] = untapped ? ['env', ['-u', 'NODE_OPTIONS', process.execPath, ...args]] : [process.execPath, args];
    const child = spawn(cmd, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('the build writes one bundle per program, each with its source map, and nothing that needs TypeScript at run time', async (t) => {
  t.same(files.map((f) => relative(pkg, f)).sort(), ['dist/server-main.js', 'dist/server-main.js.map', 'dist/vmkit-main.js', 'dist/vmkit-main.js.map']);
  const allowed = new Set([...Object.keys(PACKAGE_JSON.dependencies), ...Object.keys(PROTOCOL_JSON.dependencies)]);
  allowed.delete('@vmkit/protocol');
  for (const name of ['server-main', 'vmkit-main']) {
    const code = readFileSync(join(pkg, 'dist', `${name}.js`), 'utf8');
    t.match(code.trimEnd().split('\n').at(-1), `//# sourceMappingURL=${name}.js.map`, `${name}.js names its map`);
    const map = JSON.parse(readFileSync(join(pkg, 'dist', `${name}.js.map`), 'utf8')) as { sources: string[] };
    const sources = map.sources.map((s) => relative(ROOT, join(pkg, 'dist', s)));
    t.ok(sources.includes(`control-plane/src/cli/${name}.ts`), `${name}.js.map maps back to control-plane/src/cli/${name}.ts`);
    t.ok(sources.includes('shared-protocol/src/ids.ts'), `the protocol package is bundled into ${name}.js`);
    t.same(sources.filter((s) => !existsSync(join(ROOT, s))), [], `every file ${name}.js.map names exists, so every mapped frame points at a real file`);
    t.same(sources.filter((s) => s.split('/').includes('node_modules')), [], 'bundled npm code (drizzle-orm) is left out of the map');

    const { specifiers: imports, inputs } = await importsOf(join(pkg, 'dist', `${name}.js`));
    t.ok(imports.length > 10, `${name}.js imports its npm packages (${imports.length} found)`);
    t.same(imports.filter((s) => /\.[cm]?tsx?$/.test(s)), [], `${name}.js imports no .ts file`);
    t.same(imports.filter((s) => s.startsWith('.') || s.startsWith('/')), [], `${name}.js imports no file of ours: everything is bundled`);
    t.equal(inputs.length, 1, `${name}.js is the only file of ours it loads`);
    t.same(imports.filter((s) => ['tsx', 'drizzle-orm'].includes(packageName(s)) || s.startsWith('@vmkit/')), [], `${name}.js imports neither tsx nor a workspace package, and has drizzle-orm bundled`);
    const foreign = imports.filter((s) => !s.startsWith('node:') && !builtinModules.includes(s) && !allowed.has(packageName(s)));
    t.same(foreign, [], `${name}.js imports only node: modules and declared dependencies`);
  }
  for (const bin of ['vmkit.js', 'vmkit-control-plane.js', 'run-built.js']) {
    t.notMatch(readFileSync(join(CONTROL_PLANE, 'bin', bin), 'utf8'), /['"]tsx|\.ts['"]|register\(/, `bin/${bin} neither registers tsx nor imports TypeScript`);
  }
});

t.test('the built server answers on loopback, reads its migrations and the install script, and the built vmkit CLI talks to it', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-built-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const cp = await startControlPlaneProcess({ dataDir, port: await freePort(), bin: SERVER_BIN, env: { VMKIT_SSH_GATEWAY_PORT: '0' } });
  t.teardown(async () => {
    cp.kill('SIGTERM');
    await cp.exited;
  });

  // No TypeScript loader anywhere in the server process: not on its command line, not in NODE_OPTIONS.
  const pid = cp.child.pid ?? 0;
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  t.same(argv.slice(0, 3), [process.execPath, SERVER_BIN, 'serve'], 'the server is node running the bin, with no flags before it');
  t.notOk(argv.some((a) => /tsx|typescript|--import|--loader|--experimental/.test(a)), `no loader on its command line: ${argv.join(' ')}`);
  const nodeOptions = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').find((e) => e.startsWith('NODE_OPTIONS=')) ?? '';
  t.notMatch(nodeOptions, /tsx|typescript/, 'and none in its NODE_OPTIONS (tap may add its coverage hook there)');

  const health = await fetch(`${cp.url}/healthz`);
  t.equal(health.status, 200, '/healthz answers');
  t.same(await health.json(), { status: 'ok' });
  t.equal((await fetch(`${cp.url}/api/instances`)).status, 401, 'the API wants a key');
  const instances = await cp.api<{ items: unknown[] }>('GET', '/api/instances');
  t.equal(instances.status, 200, 'and answers with one: the migrations under control-plane/drizzle were applied');
  t.same(instances.body.items, []);
  const script = await fetch(`${cp.url}/install.sh`);
  t.equal(script.status, 200);
  t.equal(await script.text(), readFileSync(join(ROOT, 'scripts', 'install-agent.sh'), 'utf8'), 'the install script is found from the bundle');

  const home = mkdtempSync(join(tmpdir(), 'vmkit-built-home-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const cli = await run([VMKIT_BIN, 'keys', 'list', '--url', cp.url, '--key', cp.adminKey, '--json'], { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, '.config') });
  t.equal(cli.code, 0, 'the built vmkit exits 0', { stderr: cli.stderr });
  const keys = JSON.parse(cli.stdout) as { items: { name: string; prefix: string; scopes: string[] }[] };
  t.same(
    keys.items.map((k) => ({ name: k.name, scopes: k.scopes, mine: cp.adminKey.startsWith(k.prefix) })),
    [{ name: 'admin', scopes: ['admin'], mine: true }],
    'it lists the admin key the server made on its first start',
  );
});

t.test('stack traces of the built server name the TypeScript sources and their lines', async (t) => {
  const scratch = mkdtempSync(join(tmpdir(), 'vmkit-built-stack-'));
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }));
  // A data directory under a regular file: the server's mkdir throws ENOTDIR at start.
  writeFileSync(join(scratch, 'file'), '');
  const args = ['serve', '--port', '0', '--ssh-gateway-port', '0', '--data-dir', join(scratch, 'file', 'data')];

  const mapped = await run([SERVER_BIN, ...args], process.env, true);
  t.not(mapped.code, 0, 'the server does not start');
  t.match(mapped.stderr, /ENOTDIR/);
  const frames = [...mapped.stderr.matchAll(/\((\/[^():]+\.ts):(\d+):\d+\)/g)].map((m) => ({ file: m[1] ?? '', line: Number(m[2]) }));
  t.ok(frames.length >= 2, 'the stack names .ts files', { stderr: mapped.stderr });
  t.ok(frames.every((f) => f.file.startsWith(join(CONTROL_PLANE, 'src') + '/')), 'all of them under control-plane/src');
  t.notMatch(mapped.stderr, /server-main\.js:\d+/, 'none is a line of the bundle');
  const top = frames[0];
  if (top !== undefined) {
    const source = readFileSync(top.file, 'utf8').split('\n')[top.line - 1] ?? '';
    t.match(source, /mkdirSync\(/, `${relative(ROOT, top.file)}:${top.line} is the mkdir that failed: ${source.trim()}`);
  }

  // The bundle run without the bin, so without source maps, names its own lines: what ran
  // above is dist, mapped by the bin turning maps on.
  const raw = await run([join(pkg, 'dist', 'server-main.js'), ...args], process.env, true);
  t.not(raw.code, 0);
  t.match(raw.stderr, `${pathToFileURL(join(pkg, 'dist', 'server-main.js')).href}:`, 'without maps the frames are lines of dist/server-main.js');
  t.notMatch(raw.stderr, /\.ts:\d+/);
});

t.test('a bin without a build says how to make one', async (t) => {
  const bare = mkdtempSync(join(tmpdir(), 'vmkit-unbuilt-'));
  t.teardown(() => rmSync(bare, { recursive: true, force: true }));
  cpSync(join(CONTROL_PLANE, 'bin'), join(bare, 'bin'), { recursive: true });
  t.notOk(existsSync(join(bare, 'dist')));
  for (const [bin, program] of [['vmkit.js', 'vmkit'], ['vmkit-control-plane.js', 'vmkit-control-plane']] as const) {
    const r = await promisify(execFile)(process.execPath, [join(bare, 'bin', bin), '--help']).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    t.equal(r.code, 1, `${basename(bin)} fails`);
    t.match(r.stderr, `${program}: the control plane is not built (${join(bare, 'dist')}/`);
    t.match(r.stderr, 'Build it with `npm run build`');
  }
});

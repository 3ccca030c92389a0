// The dashboard's build step (what `npm run build` and `npm start` run) and where the
// server says the dashboard is.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDashboard, readManifest } from '../../control-plane/src/dashboard/build.ts';
import { serve } from '../../control-plane/src/cli/server-cli.ts';

t.test('two builds racing into one folder both finish and leave one whole build', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'vmkit-build-race-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const dir = join(base, 'dashboard');
  const [a, b] = await Promise.all([buildDashboard(dir), buildDashboard(dir)]);
  t.equal(a.script, b.script, 'the same sources give the same hashed names');
  const manifest = await readManifest(dir);
  t.same(manifest?.script, a.script);
  const html = readFileSync(join(dir, 'index.html'), 'utf8');
  t.ok(html.includes(`/assets/${a.script}`), 'index.html names the script');
  t.ok(existsSync(join(dir, 'assets', a.script)) && existsSync(join(dir, 'assets', a.styles[0] ?? 'none')), 'and the files it names are there');
  t.same(readdirSync(base), ['dashboard'], 'no staging or old folders are left behind');
  t.equal(await readManifest(join(base, 'nothing-here')), undefined, 'no manifest where nothing was built');
});

t.test('the server prints where the dashboard is', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-serve-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  let out = '';
  const running = await serve(['--port', '0', '--ssh-gateway-port', '0', '--data-dir', dataDir, '--log-level', 'silent'], { stdout: (s) => (out += s), stderr: () => undefined, env: {} });
  t.teardown(() => running.close());
  t.match(out, new RegExp(`Dashboard: ${running.url.replace(/[.]/g, '\\.')}/ \\(sign in with an API key\\)`));
});

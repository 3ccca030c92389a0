/**
 * `vmkit login --url URL` typed at a real terminal: the CLI runs as its own process under a
 * pseudo-terminal (node-pty), asks for the key, never echoes it, and saves it 0600 under the
 * user's config directory (~/.config/vmkit with a temp HOME); a wrong key is refused naming
 * the URL, and nothing is saved.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node-pty';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { runVmkit } from '../helpers/vmkit-cli.ts';

const ROOT = join(import.meta.dirname, '..', '..');

const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
t.teardown(() => cp.close());

/** `vmkit ARGS` on a terminal of its own, with HOME as given and no VMKIT_* or XDG_* settings. */
function onTerminal(args: string[], home: string) {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('VMKIT_') && !k.startsWith('XDG_')) env[k] = v;
  }
  const term = spawn(process.execPath, [join(ROOT, 'control-plane', 'bin', 'vmkit.js'), ...args], {
    cols: 200,
    rows: 24,
    cwd: home,
    env: { ...env, HOME: home, TERM: 'xterm' },
  });
  let screen = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  term.onData((d) => {
    screen += d;
    for (const w of waiters.splice(0)) {
      if (screen.includes(w.text)) w.resolve();
      else waiters.push(w);
    }
  });
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
  return {
    screen: () => screen,
    exited,
    write: (s: string) => term.write(s),
    /** Resolves once `text` has been shown; rejects if the process ends first. */
    shown: (text: string) =>
      Promise.race([
        new Promise<void>((resolve) => (screen.includes(text) ? resolve() : waiters.push({ text, resolve }))),
        exited.then((code) => {
          if (!screen.includes(text)) throw new Error(`exited ${code} before showing ${JSON.stringify(text)}:\n${screen}`);
        }),
      ]),
  };
}

function newHome(t: { teardown(fn: () => void): void }): string {
  const home = mkdtempSync(join(tmpdir(), 'vmkit-home-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  return home;
}

const credentials = (home: string) => join(home, '.config', 'vmkit', 'credentials.json');

t.test('the key typed at the prompt is checked, not echoed, and saved 0600 under ~/.config/vmkit', async (t) => {
  const home = newHome(t);
  const term = onTerminal(['login', '--url', cp.url], home);
  await term.shown(`API key for ${cp.url}: `);
  // A slip of the finger, rubbed out, then Enter.
  term.write(`${cp.adminKey}x\u007f\r`);
  t.equal(await term.exited, 0, term.screen());
  const file = credentials(home);
  t.match(term.screen(), `Logged in to ${cp.url}; the key is saved in ${file} (0600).`);
  t.notMatch(term.screen(), cp.adminKey.slice(4), 'no part of the key after vmk_ reached the screen');
  t.equal(statSync(file).mode & 0o777, 0o600, 'the file is 0600');
  t.equal(statSync(join(home, '.config', 'vmkit')).mode & 0o777, 0o700, 'its directory is 0700');
  t.same(JSON.parse(readFileSync(file, 'utf8')), { url: cp.url, key: cp.adminKey }, 'the backspace took the stray character away');

  const list = await runVmkit(['instances', 'list'], { HOME: home });
  t.equal(list.code, 0, 'a later command finds the saved login under the same HOME');
  t.match(list.stdout, /^ID\s+NAME/);
});

t.test('a wrong key is refused naming the URL, not echoed, and nothing is saved', async (t) => {
  const home = newHome(t);
  const wrong = `vmk_${'q'.repeat(43)}`;
  const term = onTerminal(['login', '--url', cp.url], home);
  await term.shown(`API key for ${cp.url}: `);
  term.write(`${wrong}\r`);
  t.equal(await term.exited, 1, term.screen());
  t.match(term.screen(), 'error: the server refused this key, nothing saved: unauthorized: ');
  t.match(term.screen(), `(GET ${cp.url}/api/instances answered 401)`, 'names the URL it tried');
  t.notMatch(term.screen(), 'q'.repeat(10), 'the key was not echoed');
  t.notOk(existsSync(credentials(home)), 'nothing saved');
});

t.test('Ctrl-C at the prompt cancels and saves nothing', async (t) => {
  const home = newHome(t);
  const term = onTerminal(['login', '--url', cp.url], home);
  await term.shown(`API key for ${cp.url}: `);
  term.write('vmk_half\u0003');
  t.equal(await term.exited, 2, term.screen());
  t.match(term.screen(), 'login cancelled; nothing saved');
  t.notMatch(term.screen(), 'vmk_half');
  t.notOk(existsSync(credentials(home)));
});

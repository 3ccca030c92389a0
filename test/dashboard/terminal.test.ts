// The instance page's browser terminal and recordings: the shell WebSocket door taking
// the dashboard's session cookie (only from the server's own Origin), then xterm.js in
// real Chromium typing into a real agent's PTY, and the recording played back.
import t from 'tap';
import WebSocket from 'ws';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { chromiumSkipReason, openBrowser, screenshot, serveDashboard, signIn } from '../helpers/dashboard.ts';
import type { HttpSession } from '../helpers/dashboard.ts';
import { fileNeeds, prerequisite } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';

const notRoot = process.getuid?.() === 0 ? false : 'the agent must run shells as root here (tests run as root under CI)';

/** Opens the shell door as a browser would: the cookie, and an Origin. */
function openWithCookie(url: string, instanceId: string, s: HttpSession, origin: string | null): Promise<{ opened: true; ws: WebSocket } | { status: number; body: { error: string; message: string } }> {
  const u = new URL(`${url}/api/instances/${instanceId}/shell`);
  u.protocol = 'ws:';
  const ws = new WebSocket(u, { headers: { cookie: s.cookie, ...(origin === null ? {} : { origin }) } });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ opened: true, ws }));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error: string; message: string } }));
    });
    ws.once('error', reject);
  });
}

if (fileNeeds(notRoot)) {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 10_000, anonymousMax: 10_000 } } });
  t.teardown(() => cp.close());
  await serveDashboard(cp);
  const real = await enrollRealAgent(t, cp);
  // bash without the host root's dotfiles (see plainBashShell), instead of root's login shell.
  real.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 4, program: plainBashShell() } });
  real.start();
  await waitAgentState(cp, real.instanceId, 'connected', 120_000);

  t.test('the shell door takes the session cookie only from a page of this server', async (t) => {
    const s = await signIn(cp, cp.adminKey);
    const foreign = await openWithCookie(cp.url, real.instanceId, s, 'https://evil.example');
    t.ok('status' in foreign && foreign.status === 403, 'another origin is refused');
    if ('status' in foreign) t.equal(foreign.body.error, 'csrf_token_invalid');
    const none = await openWithCookie(cp.url, real.instanceId, s, null);
    t.ok('status' in none && none.status === 403, 'no origin is refused');
    const own = await openWithCookie(cp.url, real.instanceId, s, cp.url);
    t.ok('opened' in own, 'the server’s own origin opens it');
    if ('opened' in own) own.ws.close();
    const reader = await cp.createKey(['instances:read']);
    const narrow = await signIn(cp, reader.secret);
    const refused = await openWithCookie(cp.url, real.instanceId, narrow, cp.url);
    t.ok('status' in refused && refused.status === 403, 'the session’s key still needs the shell scope');
    const audit = await cp.api<{ items: { channel: string; status: number }[] }>('GET', '/api/audit?action=shell.refused');
    t.ok(audit.body.items.some((a) => a.status === 403), 'refusals are audited');
  });

  t.test('signing out of the dashboard ends its open terminals at once, with the reason', async (t) => {
    const s = await signIn(cp, cp.adminKey);
    const other = await signIn(cp, cp.adminKey);
    const mine = await openWithCookie(cp.url, real.instanceId, s, cp.url);
    const theirs = await openWithCookie(cp.url, real.instanceId, other, cp.url);
    if (!('opened' in mine) || !('opened' in theirs)) throw new Error('the terminals did not open');
    const controls: { type: string; reason?: string; message?: string | null }[] = [];
    mine.ws.on('message', (data, binary) => {
      if (!binary) controls.push(JSON.parse(Buffer.from(data as Buffer).toString('utf8')) as { type: string });
    });
    const closed = new Promise<void>((resolve) => mine.ws.once('close', () => resolve()));
    const out = await cp.api('DELETE', '/api/session', { key: null, headers: { cookie: s.cookie, 'x-vmkit-csrf': s.csrf } });
    t.equal(out.status, 200, 'signed out');
    await closed;
    const exit = controls.find((c) => c.type === 'exit');
    t.equal(exit?.reason, 'signed_out', 'the terminal was told why it ended');
    t.match(exit?.message, /signed out/);
    t.equal(theirs.ws.readyState, WebSocket.OPEN, 'a terminal of another dashboard session stays open');
    theirs.ws.close();
    const rows = await cp.api<{ items: { end_reason: string | null }[] }>('GET', '/api/shell-sessions');
    t.ok(rows.body.items.some((r) => r.end_reason === 'signed_out'), 'the session record says signed_out');
  });

  t.test('in the browser: open a terminal, run a command, exit, play its recording', { skip: prerequisite(chromiumSkipReason) }, async (t) => {
    const { page, pageErrors } = await openBrowser(t);
    await page.goto(`${cp.url}/#/instances/${real.instanceId}`);
    await page.getByLabel('API key').fill(cp.adminKey);
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Open terminal' }).click();
    await page.locator('[data-terminal-status]').getByText('Connected').waitFor();
    await page.keyboard.type('echo dash-$((6*7))\n');
    await page.locator('[data-terminal] .xterm-rows').getByText('dash-42', { exact: true }).waitFor();
    t.pass('the command ran in the PTY and its output is on the screen');
    await screenshot(page, 'instance-terminal');
    await page.keyboard.type('exit\n');
    await page.locator('[data-terminal-status]').getByText(/Ended: exit \(exit code 0\)/).waitFor();
    t.pass('the end and its exit code are shown');
    // The list on screen may still be the one fetched before this session ended (the
    // earlier subtest's session first): wait for the refreshed list to show this one.
    const row = page.locator('tr[data-shell-session]').filter({ hasText: /exit \(0\)/ }).first();
    await row.waitFor();
    t.match(await row.textContent(), /websocket.*exit \(0\)/);
    t.equal(await page.locator('tr[data-shell-session]').first().getAttribute('data-shell-session'), await row.getAttribute('data-shell-session'), 'the newest session is listed first');
    await row.getByRole('button', { name: 'Play' }).click();
    await page.locator('.player').getByText(/dash-42/).first().waitFor();
    t.pass('the recording plays back in the page');
    await screenshot(page, 'instance-recording');
    t.same(pageErrors, [], 'no script errors');
  });
}

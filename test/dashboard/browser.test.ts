// The dashboard in real Chromium (Debian's, driven by playwright-core) against a real
// control plane: sign-in, a local VM that connects and is hardened with live steps,
// API keys shown once, a revoked key ending its session, the audit log paged.
// Screenshots of each page land in test-output/screenshots/ for review.
import t from 'tap';
import type { Page } from 'playwright-core';
import { generateEd25519KeyPair } from '../../control-plane/src/shell/ssh-key.ts';
import { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';
import { computeProviderOf } from '../../control-plane/src/services/instances.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { chromiumSkipReason, openBrowser, screenshot, serveDashboard } from '../helpers/dashboard.ts';
import { fileNeeds, prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';

// A sandbox VM boots, connects and is hardened in here: room for a loaded machine.
t.setTimeout(600_000);
const VM_WAIT_MS = 240_000;

async function signInWith(page: Page, url: string, key: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Instances', level: 1 }).waitFor();
}

if (fileNeeds(chromiumSkipReason)) {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 10_000, anonymousMax: 10_000 } } });
  t.teardown(async () => {
    if (!sandboxSkipReason) {
      const local = computeProviderOf(cp.ctx, 'local');
      if (local instanceof LocalSandboxProvider) for (const s of await local.list()) await local.destroy(s.ref).catch(() => undefined);
    }
    await cp.close();
  });
  await serveDashboard(cp);

  t.test('a wrong key is refused in words next to the field; the right one signs in', async (t) => {
    const { page, pageErrors } = await openBrowser(t);
    await page.goto(`${cp.url}/`);
    await screenshot(page, 'sign-in');
    await page.getByLabel('API key').fill('vmk_not-a-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const error = page.locator('#signin-error');
    await error.waitFor();
    t.match(await error.textContent(), /not a whole VMKit API key/);
    t.equal(await page.getByLabel('API key').getAttribute('aria-invalid'), 'true', 'the field is marked invalid');
    await page.getByLabel('API key').fill(cp.adminKey);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Instances', level: 1 }).waitFor();
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === 'vmk_session');
    t.ok(session?.httpOnly, 'an HttpOnly cookie');
    t.equal(session?.sameSite, 'Strict');
    t.equal(await page.evaluate<string>('document.cookie'), '', 'page scripts cannot read it');
    t.notOk((await page.content()).includes(cp.adminKey), 'the key is not kept in the page');
    t.same(pageErrors, [], 'no script errors');
  });

  t.test(
    'create a local VM, watch its agent connect, harden it step by step to hardened, read its facts and commands, destroy it',
    { skip: prerequisite(sandboxSkipReason) },
    async (t) => {
      const { page, requests, pageErrors } = await openBrowser(t);
      page.setDefaultTimeout(VM_WAIT_MS);
      await signInWith(page, cp.url, cp.adminKey);
      const name = uniqueInstanceName('dash');
      await page.getByLabel('Name').fill(name);
      await page.getByLabel('Provider').selectOption('local');
      await page.getByRole('button', { name: 'Create instance' }).click();
      const row = page.locator(`tr[data-instance="${name}"]`);
      await row.waitFor();
      const listsBefore = requests.filter((r) => r === 'GET /api/instances').length;
      await row.locator('.agent-state').getByText('connected', { exact: true }).waitFor();
      t.pass('the agent state turned connected on the page');
      t.equal(await row.locator('.badge-running').count(), 1, 'and the instance running');
      t.ok(requests.includes('GET /api/events'), 'over the live feed');
      t.ok(requests.filter((r) => r === 'GET /api/instances').length - listsBefore <= 1, 'not by polling the list');
      await screenshot(page, 'instances-connected');

      await row.getByRole('button', { name: 'Harden' }).click();
      await row.locator('.harden-result').getByText('hardened', { exact: true }).waitFor();
      const steps = await row.locator('.steps li').allTextContents();
      t.ok(steps.length >= 3, `the steps were shown as they came: ${steps.join(' | ')}`);
      t.ok(steps.some((s) => /sshd/.test(s)), 'sshd among them');
      await row.locator('td').nth(3).locator('time').waitFor();
      t.pass('the hardened time is shown');
      await screenshot(page, 'instances-hardened');

      await row.getByRole('link', { name }).click();
      await page.getByRole('heading', { name, level: 1 }).waitFor();
      await page.locator('dd[data-fact="OS"]').filter({ hasNotText: '—' }).waitFor();
      t.notMatch(await page.locator('dd[data-fact="Agent version"]').textContent(), /^—$/, 'the agent version is shown');
      t.ok(await page.locator('dd[data-fact="Last seen"] time').count(), 'and when it was last seen');
      const harden = page.locator('tbody tr').filter({ hasText: 'harden' });
      await harden.first().waitFor();
      t.match(await harden.first().textContent(), /succeeded/, 'the harden command and its state');
      await harden.first().locator('summary').click();
      t.match(await harden.first().locator('pre').textContent(), /"status": "hardened"/, 'and its result');
      await screenshot(page, 'instance-detail');

      await page.getByRole('link', { name: '← Instances' }).click();
      await row.getByRole('button', { name: 'Destroy' }).click();
      await row.getByRole('button', { name: `Destroy ${name}` }).click();
      await row.waitFor({ state: 'detached' });
      t.pass('destroyed instances leave the list');
      t.same(pageErrors, [], 'no script errors');
    },
  );

  t.test('an API key is created with scopes and expiry, its secret shown once with MCP config; the list shows it after', async (t) => {
    const { page, pageErrors } = await openBrowser(t);
    await signInWith(page, cp.url, cp.adminKey);
    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByLabel('Name').fill('laptop claude');
    await page.getByRole('checkbox', { name: 'instances:harden' }).check();
    await page.getByLabel('Expires').selectOption('30');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secretEl = page.locator('[data-secret]');
    await secretEl.waitFor();
    const secret = (await secretEl.textContent())?.trim() ?? '';
    t.match(secret, /^vmk_[0-9A-Za-z]{43}$/, 'the secret is shown');
    const json = JSON.parse((await page.locator('[data-snippet="mcp-json"]').textContent()) ?? '{}') as {
      mcpServers: { vmkit: { type: string; url: string; headers: Record<string, string> } };
    };
    t.same(json.mcpServers.vmkit, { type: 'http', url: `${cp.url}/mcp`, headers: { Authorization: `Bearer ${secret}` } }, 'a ready .mcp.json');
    t.equal(
      await page.locator('[data-snippet="claude-mcp-add"]').textContent(),
      `claude mcp add --transport http vmkit ${cp.url}/mcp --header "Authorization: Bearer ${secret}"`,
      'and the claude mcp add line',
    );
    await page.getByRole('button', { name: 'Copy key' }).click();
    await page.getByRole('button', { name: 'Copied' }).waitFor();
    t.equal(await page.evaluate<string>('navigator.clipboard.readText()'), secret, 'the copy button copies the key');
    const works = await cp.api('GET', '/api/instances', { key: secret });
    t.equal(works.status, 200, 'the key works');
    await screenshot(page, 'settings-new-key');
    await page.getByRole('button', { name: 'Done, hide the key' }).click();
    await page.reload();
    await page.locator('tr[data-key="laptop claude"]').waitFor();
    t.notOk((await page.content()).includes(secret), 'the secret is never shown again');
    t.match(await page.locator('tr[data-key="laptop claude"]').textContent(), /instances:read, instances:harden/);
    await screenshot(page, 'settings-keys');
    t.same(pageErrors, [], 'no script errors');
  });

  t.test('revoking the key of a session ends that session, in words', async (t) => {
    const key = await cp.createKey(['admin'], { name: 'short-lived' });
    const { page } = await openBrowser(t);
    await signInWith(page, cp.url, key.secret);
    await page.getByRole('link', { name: 'Settings' }).click();
    const row = page.locator('tr[data-key="short-lived"]');
    await row.getByRole('button', { name: 'Revoke' }).click();
    await row.getByRole('button', { name: 'Revoke (ends this session)' }).click();
    const notice = page.getByRole('status');
    await notice.getByText('Your session ended').waitFor();
    t.match(await notice.textContent(), /The API key has been revoked\./);
    t.ok(await page.getByLabel('API key').isVisible(), 'back at the sign-in form');
    await screenshot(page, 'session-ended');
    await page.reload();
    // The reloaded page asks who is signed in first: wait for its answer on screen (the
    // sign-in field or a signed-in page's Sign out), then look which it is.
    const signIn = page.getByLabel('API key', { exact: true });
    await signIn.or(page.getByRole('button', { name: 'Sign out' })).waitFor();
    t.ok(await signIn.isVisible(), 'and a reload does not bring the session back');
  });

  t.test('the audit log pages and filters by channel; sign-out ends the session', async (t) => {
    const { page, pageErrors } = await openBrowser(t);
    await signInWith(page, cp.url, cp.adminKey);
    // Enough rows for a second page whatever ran before.
    for (let i = 0; i < 30; i++) await cp.api('GET', '/api/instances');
    await page.getByRole('link', { name: 'Audit log' }).click();
    const rows = page.locator('tr[data-audit]');
    await rows.first().waitFor();
    t.equal(await rows.count(), 25, 'a page of 25');
    const firstPage = await rows.allTextContents();
    const older = page.waitForResponse((r) => r.url().includes('/api/audit?') && r.url().includes('cursor='));
    await page.getByRole('button', { name: 'Older →' }).click();
    await older;
    await page.waitForSelector(`tr[data-audit]:text-is(${JSON.stringify(firstPage[0] ?? '')})`, { state: 'detached' });
    const secondPage = await rows.allTextContents();
    t.equal(secondPage.filter((r) => firstPage.includes(r)).length < secondPage.length, true, 'the next page holds older entries');
    await page.getByRole('button', { name: '← Newer' }).click();
    await page.getByText('Page 1').waitFor();
    const filtered = page.waitForResponse((r) => r.url().includes('channel=dashboard'));
    await page.getByLabel('Channel').selectOption('dashboard');
    await page.getByRole('button', { name: 'Apply' }).click();
    await filtered;
    await page.waitForSelector('tr[data-audit]:not(:has(td:nth-child(3):text-is("dashboard")))', { state: 'detached' });
    t.ok((await rows.count()) > 0, 'the dashboard’s own requests are there, as channel dashboard');
    const byAction = page.waitForResponse((r) => r.url().includes('action=keys.create'));
    await page.getByLabel('Action').fill('keys.create');
    await page.getByRole('button', { name: 'Apply' }).click();
    await byAction;
    await page.waitForSelector('tr[data-audit]:not([data-audit="keys.create"])', { state: 'detached' });
    t.ok((await rows.count()) > 0, 'filtered by action');
    await screenshot(page, 'audit-log');

    // The sign-in form's own field: the audit page's "Actor (API key)" filter matches a
    // loose label lookup at once, before the sign-out has even been answered.
    const signedOut = page.waitForResponse((r) => r.url().endsWith('/api/session') && r.request().method() === 'DELETE');
    await page.getByRole('button', { name: 'Sign out' }).click();
    t.equal((await signedOut).status(), 200, 'signed out');
    await page.getByLabel('API key', { exact: true }).waitFor();
    t.notOk((await page.context().cookies()).some((c) => c.name === 'vmk_session' && c.value !== ''), 'the cookie is gone');
    t.same(pageErrors, [], 'no script errors');
  });

  t.test('settings: SSH keys added and removed, integrations set and reset, refusals in words', async (t) => {
    const { page, pageErrors } = await openBrowser(t);
    await signInWith(page, cp.url, cp.adminKey);
    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('link', { name: 'SSH keys' }).click();
    await page.getByLabel(/Public key/).fill('ssh-ed25519 not-base64 me@laptop');
    await page.getByRole('button', { name: 'Add SSH key' }).click();
    await page.getByRole('alert').waitFor();
    t.match(await page.getByRole('alert').textContent(), /public key/i, 'a bad key is refused in words');
    const { public: publicKey } = generateEd25519KeyPair('me@laptop');
    await page.getByLabel(/Public key/).fill(publicKey);
    await page.getByRole('button', { name: 'Add SSH key' }).click();
    const row = page.locator('tr[data-ssh-key^="SHA256:"]');
    await row.waitFor();
    t.match(await row.textContent(), /me@laptop/);
    await screenshot(page, 'settings-ssh-keys');
    await row.getByRole('button', { name: 'Remove' }).click();
    await row.getByRole('button', { name: 'Remove this SSH key' }).click();
    await row.waitFor({ state: 'detached' });
    t.pass('removed after a confirm');

    await page.getByRole('link', { name: 'Integrations' }).click();
    const dns = page.locator('form[data-integration="dns"]');
    await dns.waitFor();
    await dns.getByLabel('Zone').fill('dash.test');
    await dns.getByRole('button', { name: 'Save DNS' }).click();
    await dns.getByText('Saved.').waitFor();
    await dns.getByText('set for this workspace').waitFor();
    const view = await cp.api<{ provider: string; settings: { zone?: string } }>('GET', '/api/workspace/dns');
    t.equal(view.body.settings.zone, 'dash.test', 'the DNS zone is set');
    const compute = page.locator('form[data-integration="compute"]');
    await compute.getByLabel('Provider').selectOption('hetzner');
    await compute.getByRole('button', { name: 'Save Compute' }).click();
    await compute.getByRole('alert').waitFor();
    t.match(await compute.getByRole('alert').textContent(), /token/i, 'Hetzner without a token is refused in words, next to its form');
    await screenshot(page, 'settings-integrations');
    await dns.getByRole('button', { name: 'Back to the default' }).click();
    await dns.getByText("the control plane's default").waitFor();
    t.pass('and reset to the default');
    t.same(pageErrors, [], 'no script errors');
  });

  t.test('usable from the keyboard alone: sign in, create an instance, open its page', async (t) => {
    const { page } = await openBrowser(t);
    await page.goto(`${cp.url}/`);
    await page.getByLabel('API key').waitFor();
    t.equal(await page.evaluate<string | undefined>('document.activeElement?.id'), 'api-key', 'the key field has the focus');
    await page.keyboard.type(cp.adminKey);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Instances', level: 1 }).waitFor();
    const name = uniqueInstanceName('keys-only');
    // Tab from the top of the page to the name field, counting the stops on the way.
    let stops = 0;
    while (!(await page.evaluate<boolean>("document.activeElement?.getAttribute('name') === 'name'"))) {
      await page.keyboard.press('Tab');
      stops += 1;
      if (stops > 20) break;
    }
    t.ok(stops <= 20, `the name field is reached with Tab (${stops} stops)`);
    await page.keyboard.type(name);
    await page.keyboard.press('Tab');
    await page.keyboard.press('ArrowDown'); // provider: manual
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    const row = page.locator(`tr[data-instance="${name}"]`);
    await row.waitFor();
    t.match(await row.textContent(), /manual/, 'created as manual');
    await row.getByRole('link', { name }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name, level: 1 }).waitFor();
    t.pass('its page opens from the keyboard');
  });

  t.test('readable at phone width', async (t) => {
    const { page } = await openBrowser(t, { viewport: { width: 390, height: 844 } });
    await signInWith(page, cp.url, cp.adminKey);
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    t.ok(overflow <= 0, `no sideways scrolling of the page (${overflow}px)`);
    await screenshot(page, 'instances-phone');
  });
}

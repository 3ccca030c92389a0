/**
 * The dashboard in tests: built once per test process through the same build function
 * as `npm run build` (into a temp dir), served by a test control plane, driven in
 * Debian's real Chromium through playwright-core (no browser download).
 *
 *   const cp = await startTestControlPlane();
 *   await serveDashboard(cp);                        // builds (once) and points the server at it
 *   const { page } = await openBrowser(t, cp);        // skip/fail via prerequisite(chromiumSkipReason)
 *   await screenshot(page, 'instances');              // test-output/screenshots/instances.png
 *   const s = await signIn(cp, cp.adminKey);          // HTTP level: { cookie, csrf, setCookie }
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { buildDashboard } from '../../control-plane/src/dashboard/build.ts';
import type { DashboardManifest } from '../../control-plane/src/dashboard/build.ts';
import type { TestControlPlane } from './control-plane.ts';

/** Debian's chromium package; VMKIT_CHROMIUM may name another build of Chromium. */
export const CHROMIUM_PATH = process.env.VMKIT_CHROMIUM ?? '/usr/bin/chromium';

export const chromiumSkipReason: string | false = existsSync(CHROMIUM_PATH)
  ? false
  : `no Chromium at ${CHROMIUM_PATH} (apt-get install chromium, or set VMKIT_CHROMIUM)`;

export const SCREENSHOT_DIR = join(import.meta.dirname, '..', '..', 'test-output', 'screenshots');

let built: Promise<{ dir: string; manifest: DashboardManifest }> | undefined;

/** Builds the dashboard once for this test process (removed at exit). */
export function builtDashboard(): Promise<{ dir: string; manifest: DashboardManifest }> {
  built ??= (async () => {
    const base = mkdtempSync(join(tmpdir(), 'vmkit-dashboard-'));
    process.once('exit', () => rmSync(base, { recursive: true, force: true }));
    const dir = join(base, 'dashboard');
    return { dir, manifest: await buildDashboard(dir) };
  })();
  return built;
}

export async function serveDashboard(cp: TestControlPlane): Promise<DashboardManifest> {
  const { dir, manifest } = await builtDashboard();
  cp.ctx.dashboardDir = dir;
  return manifest;
}

export interface TestBrowser {
  browser: Browser;
  context: BrowserContext;
  page: Page;
  /** Every request the page made, method and path (to tell pushed updates from polling). */
  requests: string[];
  /** Uncaught page errors and console errors (not the browser's own note of a 4xx answer, which the page shows in words). */
  pageErrors: string[];
}

export async function openBrowser(
  t: { teardown(fn: () => unknown): void },
  opts: { viewport?: { width: number; height: number } } = {},
): Promise<TestBrowser> {
  // Root may not use Chromium's own sandbox (the test machine is the sandbox here); a
  // container's small /dev/shm would crash renderers, so they use /tmp.
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: ['--no-sandbox', '--disable-dev-shm-usage'], headless: true });
  t.teardown(() => browser.close());
  const context = await browser.newContext({ viewport: opts.viewport ?? { width: 1280, height: 800 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  const page = await context.newPage();
  const requests: string[] = [];
  const pageErrors: string[] = [];
  page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
  });
  return { browser, context, page, requests, pageErrors };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export interface HttpSession {
  /** `vmk_session=...` for a Cookie header. */
  cookie: string;
  csrf: string;
  setCookie: string;
}

/** Signs in over HTTP as the dashboard does; throws when the server refuses. */
export async function signIn(cp: TestControlPlane, key: string): Promise<HttpSession> {
  const res = await cp.api<{ session: { csrf_token: string } }>('POST', '/api/session', { key: null, body: { key } });
  if (res.status !== 201) throw new Error(`sign-in answered ${res.status}: ${JSON.stringify(res.body)}`);
  const setCookie = res.headers.get('set-cookie') ?? '';
  return { cookie: setCookie.split(';')[0] ?? '', csrf: res.body.session.csrf_token, setCookie };
}

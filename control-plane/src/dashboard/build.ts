/**
 * The dashboard's build step: bundles web/ (Preact + TSX) with esbuild into
 * `<outDir>/assets/` under content-hashed names and writes `<outDir>/index.html` and
 * `<outDir>/manifest.json` naming them. A new build lands whole (built beside, then
 * swapped in), so a running server never serves half of one.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { build } from 'esbuild';
import { DEFAULT_DASHBOARD_DIR } from './location.ts';

export { DEFAULT_DASHBOARD_DIR };
export const WEB_SOURCE_DIR = join(import.meta.dirname, '..', '..', 'web');

export interface DashboardManifest {
  /** The control plane's version and the hash of the entry script: what this build is. */
  version: string;
  built_at: string;
  script: string;
  styles: string[];
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? '0.0.0';
}

export function indexHtml(m: DashboardManifest): string {
  const styles = m.styles.map((s) => `<link rel="stylesheet" href="/assets/${s}">`).join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="vmkit-dashboard-version" content="${m.version}">
<title>VMKit</title>
<link rel="icon" href="data:,">
${styles}
</head>
<body>
<div id="app"></div>
<script type="module" src="/assets/${m.script}"></script>
</body>
</html>
`;
}

/**
 * Moves the staged build to outDir and removes the one it replaces. Two builds racing
 * (two `npm start`s) may each find the other's build in the way: the later one wins.
 */
async function swapIn(staging: string, outDir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const old = `${outDir}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
    await rename(outDir, old).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    try {
      await rename(staging, outDir);
      await rm(old, { recursive: true, force: true });
      return;
    } catch (err) {
      await rm(old, { recursive: true, force: true });
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || attempt >= 5) throw err;
    }
  }
}

/** Builds the dashboard into outDir (replacing what was there) and answers its manifest. */
export async function buildDashboard(outDir = DEFAULT_DASHBOARD_DIR): Promise<DashboardManifest> {
  const staging = `${outDir}.building-${process.pid}-${randomBytes(4).toString('hex')}`;
  const assets = join(staging, 'assets');
  await mkdir(assets, { recursive: true });
  try {
    const result = await build({
      entryPoints: { main: join(WEB_SOURCE_DIR, 'main.tsx') },
      outdir: assets,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: ['es2022', 'chrome111', 'firefox115', 'safari16'],
      jsx: 'automatic',
      jsxImportSource: 'preact',
      entryNames: '[name]-[hash]',
      assetNames: '[name]-[hash]',
      loader: { '.woff': 'file', '.woff2': 'file', '.ttf': 'file', '.svg': 'file', '.png': 'file' },
      minify: true,
      sourcemap: 'linked',
      legalComments: 'linked',
      metafile: true,
      logLevel: 'silent',
      define: { 'process.env.NODE_ENV': '"production"' },
      tsconfig: join(WEB_SOURCE_DIR, 'tsconfig.json'),
    });
    let script: string | undefined;
    const styles: string[] = [];
    const nameOf = (file: string) => relative(assets, resolve(file));
    for (const [file, out] of Object.entries(result.metafile.outputs)) {
      if (out.entryPoint === undefined || !file.endsWith('.js')) continue;
      script = nameOf(file);
      if (out.cssBundle !== undefined) styles.push(nameOf(out.cssBundle));
    }
    if (script === undefined) throw new Error('the dashboard build made no entry script');
    const manifest: DashboardManifest = {
      version: `${packageVersion()}+${/-([A-Z0-9]+)\.js$/i.exec(script)?.[1] ?? 'dev'}`,
      built_at: new Date().toISOString(),
      script,
      styles,
    };
    await writeFile(join(staging, 'index.html'), indexHtml(manifest));
    await writeFile(join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    await swapIn(staging, outDir);
    return manifest;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

/** The manifest of the build in dir, or undefined when there is none. */
export async function readManifest(dir: string): Promise<DashboardManifest | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as DashboardManifest;
  } catch {
    return undefined;
  }
}

/**
 * The control plane's production build (`npm run build`): esbuild bundles each entry,
 * with our TypeScript and @vmkit/protocol's, into one ES module under dist/ beside a
 * source map. npm packages stay external and load from node_modules at run time, so
 * native addons (better-sqlite3, node-pty, ssh2's optional cpu-features) and packages
 * that find their own files (pino's workers) work as they do from sources; only the
 * packages in BUNDLED_PACKAGES are bundled.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { decode, encode } from '@jridgewell/sourcemap-codec';
import type { SourceMapSegment } from '@jridgewell/sourcemap-codec';
import { build } from 'esbuild';
import type { Plugin } from 'esbuild';

/** Where `npm run build` puts the control plane and where the bins look for it. */
export const DEFAULT_OUT_DIR = join(import.meta.dirname, '..', 'dist');
/** One bundle per program the bins start: `<outDir>/<name>.js`. */
export const ENTRIES = {
  'server-main': join(import.meta.dirname, 'cli', 'server-main.ts'),
  'vmkit-main': join(import.meta.dirname, 'cli', 'vmkit-main.ts'),
} as const;
const FILE_URL_TO_PATH = '__vmkitFileURLToPath';

/**
 * Bundled rather than imported: the protocol package (TypeScript sources), and
 * drizzle-orm, pure ES modules on which Node's ES module loader spends about two CPU
 * seconds (~450 modules, 176 KB of package.json exports): bundled, the server starts on
 * about a third of the CPU time (README, "Built JavaScript").
 */
const BUNDLED_PACKAGES = new Set(['@vmkit/protocol', 'drizzle-orm']);

/** The package an import names: `@scope/name` or `name`, without a subpath. */
export function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

/** Every bare import (npm packages, node: builtins) stays an import, but for BUNDLED_PACKAGES. */
const externalPackages: Plugin = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => (BUNDLED_PACKAGES.has(packageName(args.path)) ? undefined : { path: args.path, external: true }));
  },
};

/**
 * Leaves bundled npm code (drizzle-orm) out of a source map: its frames name lines of the
 * bundle, and the map names only our sources (drizzle-orm's own maps name TypeScript files
 * it does not ship).
 */
function withoutPackages(mapJson: string): string {
  const map = JSON.parse(mapJson) as { sources: string[]; mappings: string };
  const renumber = new Map<number, number>();
  const sources: string[] = [];
  map.sources.forEach((source, i) => {
    if (source.split('/').includes('node_modules')) return;
    renumber.set(i, sources.length);
    sources.push(source);
  });
  const lines = decode(map.mappings).map((line) =>
    line.map((seg): SourceMapSegment => {
      const to = seg.length === 1 ? undefined : renumber.get(seg[1]);
      if (seg.length === 1 || to === undefined) return [seg[0]];
      return seg.length === 4 ? [seg[0], to, seg[2], seg[3]] : [seg[0], to, seg[2], seg[3], seg[4]];
    }),
  );
  return JSON.stringify({ ...map, sources, mappings: encode(lines) });
}

/** A URL path from outDir to file, each segment escaped. */
function urlFrom(outDir: string, file: string): string {
  return relative(outDir, file).split(sep).map(encodeURIComponent).join('/');
}

/**
 * A bundle moves every module to `<outDir>/<entry>.js`, which would move what
 * `import.meta.url`, `.filename` and `.dirname` point at. This keeps them naming the
 * module's own source file (as a path relative to the bundle, so the tree can move),
 * so paths computed from them (drizzle/, web/, scripts/install-agent.sh) and the
 * "am I the main module" checks mean in dist/ what they mean in src/.
 */
function keepModuleLocation(outDir: string): Plugin {
  return {
    name: 'keep-module-location',
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, async (args) => {
        if (args.path.split(sep).includes('node_modules')) return undefined;
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('import.meta')) return undefined;
        const url = (file: string) => `new URL(${JSON.stringify(urlFrom(outDir, file))}, import.meta.url)`;
        const contents = source.replace(/\bimport\.meta\.(url|filename|dirname)\b/g, (_, what: string) => {
          if (what === 'url') return `${url(args.path)}.href`;
          return `${FILE_URL_TO_PATH}(${url(what === 'filename' ? args.path : dirname(args.path))})`;
        });
        return { contents, loader: 'ts' };
      });
    },
  };
}

/**
 * Builds the control plane into outDir and answers the files written. Each file is
 * written beside and renamed into place, so a process starting during a build (tests
 * run `npm start`, which builds, beside running bins) loads a whole file, old or new.
 */
export async function buildControlPlane(outDir = DEFAULT_OUT_DIR): Promise<string[]> {
  const result = await build({
    entryPoints: ENTRIES,
    outdir: outDir,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    sourcemap: 'linked',
    // The map points at the sources in src/, which ship with the package.
    sourcesContent: false,
    banner: { js: `import { fileURLToPath as ${FILE_URL_TO_PATH} } from 'node:url';` },
    plugins: [externalPackages, keepModuleLocation(outDir)],
    tsconfig: join(import.meta.dirname, '..', 'tsconfig.json'),
    write: false,
    logLevel: 'silent',
  });
  await mkdir(outDir, { recursive: true });
  // Maps first, so a bundle never lands before the map it names.
  const files = [...result.outputFiles].sort((a, b) => Number(b.path.endsWith('.map')) - Number(a.path.endsWith('.map')));
  for (const file of files) {
    const staging = `${file.path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(staging, file.path.endsWith('.map') ? withoutPackages(file.text) : file.contents);
      await rename(staging, file.path);
    } catch (err) {
      await rm(staging, { force: true });
      throw err;
    }
  }
  return files.map((f) => f.path);
}

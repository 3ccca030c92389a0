/**
 * Stands in for node-pty's `lib/utils.js` in the single-executable build (the esbuild
 * plugin in scripts/agent-build swaps it in; under tsx node-pty loads its own addon).
 *
 * The SEA carries `pty.node` as an asset. A shared object can only be loaded from a
 * file, so it is written once to `<directory of the executable>/native/`, named by its
 * sha-256, and loaded from there with process.dlopen — only after checking that this
 * process's user owns the directory and the file, that nobody else can write them, and
 * that the file's bytes are the asset's. Outside a SEA (the bundle run by plain node) the
 * addon is the `pty.node` the build puts beside the bundle.
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import * as sea from 'node:sea';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** node-pty's own helper, kept as it is. */
export function assign<T extends object>(target: T, ...sources: object[]): T {
  for (const source of sources) Object.assign(target, source);
  return target;
}

function checkPrivate(path: string, st: Stats, what: string): void {
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== me) throw new Error(`${what} ${path} belongs to uid ${st.uid}, not to this process (uid ${me})`);
  if ((st.mode & 0o022) !== 0) throw new Error(`${what} ${path} is writable by others (mode ${(st.mode & 0o777).toString(8)})`);
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The asset as a file whose content and permissions were checked; written on first use. */
export function extractAsset(asset: string, baseDir = dirname(process.execPath)): string {
  const bytes = new Uint8Array(sea.getRawAsset(asset));
  const digest = sha256(bytes);
  const base = lstatSync(baseDir);
  checkPrivate(baseDir, base, 'the directory of the executable');
  const dir = join(baseDir, 'native');
  if (!lstatOrUndefined(dir)) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  const dirSt = lstatSync(dir);
  if (!dirSt.isDirectory()) throw new Error(`${dir} is not a directory`);
  checkPrivate(dir, dirSt, 'the native addon directory');
  const file = join(dir, `${asset.replace(/\.node$/, '')}-${digest.slice(0, 16)}.node`);
  const present = lstatOrUndefined(file);
  if (present) {
    if (!present.isFile()) throw new Error(`${file} is not a regular file`);
    checkPrivate(file, present, 'the native addon');
    if (sha256(readFileSync(file)) === digest) return file;
    rmSync(file);
  }
  // A unique temp name and a rename: two processes extracting at once both end with whole files.
  const tmp = join(dir, `.${asset}.${process.pid}.${Date.now()}.tmp`);
  writeFileSync(tmp, bytes, { mode: 0o500, flag: 'wx' });
  renameSync(tmp, file);
  const written = lstatSync(file);
  checkPrivate(file, written, 'the native addon');
  if (sha256(readFileSync(file)) !== digest) throw new Error(`${file} does not hold the embedded ${asset}`);
  return file;
}

/** What node-pty's unixTerminal asks for: the addon's exports and the folder its helper would be in. */
export function loadNativeModule(name: string): { dir: string; module: unknown } {
  if (name !== 'pty') throw new Error(`the vmkit-agent build carries no ${name}.node (only pty.node, for Linux PTYs)`);
  const file = sea.isSea() ? extractAsset('pty.node') : join(__dirname, 'pty.node');
  const mod: { exports: unknown } = { exports: {} };
  process.dlopen(mod, file);
  // node-pty puts its spawn-helper here; only macOS uses one, Linux forks in the addon.
  return { dir: `${dirname(file)}/`, module: mod.exports };
}

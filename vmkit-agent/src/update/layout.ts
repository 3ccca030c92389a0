import { lstat, mkdir, readdir, readlink, realpath, rename, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsyncDir } from '../durable.ts';

/**
 * Where an installed agent lives (scripts/install-agent.sh):
 *
 *   <root>/versions/<version>/vmkit-agent   one executable per version
 *   <root>/current -> versions/<version>     what systemd (or the restart loop) starts
 *
 * Updating stages a version beside the running one and switches `current` with one
 * rename, so the machine is on the old or the new version, never in between.
 */
export interface InstallLayout {
  root: string;
  versionsDir: string;
  current: string;
}

export const EXECUTABLE = 'vmkit-agent';

/** The layout this process runs from, or why it does not run from one (sources under tsx, a copied binary). */
export async function installLayoutOf(execPath: string, version: string): Promise<{ ok: true; layout: InstallLayout } | { ok: false; reason: string }> {
  const versionDir = dirname(execPath);
  const versionsDir = dirname(versionDir);
  const root = dirname(versionsDir);
  if (basename(execPath) !== EXECUTABLE || basename(versionDir) !== version || basename(versionsDir) !== 'versions') {
    return { ok: false, reason: `this agent runs from ${execPath}, not from <root>/versions/${version}/${EXECUTABLE} as install-agent.sh installs it` };
  }
  const current = join(root, 'current');
  const st = await lstat(current).catch(() => undefined);
  if (!st?.isSymbolicLink()) return { ok: false, reason: `${current} is not a symbolic link` };
  const target = await realpath(current).catch(() => undefined);
  if (target !== (await realpath(versionDir))) return { ok: false, reason: `${current} does not point at ${versionDir}, the version running` };
  return { ok: true, layout: { root, versionsDir, current } };
}

export function versionExecutable(layout: InstallLayout, version: string): string {
  return join(layout.versionsDir, version, EXECUTABLE);
}

/** Points `current` at versions/<version> with one rename (a relative link, like the installer's). */
export async function switchCurrent(layout: InstallLayout, version: string): Promise<void> {
  const tmp = join(layout.root, `.current.${process.pid}.${Date.now()}`);
  await symlink(join('versions', version), tmp);
  try {
    await rename(tmp, layout.current);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(layout.root);
}

/** The version `current` points at now. */
export async function currentVersion(layout: InstallLayout): Promise<string> {
  return basename(await readlink(layout.current));
}

/** Removes every version but these (the running one and the one to roll back to), and stale staging folders. */
export async function pruneVersions(layout: InstallLayout, keep: string[]): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(layout.versionsDir)) {
    if (keep.includes(name)) continue;
    await rm(join(layout.versionsDir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

export async function ensureDir(dir: string, mode: number): Promise<void> {
  await mkdir(dir, { recursive: true, mode });
}

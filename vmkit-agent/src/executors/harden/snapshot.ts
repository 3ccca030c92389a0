/** Reads what the planner needs from the system; nothing here writes. */
import { constants } from 'node:fs';
import { access, lstat, readFile, readdir } from 'node:fs/promises';
import { posix } from 'node:path';
import { globComponentToRegExp, hasGlobMagic, parseDirective, resolveIncludePattern, splitLines } from './sshd-config.ts';
import type { ConfigTree } from './sshd-config.ts';
import { HARDEN_HOME, HARDEN_SHELL, underRoot } from './types.ts';
import type { EffectiveConfig, FileStat, HardenPaths, SystemSnapshot } from './types.ts';

export async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export async function statOf(path: string): Promise<FileStat | null> {
  try {
    const s = await lstat(path);
    const kind = s.isSymbolicLink() ? 'symlink' : s.isDirectory() ? 'dir' : s.isFile() ? 'file' : s.isSocket() ? 'socket' : 'other';
    return { mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, kind };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw err;
  }
}

/** glob(3) over the file system: every component may hold wildcards; sorted by bytes. */
export async function expandGlob(pattern: string): Promise<string[]> {
  const parts = pattern.split('/').filter((p) => p !== '');
  let bases = ['/'];
  for (const part of parts) {
    const next: string[] = [];
    for (const base of bases) {
      if (!hasGlobMagic(part)) {
        next.push(posix.join(base, part));
        continue;
      }
      let names: string[];
      try {
        names = await readdir(base);
      } catch {
        continue;
      }
      const re = globComponentToRegExp(part);
      for (const n of names) if (re.test(n)) next.push(posix.join(base, n));
    }
    bases = next;
  }
  const existing: string[] = [];
  for (const p of bases) if ((await statOf(p)) !== null) existing.push(p);
  return existing.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** Reads sshd_config and every file it Includes, recursively, as sshd would. */
export async function readConfigTree(main: string, sshDir: string): Promise<{ tree: ConfigTree; stats: Map<string, FileStat> }> {
  const files = new Map<string, string>();
  const globs = new Map<string, string[]>();
  const stats = new Map<string, FileStat>();
  const visit = async (file: string, depth: number): Promise<void> => {
    if (files.has(file) || depth > 16) return;
    const content = await readText(file);
    if (content === null) return;
    files.set(file, content);
    const st = await statOf(file);
    if (st) stats.set(file, st);
    for (const line of splitLines(content)) {
      const d = parseDirective(line.text);
      if (d?.keyword !== 'include') continue;
      for (const arg of d.args) {
        const pattern = resolveIncludePattern(arg, sshDir);
        const targets = globs.get(pattern) ?? (await expandGlob(pattern));
        globs.set(pattern, targets);
        for (const t of targets) await visit(t, depth + 1);
      }
    }
  };
  await visit(main, 0);
  return { tree: { main, sshDir, files, globs }, stats };
}

async function executable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function takeSnapshot(paths: HardenPaths, effectiveKamal: EffectiveConfig | null): Promise<SystemSnapshot> {
  const { tree, stats } = await readConfigTree(paths.sshdConfig, paths.sshDir);
  const home = underRoot(paths.root, HARDEN_HOME);
  const sshDir = posix.join(home, '.ssh');
  const authorizedKeysPath = posix.join(sshDir, 'authorized_keys');
  const sshDirStat = await statOf(sshDir);
  const authorizedKeysStat = sshDirStat?.kind === 'dir' ? await statOf(authorizedKeysPath) : null;
  let daemonInstalled = false;
  for (const d of paths.dockerd) if (await executable(d)) daemonInstalled = true;
  const socketStat = await statOf(paths.dockerSocket);
  const moduliStat = await statOf(paths.moduli);
  const moduliContent = moduliStat?.kind === 'file' ? await readText(paths.moduli) : null;
  return {
    paths,
    passwd: await readText(paths.passwd),
    group: await readText(paths.group),
    shadow: await readText(paths.shadow).catch(() => null),
    sshd: tree,
    sshdStats: stats,
    kamal: {
      sshDir,
      sshDirStat,
      authorizedKeysPath,
      authorizedKeysStat,
      authorizedKeys: authorizedKeysStat?.kind === 'file' ? await readText(authorizedKeysPath) : null,
      homeStat: await statOf(home),
    },
    docker: { socketStat: socketStat?.kind === 'socket' ? socketStat : null, daemonInstalled },
    shellUsable: await executable(underRoot(paths.root, HARDEN_SHELL)),
    effectiveKamal,
    moduli: moduliStat && moduliContent !== null ? { content: moduliContent, stat: moduliStat } : null,
  };
}

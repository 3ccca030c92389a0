/**
 * Puts a machine back as a harden journal found it: accounts first (a created kamal
 * is deleted with the home useradd made, a changed one gets its shell, home, groups
 * and password field back; created groups go), then every file byte for byte with
 * its mode and owner, newest change first. Each part is idempotent, so a rollback
 * killed half-way is simply run again at the next start.
 */
import { execFile } from '../../child-process.ts';
import { chmod, chown, lstat, mkdir, readFile, rm } from 'node:fs/promises';
import { parseGroup, parsePasswd, shadowPassword } from './accounts.ts';
import { tail } from './exec.ts';
import type { ExecFn } from './exec.ts';
import { writeFileAtomic } from './files.ts';
import type { FileBackup, JournalBefore } from './journal.ts';
import { readText } from './snapshot.ts';
import type { HardenPaths } from './types.ts';

export interface RollbackReport {
  /** Paths put back (those that differed from the journal). */
  restored: string[];
  /** Accounts deleted or changed back, as `user kamal deleted`, `group docker deleted`. */
  accounts: string[];
  errors: string[];
}

/** `chpasswd -e` reads `user:field` on stdin, so a password hash never shows in `ps`. */
function chpasswdEncrypted(user: string, field: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('chpasswd', ['-e'], { timeout: 30_000, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' }, encoding: 'utf8' }, (err, _out, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
    child.stdin?.end(`${user}:${field}\n`);
  });
}

async function rollbackAccounts(before: NonNullable<JournalBefore['accounts']>, paths: HardenPaths, exec: ExecFn, report: RollbackReport, homeAbsentBefore: (home: string) => boolean): Promise<void> {
  const run = async (what: string, file: string, args: string[]): Promise<void> => {
    const r = await exec(file, args);
    if (r.code === 0) report.accounts.push(what);
    else report.errors.push(`${file} ${args.join(' ')}: ${tail(r.stderr) || `exit ${String(r.code)}`}`);
  };
  for (const u of before.users) {
    const users = parsePasswd(await readText(paths.passwd));
    const groups = parseGroup(await readText(paths.group));
    const now = users.find((x) => x.name === u.name);
    if (!now) continue;
    if (!u.existed) {
      // --remove only for a home useradd made: a home that was there before is the owner's.
      const made = homeAbsentBefore(now.home);
      const homeThere = (await lstat(now.home).catch(() => null)) !== null;
      await run(`user ${u.name} deleted`, 'userdel', [...(made && homeThere ? ['--remove'] : []), u.name]);
      continue;
    }
    const args: string[] = [];
    if (u.shell !== undefined && now.shell !== u.shell) args.push('--shell', u.shell);
    if (u.home !== undefined && now.home !== u.home) args.push('--home', u.home, '--move-home');
    const primary = groups.find((g) => g.gid === now.gid)?.name;
    const supplementary = groups.filter((g) => g.members.includes(u.name) && g.name !== primary).map((g) => g.name);
    const wanted = u.groups ?? [];
    if ([...supplementary].sort().join(',') !== [...wanted].sort().join(',')) args.push('--groups', wanted.join(','));
    if (args.length > 0) await run(`user ${u.name} changed back (${args.filter((a) => a.startsWith('--')).join(' ')})`, 'usermod', [...args, u.name]);
    if (u.password !== undefined && u.password !== null) {
      const field = shadowPassword(await readText(paths.shadow).catch(() => null), u.name);
      if (field !== null && field !== u.password) {
        const r = await chpasswdEncrypted(u.name, u.password);
        if (r.code === 0) report.accounts.push(`user ${u.name} password field restored`);
        else report.errors.push(`chpasswd -e for ${u.name}: ${tail(r.stderr)}`);
      }
    }
  }
  // Reverse order: the user's own group before the groups it was put in.
  for (const g of [...before.groups].reverse()) {
    if (g.existed) continue;
    const groups = parseGroup(await readText(paths.group));
    if (groups.some((x) => x.name === g.name)) await run(`group ${g.name} deleted`, 'groupdel', [g.name]);
  }
}

/** Whether the path is already as the backup says (then it is left alone). */
async function matches(b: FileBackup): Promise<boolean> {
  const s = await lstat(b.path).catch(() => null);
  if (b.kind === 'absent') return s === null;
  if (!s || (s.mode & 0o7777) !== b.mode || s.uid !== b.uid || s.gid !== b.gid) return false;
  if (b.kind === 'dir') return s.isDirectory();
  if (b.kind === 'socket') return s.isSocket();
  return s.isFile() && (await readFile(b.path)).equals(Buffer.from(b.content ?? '', 'base64'));
}

async function restoreFile(b: FileBackup): Promise<void> {
  if (b.kind === 'absent') {
    // Did not exist before the run: whatever is there now (a file, or a directory the
    // run made and filled) goes. rm never follows symbolic links.
    await rm(b.path, { recursive: true, force: true });
    return;
  }
  if (b.kind === 'file') {
    await writeFileAtomic(b.path, Buffer.from(b.content ?? '', 'base64'), b.mode, b.uid, b.gid);
    return;
  }
  const s = await lstat(b.path).catch(() => null);
  if (s?.isSymbolicLink()) throw new Error('is now a symbolic link; not following it');
  if (b.kind === 'dir' && !s) await mkdir(b.path, { recursive: true });
  if (b.kind === 'socket' && !s) throw new Error('the socket is gone (its daemon recreates it)');
  await chown(b.path, b.uid, b.gid);
  await chmod(b.path, b.mode);
}

/** Undoes everything the journal covers; reports what it did and what it could not. */
export async function rollback(before: JournalBefore, paths: HardenPaths, exec: ExecFn): Promise<RollbackReport> {
  const report: RollbackReport = { restored: [], accounts: [], errors: [] };
  const absentBefore = new Set(before.files.filter((f) => f.kind === 'absent').map((f) => f.path));
  if (before.accounts) {
    await rollbackAccounts(before.accounts, paths, exec, report, (home) => absentBefore.has(home)).catch((err: unknown) => {
      report.errors.push(`accounts: ${(err as Error).message}`);
    });
  }
  for (const b of [...before.files].reverse()) {
    try {
      if (await matches(b)) continue;
      await restoreFile(b);
      report.restored.push(b.path);
    } catch (err) {
      report.errors.push(`${b.path}: ${(err as Error).message}`);
    }
  }
  return report;
}

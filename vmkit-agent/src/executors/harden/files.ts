/**
 * File edits that can be undone: every path is backed up (exact bytes, mode, owner,
 * or its absence) before the first change, and restored byte-identical on failure.
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, open, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { posix } from 'node:path';

interface Backup {
  path: string;
  kind: 'file' | 'dir' | 'socket' | 'absent';
  content?: Buffer;
  mode: number;
  uid: number;
  gid: number;
}

/** Writes through a temporary file and a rename, so sshd never reads half a file. */
export async function writeFileAtomic(path: string, content: Buffer | string, mode: number, uid: number, gid: number): Promise<void> {
  const tmp = posix.join(posix.dirname(path), `.${posix.basename(path)}.vmkit-${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(content);
    await fh.chmod(mode); // the umask may have trimmed the mode given to open
    await fh.chown(uid, gid);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class FileJournal {
  readonly #backups: Backup[] = [];
  readonly #seen = new Set<string>();

  /** Records a path's state before its first change; later calls for it do nothing. */
  async backup(path: string): Promise<void> {
    if (this.#seen.has(path)) return;
    this.#seen.add(path);
    let s;
    try {
      s = await lstat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.#backups.push({ path, kind: 'absent', mode: 0, uid: 0, gid: 0 });
      return;
    }
    const base = { path, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid };
    if (s.isFile()) this.#backups.push({ ...base, kind: 'file', content: await readFile(path) });
    else if (s.isDirectory()) this.#backups.push({ ...base, kind: 'dir' });
    else if (s.isSocket()) this.#backups.push({ ...base, kind: 'socket' });
    else throw new Error(`${path} is neither a file, a directory nor a socket; refusing to change it`);
  }

  get paths(): string[] {
    return this.#backups.map((b) => b.path);
  }

  /** Puts every path back as it was, newest change first. Returns the paths restored. */
  async restore(): Promise<{ restored: string[]; errors: string[] }> {
    const restored: string[] = [];
    const errors: string[] = [];
    for (const b of [...this.#backups].reverse()) {
      try {
        if (b.kind === 'absent') {
          const s = await lstat(b.path).catch(() => null);
          if (s?.isDirectory()) await rmdir(b.path);
          else if (s) await rm(b.path);
        } else if (b.kind === 'file') {
          await writeFileAtomic(b.path, b.content ?? Buffer.alloc(0), b.mode, b.uid, b.gid);
        } else {
          if (b.kind === 'dir') await mkdir(b.path, { recursive: true });
          await chown(b.path, b.uid, b.gid);
          await chmod(b.path, b.mode);
        }
        restored.push(b.path);
      } catch (err) {
        errors.push(`${b.path}: ${(err as Error).message}`);
      }
    }
    return { restored, errors };
  }
}

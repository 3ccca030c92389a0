/** Atomic file writes for the harden steps and their rollback (journal.ts, rollback.ts). */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { posix } from 'node:path';

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
